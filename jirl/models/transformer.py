"""A Llama-style decoder-only transformer as a Flax NNX module.

Per-layer parameters are stacked on a leading `layers` axis (`stack.StackedLayers`), so the same
parameters serve a `lax.scan` over layers (fast compiles) or an unrolled loop; every parameter
carries logical axis names (`vocab`, `embed`, `heads`, `kv`, `mlp`, `layers`) for sharding.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jirl.models import blocked_attention, layers
from jirl.models.blocks import causal_context, norm, project_outputs
from jirl.models.config import ModelConfig
from jirl.models.stack import LayerSpecs, StackedLayers, param, run_layers


def layer_specs(cfg: ModelConfig) -> LayerSpecs:
    """name -> (per-layer shape, logical axes, init std: None for ones, 0 for zeros).

    Bias and extra norm parameters exist only when the config asks for them.
    """
    d, h, k, hd, f = cfg.embed_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.mlp_dim
    norm_init = 0.0 if cfg.norm == "rms_plus_one" else None  # (1 + w) starts at w = 0
    # Insertion order is the order of the init keys: the Llama layout keeps its original order, so a
    # seed gives the same initial parameters as before the other families existed.
    specs = {"attn_norm": ((d,), ("embed",), norm_init)}
    if cfg.post_norms:
        specs["post_attn_norm"] = ((d,), ("embed",), norm_init)
    specs.update(
        {
            "wq": ((d, h, hd), ("embed", "heads", "kv"), d**-0.5),
            "wk": ((d, k, hd), ("embed", "heads", "kv"), d**-0.5),
            "wv": ((d, k, hd), ("embed", "heads", "kv"), d**-0.5),
            "wo": ((h, hd, d), ("heads", "kv", "embed"), (h * hd) ** -0.5),
            "mlp_norm": ((d,), ("embed",), norm_init),
        }
    )
    if cfg.post_norms:
        specs["post_mlp_norm"] = ((d,), ("embed",), norm_init)
    if cfg.gated_mlp:
        specs["w_gate"] = ((d, f), ("embed", "mlp"), d**-0.5)
    specs["w_up"] = ((d, f), ("embed", "mlp"), d**-0.5)
    specs["w_down"] = ((f, d), ("mlp", "embed"), f**-0.5)
    if cfg.norm == "layer":
        norms = [n for n in ("attn_norm", "post_attn_norm", "mlp_norm", "post_mlp_norm") if n in specs]
        specs.update({name + "_bias": ((d,), ("embed",), 0.0) for name in norms})
    if cfg.qkv_bias:
        specs["bq"] = ((h, hd), ("heads", "kv"), 0.0)
        specs["bk"] = ((k, hd), ("heads", "kv"), 0.0)
        specs["bv"] = ((k, hd), ("heads", "kv"), 0.0)
    if cfg.out_bias:
        specs["bo"] = ((d,), ("embed",), 0.0)
    if cfg.mlp_bias:
        specs["b_up"] = ((f,), ("mlp",), 0.0)
        specs["b_down"] = ((d,), ("embed",), 0.0)
        if cfg.gated_mlp:
            specs["b_gate"] = ((f,), ("mlp",), 0.0)
    if cfg.qk_norm:
        specs["q_norm"] = ((hd,), ("kv",), norm_init)
        specs["k_norm"] = ((hd,), ("kv",), norm_init)
    return specs


def rope_inv_freq(cfg: ModelConfig):
    """RoPE inverse frequencies [head_dim / 2] when scaled (Llama 3, linear), else None (theta^(-2i/D))."""
    if cfg.rope_scaling == "linear":
        return layers.default_inv_freq(cfg.head_dim, cfg.rope_theta) / np.float32(cfg.rope_factor)
    if cfg.rope_scaling == "llama3":
        return layers.llama3_inv_freq(
            cfg.head_dim,
            cfg.rope_theta,
            cfg.rope_factor,
            cfg.rope_low_freq_factor,
            cfg.rope_high_freq_factor,
            cfg.rope_original_max_len,
        )
    return None


def self_attention(
    q_BTHD: jax.Array,
    k_BSKD: jax.Array,
    v_BSKD: jax.Array,
    mask_BTS: jax.Array,
    cfg: ModelConfig,
    cached: bool,
) -> jax.Array:
    """Causal self-attention: in blocks (`blocked_attention`, never holding [B, H, T, T]) over the
    sequence's own slots when the config's `attention_form` is "blocked", the sequence holds two
    blocks and there is no soft-cap; else the dense form. `cached`: k and v are a KV cache's, [B, K, S, D]."""
    scale = cfg.query_scale**-0.5 if cfg.query_scale > 0 else q_BTHD.shape[-1] ** -0.5
    blocked = not cached and cfg.attn_softcap <= 0 and cfg.attention_form() == "blocked"
    block = blocked_attention.block_size(q_BTHD.shape[1]) if blocked else 0
    if block:
        return blocked_attention.causal_attention(q_BTHD, k_BSKD, v_BSKD, mask_BTS, scale, block)
    return layers.dot_product_attention(
        q_BTHD, k_BSKD, v_BSKD, mask_BTS, scale, cfg.attn_softcap, heads_major=cached
    )


