"""What the decoder-only transformer and T5 share above the array level.

The config's norm, the slots and mask of a causal self-attention step over an optional KV cache,
and the logits of a model's `hidden` output.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jirl.models import layers
from jirl.models.config import ModelConfig


def norm(x_BTD: jax.Array, p: dict[str, jax.Array], name: str, cfg: ModelConfig) -> jax.Array:
    """The config's norm with parameters p[name] (and p[name + '_bias'] for LayerNorm).

    rms: rms_norm(x) * w;  rms_plus_one (Gemma): rms_norm(x) * (1 + w);  layer: layer_norm(x) * w + b.
    """
    if cfg.norm == "layer":
        return layers.layer_norm(x_BTD, p[name], p[name + "_bias"], cfg.norm_eps)
    scale = 1.0 + p[name] if cfg.norm == "rms_plus_one" else p[name]
    return layers.rms_norm(x_BTD, scale, cfg.norm_eps)


class CausalContext(NamedTuple):
    """What a (cached) causal self-attention step needs; see `causal_context`."""

    start: jax.Array  # the cache slot of the first new token (0 without a cache)
    q_slots_BT: jax.Array
    positions_BT: jax.Array
    segment_ids_BT: jax.Array
    kv_slots_BS: jax.Array
    kv_segments_BS: jax.Array
    mask_BTS: jax.Array


def causal_context(
    b: int, t: int, positions: jax.Array | None, segment_ids: jax.Array | None, cache: dict | None
) -> CausalContext:
    """Slots, defaults (positions = slots, one segment) and the causal same-segment mask of T new
    tokens, over themselves or, with a cache, over every cache slot (the new ones written in)."""
    start = jnp.zeros((), jnp.int32) if cache is None else cache["index"]
    q_slots_BT = jnp.broadcast_to(start + jnp.arange(t, dtype=jnp.int32), (b, t))
    positions = q_slots_BT if positions is None else positions
    segment_ids = jnp.ones((b, t), jnp.int32) if segment_ids is None else segment_ids
    if cache is None:
        kv_slots_BS, kv_segments_BS = q_slots_BT, segment_ids
    else:
        kv_segments_BS = jax.lax.dynamic_update_slice(
            cache["segment_ids"], segment_ids.astype(jnp.int32), (0, start)
        )
        slots_S = jnp.arange(kv_segments_BS.shape[1], dtype=jnp.int32)
        kv_slots_BS = jnp.broadcast_to(slots_S, kv_segments_BS.shape)
    mask_BTS = layers.attention_mask(q_slots_BT, segment_ids, kv_slots_BS, kv_segments_BS)
    return CausalContext(start, q_slots_BT, positions, segment_ids, kv_slots_BS, kv_segments_BS, mask_BTS)


def project_outputs(out: Any, projection: layers.OutputProjection, cached: bool):
    """A `hidden` method's output (h_BTD, or (h_BTD, new cache) when `cached`) with h projected to logits."""
    h_BTD, new_cache = out if cached else (out, None)
    logits_BTV = layers.constrain(layers.project(h_BTD, projection), layers.ACTIVATIONS_BTV)
    return (logits_BTV, new_cache) if cached else logits_BTV
