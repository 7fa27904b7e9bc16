"""A Llama-style decoder-only transformer as a Flax NNX module.

Per-layer parameters are stacked on a leading `layers` axis, so the same parameters serve a
`lax.scan` over layers (fast compiles) or an unrolled loop; every parameter carries logical
axis names (`vocab`, `embed`, `heads`, `kv`, `mlp`, `layers`) for sharding.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jirl.models import layers
from jirl.models.config import ModelConfig

_ACTIVATIONS_BTD = ("activation_batch", "activation_length", "activation_embed")
_ACTIVATIONS_BTV = ("activation_batch", "activation_length", "activation_vocab")

_REMAT_POLICIES = {
    "full": None,  # save nothing but the layer inputs
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def _param(key: jax.Array, shape: tuple[int, ...], axes: tuple[str, ...], std: float | None) -> nnx.Param:
    """A float32 parameter: normal(0, std) or ones when std is None, tagged with logical axes."""
    value = jnp.ones(shape, jnp.float32) if std is None else std * jax.random.normal(key, shape, jnp.float32)
    return nnx.Param(value, sharding_names=axes, eager_sharding=False)


def layer_specs(cfg: ModelConfig) -> dict[str, tuple[tuple[int, ...], tuple[str, ...], float | None]]:
    """name -> (per-layer shape, logical axes, init std or None for ones)."""
    d, h, k, hd, f = cfg.embed_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.mlp_dim
    return {
        "attn_norm": ((d,), ("embed",), None),
        "wq": ((d, h, hd), ("embed", "heads", "kv"), d**-0.5),
        "wk": ((d, k, hd), ("embed", "heads", "kv"), d**-0.5),
        "wv": ((d, k, hd), ("embed", "heads", "kv"), d**-0.5),
        "wo": ((h, hd, d), ("heads", "kv", "embed"), (h * hd) ** -0.5),
        "mlp_norm": ((d,), ("embed",), None),
        "w_gate": ((d, f), ("embed", "mlp"), d**-0.5),
        "w_up": ((d, f), ("embed", "mlp"), d**-0.5),
        "w_down": ((f, d), ("mlp", "embed"), f**-0.5),
    }


class DecoderLayers(nnx.Module):
    """All decoder layers' parameters, each stacked as [num_layers, ...]."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        for name, (shape, axes, std) in layer_specs(cfg).items():
            setattr(self, name, _param(rngs.params(), (cfg.num_layers, *shape), ("layers", *axes), std))

    def stacked(self) -> dict[str, jax.Array]:
        return {
            name: getattr(self, name)[...]
            for name in vars(self)
            if isinstance(getattr(self, name), nnx.Param)
        }


def decoder_block(
    p: dict[str, jax.Array],
    x_BTD: jax.Array,
    positions_BT: jax.Array,
    mask_BTS: jax.Array,
    cfg: ModelConfig,
    kv_cache=None,
    cache_index=None,
):
    """x + attn(norm x), then + mlp(norm x). With a cache, new k/v are written at cache_index."""
    dt = x_BTD.dtype
    h = layers.rms_norm(x_BTD, p["attn_norm"], cfg.norm_eps)
    q = jnp.einsum("btd,dhk->bthk", h, p["wq"].astype(dt))
    k = jnp.einsum("btd,dhk->bthk", h, p["wk"].astype(dt))
    v = jnp.einsum("btd,dhk->bthk", h, p["wv"].astype(dt))
    q = layers.apply_rope(q, positions_BT, cfg.rope_theta)
    k = layers.apply_rope(k, positions_BT, cfg.rope_theta)
    if kv_cache is not None:
        k_cache, v_cache = kv_cache
        start = (0, cache_index, 0, 0)
        k = jax.lax.dynamic_update_slice(k_cache, k.astype(k_cache.dtype), start)
        v = jax.lax.dynamic_update_slice(v_cache, v.astype(v_cache.dtype), start)
        kv_cache = (k, v)
    attn = layers.dot_product_attention(q, k.astype(dt), v.astype(dt), mask_BTS)
    x_BTD = x_BTD + jnp.einsum("bthk,hkd->btd", attn, p["wo"].astype(dt))
    h = layers.rms_norm(x_BTD, p["mlp_norm"], cfg.norm_eps)
    x_BTD = x_BTD + layers.swiglu(h, p["w_gate"].astype(dt), p["w_up"].astype(dt), p["w_down"].astype(dt))
    return x_BTD, kv_cache