def decoder_block(
    p: dict[str, jax.Array],
    x_BTD: jax.Array,
    rope: layers.RopeTables | None,
    mask_BTS: jax.Array,
    cfg: ModelConfig,
    kv_cache=None,
    cache_index=None,
    adapters: dict[str, layers.Adapter] | None = None,
):
    """x + attn(norm x), then + mlp(norm x). With a cache, new k/v are written at cache_index.

    `adapters`: this layer's LoRA adapters by weight name (wq, ..., w_down), added to those projections.

    `rope`: the rotary tables of the positions (`layers.rope_tables`), None without RoPE.

    With post_norms (Gemma 2/3): x + norm(attn(norm x)), then x + norm(mlp(norm x)).
    With qk_norm (Qwen3, Gemma 3): q and k normed per head, over head_dim, before RoPE.
    """
    dt = x_BTD.dtype
    h = norm(x_BTD, p, "attn_norm", cfg)
    q, k, v = (layers.project_heads(h, p, name, adapters) for name in ("q", "k", "v"))
    if cfg.qk_norm:  # Qwen3, Gemma 3: each head normed over head_dim, before RoPE
        q, k = norm(q, p, "q_norm", cfg), norm(k, p, "k_norm", cfg)
    if rope is not None:
        q, k = layers.apply_rope(q, rope), layers.apply_rope(k, rope)
    if kv_cache is not None:
        k, v = layers.write_kv(*kv_cache, k, v, cache_index, heads_major=True)
        kv_cache = (k, v)
    attn = self_attention(q, k.astype(dt), v.astype(dt), mask_BTS, cfg, cached=kv_cache is not None)
    out = layers.dense(attn, p["wo"].astype(dt), contract=2, adapter=(adapters or {}).get("wo"))
    if "bo" in p:
        out = out + p["bo"].astype(dt)
    if cfg.post_norms:
        out = norm(out, p, "post_attn_norm", cfg)
    x_BTD = x_BTD + out
    h = norm(x_BTD, p, "mlp_norm", cfg)
    out = layers.mlp(h, p, cfg.activation, adapters)
    if cfg.post_norms:
        out = norm(out, p, "post_mlp_norm", cfg)
    return x_BTD + out, kv_cache


def init_cache(cfg: ModelConfig, batch_size: int, length: int) -> dict[str, jax.Array]:
    """An empty KV cache of `length` slots: k/v [L, B, K, S, D] (heads before slots, the layout the
    attention products read), segment ids [B, S], write index."""
    shape = (cfg.num_layers, batch_size, cfg.num_kv_heads, length, cfg.head_dim)
    dtype = jnp.dtype(cfg.dtype)
    return {
        "k": jnp.zeros(shape, dtype),
        "v": jnp.zeros(shape, dtype),
        "segment_ids": jnp.zeros((batch_size, length), jnp.int32),
        "index": jnp.zeros((), jnp.int32),
    }


