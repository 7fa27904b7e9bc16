"""Helpers shared by the objectives: batch checks, masked means, soft-Q quantities.

Notation (DESIGN.md): logits z_t are soft Q-values; Q_t = z_t[a_t], V_t = logsumexp(z_t),
c_t = m_{t+1} [seg_{t+1} == seg_t] (c_{T-1} = 0), V'_t = c_t V_{t+1}, r_t = Q_t - gamma V'_t.
"""

from __future__ import annotations

from typing import Mapping, NamedTuple

import jax
import jax.numpy as jnp

REQUIRED_KEYS = ("targets", "loss_mask")


def check_inputs(logits_BTV: jax.Array, batch: Mapping[str, jax.Array], *, name: str = "batch") -> None:
    """Static (trace-time) checks: required keys present and shapes consistent."""
    missing = [k for k in REQUIRED_KEYS if k not in batch]
    if missing:
        raise ValueError(
            f"{name} is missing key(s) {missing}; a loss needs {list(REQUIRED_KEYS)} "
            f"(optional: 'segment_ids'), got {sorted(batch)}."
        )
    if logits_BTV.ndim != 3:
        raise ValueError(f"logits must be [B, T, V], got shape {tuple(logits_BTV.shape)}.")
    for key in ("targets", "loss_mask", "segment_ids"):
        if key in batch and tuple(batch[key].shape) != tuple(logits_BTV.shape[:2]):
            raise ValueError(
                f"{name}['{key}'] has shape {tuple(batch[key].shape)} but the logits are "
                f"{tuple(logits_BTV.shape)}; it must be [B, T] = {tuple(logits_BTV.shape[:2])}."
            )


def masked_mean(x_BT: jax.Array, mask_BT: jax.Array) -> jax.Array:
    """sum(m x) / max(sum(m), 1), accumulated in float32; masked entries never leak NaN."""
    mask_BT = mask_BT.astype(jnp.float32)
    total = jnp.sum(jnp.where(mask_BT > 0, x_BT.astype(jnp.float32) * mask_BT, 0.0))
    return total / jnp.maximum(jnp.sum(mask_BT), 1.0)


def continuation_mask(loss_mask_BT: jax.Array, segment_ids_BT: jax.Array | None) -> jax.Array:
    """c_t = m_{t+1} * [seg_{t+1} == seg_t], with c_{T-1} = 0: is the next state a response state?"""
    next_mask_BT = jnp.pad(loss_mask_BT[:, 1:].astype(jnp.float32), ((0, 0), (0, 1)))
    if segment_ids_BT is None:
        return next_mask_BT
    same_segment_BT = jnp.pad(segment_ids_BT[:, 1:] == segment_ids_BT[:, :-1], ((0, 0), (0, 1)))
    return next_mask_BT * same_segment_BT.astype(jnp.float32)


class SoftQ(NamedTuple):
    """Per-position soft-Q quantities, all [B, T] float32 and finite (0 where m_t = 0)."""

    q: jax.Array  # Q_t = z_t[a_t]
    value: jax.Array  # V_t = logsumexp z_t
    next_value: jax.Array  # V'_t = c_t V_{t+1}
    correct: jax.Array  # argmax z_t == a_t
    mask: jax.Array  # m_t as float32


def soft_q(
    logits_BTV: jax.Array, batch: Mapping[str, jax.Array], *, stop_grad_next_value: bool = False
) -> SoftQ:
    """One pass over the logits: Q, V, V' (a shift of V) and argmax accuracy.

    Masked positions are replaced by zeros before any reduction, so huge or -inf logits
    there give neither NaN values nor NaN gradients.
    """
    mask_BT = batch["loss_mask"].astype(jnp.float32)
    logits_BTV = jnp.where(mask_BT[..., None] > 0, logits_BTV.astype(jnp.float32), 0.0)
    targets_BT = batch["targets"].astype(jnp.int32)
    value_BT = jax.nn.logsumexp(logits_BTV, axis=-1)
    q_BT = jnp.take_along_axis(logits_BTV, targets_BT[..., None], axis=-1)[..., 0]
    correct_BT = (jnp.argmax(logits_BTV, axis=-1) == targets_BT).astype(jnp.float32)
    c_BT = continuation_mask(mask_BT, batch.get("segment_ids"))
    shifted_BT = jnp.pad(value_BT[:, 1:], ((0, 0), (0, 1)))
    if stop_grad_next_value:
        shifted_BT = jax.lax.stop_gradient(shifted_BT)
    next_value_BT = c_BT * shifted_BT
    return SoftQ(
        q=q_BT * mask_BT, value=value_BT * mask_BT, next_value=next_value_BT, correct=correct_BT, mask=mask_BT
    )


def token_metrics(sq: SoftQ, gamma: float) -> dict[str, jax.Array]:
    """Metrics over masked positions: nll, td_reg (mean r^2), reward, value, accuracy, tokens."""
    reward_BT = sq.q - gamma * sq.next_value
    return {
        "nll": masked_mean(sq.value - sq.q, sq.mask),
        "td_reg": masked_mean(jnp.square(reward_BT), sq.mask),
        "reward": masked_mean(reward_BT, sq.mask),
        "value": masked_mean(sq.value, sq.mask),
        "accuracy": masked_mean(sq.correct, sq.mask),
        "tokens": jnp.sum(sq.mask),
    }
