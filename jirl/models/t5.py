"""A T5 encoder-decoder (v1.1 / Flan-T5 layout, and the original T5's) as a Flax NNX module.

logits_BTV = model(encoder_tokens_BS, decoder_tokens_BT)

RMS norms without bias, no attention scaling, a relative position bias (per head, from T5's
distance buckets; bidirectional in the encoder, causal in the decoder, none in cross-attention)
added to the attention scores of every layer, gated-GELU (v1.1) or ReLU (original) MLPs. The
embedding table is shared by encoder, decoder and (tied) output; a tied output scales the decoder
state by D^-1/2 first, as T5 does. Layer parameters are stacked [L, ...] like the decoder-only
transformer's, under `encoder` and `decoder`, with logical axis names for sharding.

Packed rows: `segment_ids`/`encoder_segment_ids` say which example each position belongs to (0 is
padding); decoder position t attends to encoder positions of its own segment only.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jirl.models import layers
from jirl.models.blocks import causal_context, norm, project_outputs
from jirl.models.config import ModelConfig
from jirl.models.stack import LayerSpecs, StackedLayers, param, run_layers


def encoder_layer_specs(cfg: ModelConfig) -> LayerSpecs:
    """name -> (per-layer shape, logical axes, init std; None: ones) of an encoder layer."""
    d, h, k, hd, f = cfg.embed_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.mlp_dim
    specs = {
        "attn_norm": ((d,), ("embed",), None),
        "wq": ((d, h, hd), ("embed", "heads", "kv"), (d * hd) ** -0.5),
        "wk": ((d, k, hd), ("embed", "heads", "kv"), d**-0.5),
        "wv": ((d, k, hd), ("embed", "heads", "kv"), d**-0.5),
        "wo": ((h, hd, d), ("heads", "kv", "embed"), (h * hd) ** -0.5),
        "mlp_norm": ((d,), ("embed",), None),
    }
    if cfg.gated_mlp:
        specs["w_gate"] = ((d, f), ("embed", "mlp"), d**-0.5)
    specs["w_up"] = ((d, f), ("embed", "mlp"), d**-0.5)
    specs["w_down"] = ((f, d), ("mlp", "embed"), f**-0.5)
    return specs


def decoder_layer_specs(cfg: ModelConfig) -> LayerSpecs:
    """An encoder layer's parameters plus cross-attention: cross_norm, cq, ck, cv, co."""
    d, h, k, hd = cfg.embed_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    specs = encoder_layer_specs(cfg)
    specs.update(
        {
            "cross_norm": ((d,), ("embed",), None),
            "wcq": ((d, h, hd), ("embed", "heads", "kv"), (d * hd) ** -0.5),
            "wck": ((d, k, hd), ("embed", "heads", "kv"), d**-0.5),
            "wcv": ((d, k, hd), ("embed", "heads", "kv"), d**-0.5),
            "wco": ((h, hd, d), ("heads", "kv", "embed"), (h * hd) ** -0.5),
        }
    )
    return specs


def position_bias(
    table_NH: jax.Array, q_pos_BT: jax.Array, kv_pos_BS: jax.Array, bidirectional: bool, cfg: ModelConfig
) -> jax.Array:
    """bias[b, h, t, s] = table[bucket(kv_pos[b, s] - q_pos[b, t]), h] (float32)."""
    relative_BTS = kv_pos_BS[:, None, :] - q_pos_BT[:, :, None]
    bucket_BTS = layers.relative_bucket(
        relative_BTS, bidirectional, cfg.relative_buckets, cfg.relative_max_distance
    )
    return jnp.take(table_NH.astype(jnp.float32), bucket_BTS, axis=0).transpose(0, 3, 1, 2)


def _attend(p, h_BTD, kv_BSD, mask_BTS, bias_BHTS, prefix: str, cache_kv=None):
    """Attention of h over kv (T5: no scaling); prefix "w" for self-, "wc" for cross-attention.

    `cache_kv`: precomputed (k, v) [B, S, K, D] to attend to instead of projecting kv_BSD.
    """
    dt, kind = h_BTD.dtype, prefix[1:]  # kind: "" for self-, "c" for cross-attention heads
    q = layers.project_heads(h_BTD, p, kind + "q")
    if cache_kv is None:
        k, v = layers.project_heads(kv_BSD, p, kind + "k"), layers.project_heads(kv_BSD, p, kind + "v")
    else:
        k, v = cache_kv
    out = layers.dot_product_attention(q, k.astype(dt), v.astype(dt), mask_BTS, 1.0, 0.0, bias_BHTS)
    return jnp.einsum("bthk,hkd->btd", out, p[prefix + "o"].astype(dt))


def _mlp_residual(p, x_BTD, cfg):
    return x_BTD + layers.mlp(norm(x_BTD, p, "mlp_norm", cfg), p, cfg.activation)