class Transformer(nnx.Module):
    """logits_BTV = model(tokens_BT, positions=..., segment_ids=...); with cache=, also the new cache.

    `model.hidden(...)` (same arguments and cache convention) stops before the output layer:
    logits = `layers.project(h_BTD, model.output_projection())`.
    """

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.config = cfg
        # Untied: unit-variance embeddings, so token identity is not drowned by the residual branches
        # at init. Tied: d^-1/2, so that the initial logits have unit scale.
        embed_std = cfg.embed_dim**-0.5 if cfg.tie_embeddings else 1.0
        self.embed = param(rngs.params(), (cfg.vocab_size, cfg.embed_dim), ("vocab", "embed"), embed_std)
        if cfg.position_embedding == "learned":
            self.pos_embed = param(rngs.params(), (cfg.max_len, cfg.embed_dim), (None, "embed"), 0.02)
        self.layers = StackedLayers(layer_specs(cfg), cfg.num_layers, rngs=rngs)
        norm_init = 0.0 if cfg.norm == "rms_plus_one" else None
        self.final_norm = param(rngs.params(), (cfg.embed_dim,), ("embed",), norm_init)
        if cfg.norm == "layer":
            self.final_norm_bias = param(rngs.params(), (cfg.embed_dim,), ("embed",), 0.0)
        if not cfg.tie_embeddings:
            self.unembed = param(
                rngs.params(), (cfg.embed_dim, cfg.vocab_size), ("embed", "vocab"), cfg.embed_dim**-0.5
            )

    def __call__(self, tokens_BT: jax.Array, **kwargs: Any):
        """logits_BTV (keyword arguments as `hidden`); with cache=, (logits_BTV, the new cache)."""
        cached = kwargs.get("cache") is not None
        return project_outputs(self.hidden(tokens_BT, **kwargs), self.output_projection(), cached)

    def output_projection(self) -> layers.OutputProjection:
        """The output layer: the unembedding [D, V] or the tied embedding table [V, D]; Gemma 2's soft-cap."""
        if self.config.tie_embeddings:
            return layers.OutputProjection(self.embed[...], vocab_axis=0, softcap=self.config.final_softcap)
        return layers.OutputProjection(self.unembed[...], vocab_axis=1, softcap=self.config.final_softcap)

    def hidden(
        self,
        tokens_BT: jax.Array,
        *,
        positions: jax.Array | None = None,
        segment_ids: jax.Array | None = None,
        cache: dict[str, Any] | None = None,
        layer_params: dict[str, list[jax.Array]] | None = None,
        adapters: layers.Adapters | None = None,
    ):
        """The final hidden states h_BTD (after the final norm); with cache=, (h_BTD, the new cache).

        layer_params: the layers' parameters cut per layer (`self.layers.per_layer()`, made once by a
        decoding loop), used instead of slicing the stacked ones at every call; with a per-layer
        cache (k/v as lists, `unstack_cache`) the new cache is per layer too. Unrolled layers only.

        adapters: LoRA adapters (`layers.Adapters`, stacked [L, ...] like the layers), computed
        factored beside the frozen projections they adapt (`jirl.models.lora`)."""
        cfg = self.config
        dt = jnp.dtype(cfg.dtype)
        b, t = tokens_BT.shape
        ctx = causal_context(b, t, positions, segment_ids, cache)
        start, q_slots_BT, positions, mask_BTS = ctx.start, ctx.q_slots_BT, ctx.positions_BT, ctx.mask_BTS
        kv_slots_BS, kv_segments_BS = ctx.kv_slots_BS, ctx.kv_segments_BS
        kv_caches = None if cache is None else (cache["k"], cache["v"])

        # Per layer: whether it attends globally or within the sliding window (Gemma 2/3).
        is_global_L = jnp.asarray([cfg.is_global_layer(i) for i in range(cfg.num_layers)])
        if cfg.sliding_window > 0:
            in_window_BTS = kv_slots_BS[:, None, :] > q_slots_BT[:, :, None] - cfg.sliding_window
            local_mask_BTS = mask_BTS & in_window_BTS
        embed_VD = self.embed[...]
        x = jnp.take(embed_VD, tokens_BT, axis=0).astype(dt)
        if cfg.embed_scale:
            x = x * jnp.asarray(cfg.embed_dim**0.5, dt)
        if cfg.position_embedding == "learned":
            x = x + jnp.take(self.pos_embed[...], positions, axis=0).astype(dt)
        x = layers.constrain(x, layers.ACTIVATIONS_BTD)
        rope = local_rope = None
        if cfg.position_embedding == "rope":
            rope = layers.rope_tables(positions, cfg.head_dim, cfg.rope_theta, rope_inv_freq(cfg))
            if cfg.sliding_window > 0 and cfg.rope_local_theta > 0:  # Gemma 3: the local layers' own RoPE
                local_freq = layers.default_inv_freq(cfg.head_dim, cfg.rope_local_theta)
                local_rope = layers.rope_tables(positions, cfg.head_dim, cfg.rope_local_theta, local_freq)

        def body(x, layer):
            params, (kv, is_global, lora_layer) = layer
            mask = mask_BTS if cfg.sliding_window <= 0 else jnp.where(is_global, mask_BTS, local_mask_BTS)
            layer_rope = rope
            if local_rope is not None:
                layer_rope = jax.tree.map(lambda g, loc: jnp.where(is_global, g, loc), rope, local_rope)
            lora = None if adapters is None else adapters.of_layer(lora_layer)
            x, kv = decoder_block(params, x, layer_rope, mask, cfg, kv, start, lora)
            return layers.constrain(x, layers.ACTIVATIONS_BTD), kv

        x, new_kv = run_layers(
            body,
            x,
            self.layers.stacked() if layer_params is None else layer_params,
            (kv_caches, is_global_L, None if adapters is None else adapters.per_layer_inputs(cfg.num_layers)),
            remat=cfg.remat,
            scan=cfg.scans_layers(),
        )

        final = {"final_norm": self.final_norm[...]}
        if cfg.norm == "layer":
            final["final_norm_bias"] = self.final_norm_bias[...]
        x = norm(x, final, "final_norm", cfg)
        if cache is None:
            return x
        return x, {"k": new_kv[0], "v": new_kv[1], "segment_ids": kv_segments_BS, "index": start + t}