def init_cache(cfg: ModelConfig, batch_size: int, length: int) -> dict[str, jax.Array]:
    """An empty KV cache of `length` slots: k/v [L, B, S, K, D], segment ids [B, S], write index."""
    shape = (cfg.num_layers, batch_size, length, cfg.num_kv_heads, cfg.head_dim)
    dtype = jnp.dtype(cfg.dtype)
    return {
        "k": jnp.zeros(shape, dtype),
        "v": jnp.zeros(shape, dtype),
        "segment_ids": jnp.zeros((batch_size, length), jnp.int32),
        "index": jnp.zeros((), jnp.int32),
    }


class Transformer(nnx.Module):
    """logits_BTV = model(tokens_BT, positions=..., segment_ids=...); with cache=, also the new cache."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.config = cfg
        # Untied: unit-variance embeddings, so token identity is not drowned by the residual branches
        # at init. Tied: d^-1/2, so that the initial logits have unit scale.
        embed_std = cfg.embed_dim**-0.5 if cfg.tie_embeddings else 1.0
        self.embed = _param(rngs.params(), (cfg.vocab_size, cfg.embed_dim), ("vocab", "embed"), embed_std)
        self.layers = DecoderLayers(cfg, rngs=rngs)
        self.final_norm = _param(rngs.params(), (cfg.embed_dim,), ("embed",), None)
        if not cfg.tie_embeddings:
            self.unembed = _param(
                rngs.params(), (cfg.embed_dim, cfg.vocab_size), ("embed", "vocab"), cfg.embed_dim**-0.5
            )

    def __call__(
        self,
        tokens_BT: jax.Array,
        *,
        positions: jax.Array | None = None,
        segment_ids: jax.Array | None = None,
        cache: dict[str, Any] | None = None,
    ):
        cfg = self.config
        dt = jnp.dtype(cfg.dtype)
        b, t = tokens_BT.shape
        start = jnp.zeros((), jnp.int32) if cache is None else cache["index"]
        q_slots_BT = jnp.broadcast_to(start + jnp.arange(t, dtype=jnp.int32), (b, t))
        if positions is None:
            positions = q_slots_BT
        if segment_ids is None:
            segment_ids = jnp.ones((b, t), jnp.int32)
        if cache is None:
            mask_BTS = layers.attention_mask(q_slots_BT, segment_ids, q_slots_BT, segment_ids)
            kv_caches = None
        else:
            kv_segments_BS = jax.lax.dynamic_update_slice(
                cache["segment_ids"], segment_ids.astype(jnp.int32), (0, start)
            )
            kv_slots_BS = jnp.broadcast_to(
                jnp.arange(kv_segments_BS.shape[1], dtype=jnp.int32), kv_segments_BS.shape
            )
            mask_BTS = layers.attention_mask(q_slots_BT, segment_ids, kv_slots_BS, kv_segments_BS)
            kv_caches = (cache["k"], cache["v"])

        embed_VD = self.embed[...]
        x = layers.constrain(jnp.take(embed_VD, tokens_BT, axis=0).astype(dt), _ACTIVATIONS_BTD)

        def body(x, layer):
            params, kv = layer
            x, kv = decoder_block(params, x, positions, mask_BTS, cfg, kv, start)
            return layers.constrain(x, _ACTIVATIONS_BTD), kv

        if cfg.remat != "none":
            body = jax.checkpoint(body, policy=_REMAT_POLICIES[cfg.remat], prevent_cse=not cfg.scan_layers)
        stacked = self.layers.stacked()
        if cfg.scan_layers:
            x, new_kv = jax.lax.scan(body, x, (stacked, kv_caches))
        else:
            outs = []
            for i in range(cfg.num_layers):
                layer = jax.tree.map(lambda a: a[i], (stacked, kv_caches))
                x, kv = body(x, layer)
                outs.append(kv)
            new_kv = None if cache is None else jax.tree.map(lambda *a: jnp.stack(a), *outs)

        x = layers.rms_norm(x, self.final_norm[...], cfg.norm_eps)
        unembed_DV = embed_VD.T if cfg.tie_embeddings else self.unembed[...]
        logits_BTV = layers.constrain(x @ unembed_DV.astype(dt), _ACTIVATIONS_BTV)
        if cache is None:
            return logits_BTV
        new_cache = {"k": new_kv[0], "v": new_kv[1], "segment_ids": kv_segments_BS, "index": start + t}
        return logits_BTV, new_cache