def init_cache(cfg: ModelConfig, batch_size: int, length: int, encoder_length: int) -> dict[str, jax.Array]:
    """An empty decoder cache: self-attention k/v [L, B, S, K, D] and segments [B, S], cross-attention
    k/v [L, B, S_enc, K, D] and encoder segments [B, S_enc] (filled by `EncoderDecoder.start_cache`)."""
    dtype = jnp.dtype(cfg.dtype)
    self_shape = (cfg.num_layers, batch_size, length, cfg.num_kv_heads, cfg.head_dim)
    cross_shape = (cfg.num_layers, batch_size, encoder_length, cfg.num_kv_heads, cfg.head_dim)
    return {
        "k": jnp.zeros(self_shape, dtype),
        "v": jnp.zeros(self_shape, dtype),
        "segment_ids": jnp.zeros((batch_size, length), jnp.int32),
        "index": jnp.zeros((), jnp.int32),
        "cross_k": jnp.zeros(cross_shape, dtype),
        "cross_v": jnp.zeros(cross_shape, dtype),
        "encoder_segment_ids": jnp.zeros((batch_size, encoder_length), jnp.int32),
    }


class EncoderDecoder(nnx.Module):
    """logits_BTV = model(encoder_tokens_BS, decoder_tokens_BT, ...); with cache=, also the new cache."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        if not cfg.is_encoder_decoder:
            raise ValueError("EncoderDecoder needs model.encoder_layers > 0; use Transformer for a decoder.")
        self.config = cfg
        d, h = cfg.embed_dim, cfg.num_heads
        self.embed = param(rngs.params(), (cfg.vocab_size, d), ("vocab", "embed"), 1.0)
        self.encoder_bias = param(rngs.params(), (cfg.relative_buckets, h), (None, "heads"), d**-0.5)
        self.encoder = StackedLayers(encoder_layer_specs(cfg), cfg.encoder_layers, rngs=rngs)
        self.encoder_norm = param(rngs.params(), (d,), ("embed",), None)
        self.decoder_bias = param(rngs.params(), (cfg.relative_buckets, h), (None, "heads"), d**-0.5)
        self.decoder = StackedLayers(decoder_layer_specs(cfg), cfg.num_layers, rngs=rngs)
        self.final_norm = param(rngs.params(), (d,), ("embed",), None)
        if not cfg.tie_embeddings:
            self.unembed = param(rngs.params(), (d, cfg.vocab_size), ("embed", "vocab"), d**-0.5)

    def encode(
        self,
        tokens_BS: jax.Array,
        *,
        positions: jax.Array | None = None,
        segment_ids: jax.Array | None = None,
    ) -> jax.Array:
        """The encoder's final states [B, S, D]: bidirectional attention within each segment."""
        cfg = self.config
        dt = jnp.dtype(cfg.dtype)
        b, s = tokens_BS.shape
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(s, dtype=jnp.int32), (b, s))
        if segment_ids is None:
            segment_ids = jnp.ones((b, s), jnp.int32)
        mask_BSS = segment_ids[:, None, :] == segment_ids[:, :, None]
        bias = position_bias(self.encoder_bias[...], positions, positions, True, cfg)
        x = layers.constrain(jnp.take(self.embed[...], tokens_BS, axis=0).astype(dt), layers.ACTIVATIONS_BTD)

        def body(x, layer):
            p, _ = layer
            x = x + _attend(
                p, norm(x, p, "attn_norm", cfg), norm(x, p, "attn_norm", cfg), mask_BSS, bias, "w"
            )
            return layers.constrain(_mlp_residual(p, x, cfg), layers.ACTIVATIONS_BTD), None

        x, _ = run_layers(body, x, self.encoder.stacked(), remat=cfg.remat, scan=cfg.scans_layers())
        return norm(x, {"encoder_norm": self.encoder_norm[...]}, "encoder_norm", cfg)

    def start_cache(
        self, encoded_BSD: jax.Array, encoder_segment_ids: jax.Array, length: int
    ) -> dict[str, jax.Array]:
        """A decoding cache of `length` decoder slots holding the cross-attention k/v of `encoded`."""
        cfg = self.config
        b, s, _ = encoded_BSD.shape
        cache = init_cache(cfg, b, length, s)
        stacked = self.decoder.stacked()
        k = jax.vmap(lambda p: layers.project_heads(encoded_BSD, p, "ck"))({"wck": stacked["wck"]})
        v = jax.vmap(lambda p: layers.project_heads(encoded_BSD, p, "cv"))({"wcv": stacked["wcv"]})
        cache.update(
            cross_k=k.astype(cache["cross_k"].dtype),
            cross_v=v.astype(cache["cross_v"].dtype),
            encoder_segment_ids=encoder_segment_ids.astype(jnp.int32),
        )
        return cache

    def output_projection(self) -> layers.OutputProjection:
        """The output layer: the unembedding [D, V], or the shared embedding table [V, D] when tied."""
        if self.config.tie_embeddings:
            return layers.OutputProjection(self.embed[...], vocab_axis=0)
        return layers.OutputProjection(self.unembed[...], vocab_axis=1)

    def decode(self, tokens_BT: jax.Array, encoded_BSD: jax.Array | None = None, **kwargs: Any):
        """Decoder logits [B, T, V] given the encoder states or, with cache=, a cache from `start_cache`
        (then also the new cache); keyword arguments as `decode_hidden`."""
        out = self.decode_hidden(tokens_BT, encoded_BSD, **kwargs)
        return project_outputs(out, self.output_projection(), kwargs.get("cache") is not None)

    def decode_hidden(
        self,
        tokens_BT: jax.Array,
        encoded_BSD: jax.Array | None = None,
        *,
        encoder_segment_ids: jax.Array | None = None,
        positions: jax.Array | None = None,
        segment_ids: jax.Array | None = None,
        cache: dict[str, Any] | None = None,
    ):
        """The decoder's output-layer input h_BTD (the final norm, and with tied embeddings the D^-1/2
        scaling T5 applies before the shared table); with cache=, (h_BTD, the new cache)."""
        cfg = self.config
        dt = jnp.dtype(cfg.dtype)
        b, t = tokens_BT.shape
        ctx = causal_context(b, t, positions, segment_ids, cache)
        start, positions, segment_ids = ctx.start, ctx.positions_BT, ctx.segment_ids_BT
        mask_BTS = ctx.mask_BTS
        if cache is None:
            if encoder_segment_ids is None:
                encoder_segment_ids = jnp.ones(encoded_BSD.shape[:2], jnp.int32)
            kv_positions_BS = positions
            kv_caches = None
        else:
            kv_positions_BS = ctx.kv_slots_BS  # a cache is filled from slot 0 with positions 0, 1, ...
            encoder_segment_ids = cache["encoder_segment_ids"]
            kv_caches = (cache["k"], cache["v"], cache["cross_k"], cache["cross_v"])
        cross_mask_BTS = encoder_segment_ids[:, None, :] == segment_ids[:, :, None]
        bias = position_bias(self.decoder_bias[...], positions, kv_positions_BS, False, cfg)
        x = layers.constrain(jnp.take(self.embed[...], tokens_BT, axis=0).astype(dt), layers.ACTIVATIONS_BTD)

        def body(x, layer):
            p, kv = layer
            h = norm(x, p, "attn_norm", cfg)
            if kv is None:
                x = x + _attend(p, h, h, mask_BTS, bias, "w")
                cross_kv = None
            else:
                k_cache, v_cache, cross_k, cross_v = kv
                new_k, new_v = layers.project_heads(h, p, "k"), layers.project_heads(h, p, "v")
                k, v = layers.write_kv(k_cache, v_cache, new_k, new_v, start)
                x = x + _attend(p, h, None, mask_BTS, bias, "w", (k, v))
                kv, cross_kv = (k, v, cross_k, cross_v), (cross_k, cross_v)
            x = x + _attend(
                p, norm(x, p, "cross_norm", cfg), encoded_BSD, cross_mask_BTS, None, "wc", cross_kv
            )
            return layers.constrain(_mlp_residual(p, x, cfg), layers.ACTIVATIONS_BTD), kv

        x, new_kv = run_layers(
            body, x, self.decoder.stacked(), kv_caches, remat=cfg.remat, scan=cfg.scans_layers()
        )
        x = norm(x, {"final_norm": self.final_norm[...]}, "final_norm", cfg)
        if cfg.tie_embeddings:
            x = x * jnp.asarray(cfg.embed_dim**-0.5, dt)
        if cache is None:
            return x
        return x, dict(cache, k=new_kv[0], v=new_kv[1], segment_ids=ctx.kv_segments_BS, index=start + t)

    def __call__(self, encoder_tokens_BS: jax.Array, decoder_tokens_BT: jax.Array, **kwargs: Any):
        """logits_BTV of the decoder over `decoder_tokens` given `encoder_tokens` (teacher forcing);
        keyword arguments as `hidden`."""
        h_BTD = self.hidden(encoder_tokens_BS, decoder_tokens_BT, **kwargs)
        return project_outputs(h_BTD, self.output_projection(), cached=False)

    def hidden(
        self,
        encoder_tokens_BS: jax.Array,
        decoder_tokens_BT: jax.Array,
        *,
        encoder_positions: jax.Array | None = None,
        encoder_segment_ids: jax.Array | None = None,
        positions: jax.Array | None = None,
        segment_ids: jax.Array | None = None,
    ) -> jax.Array:
        """The decoder's output-layer input h_BTD over `decoder_tokens` given `encoder_tokens`."""
        encoded = self.encode(encoder_tokens_BS, positions=encoder_positions, segment_ids=encoder_segment_ids)
        return self.decode_hidden(
            decoder_tokens_BT,
            encoded,
            encoder_segment_ids=encoder_segment_ids,
            positions=positions,
            segment_ids=segment_ids,
        )
