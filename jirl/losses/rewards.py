"""Implicit rewards of a model trained as soft-Q values (IQLearn), from the head's TokenStats.

r_t = Q_t - gamma V'_t with Q_t = z_t[a_t], V'_t = c_t logsumexp z_{t+1} (docs/architecture.md), on response
tokens (m_t = 1), 0 elsewhere. The sequence reward discounts by the step k inside the response:
R = sum_t m_t gamma^k_t r_t, k_t = number of response tokens before t in the same row.
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp

from jirl.losses import _masking
from jirl.losses.head import TokenStats


def token_rewards(stats: TokenStats, batch: Mapping[str, jax.Array], *, gamma: float = 1.0) -> jax.Array:
    """r_BT = m_t (Q_t - gamma V'_t), float32."""
    _masking.check_stats(stats, batch)
    sq = _masking.soft_q(stats, batch)
    return (sq.q - gamma * sq.next_value) * sq.mask


def token_log_probs(stats: TokenStats, batch: Mapping[str, jax.Array]) -> jax.Array:
    """log pi_t = m_t (Q_t - V_t), float32 (the log-likelihood of each response token)."""
    _masking.check_stats(stats, batch)
    sq = _masking.soft_q(stats, batch)
    return (sq.q - sq.value) * sq.mask


def sequence_rewards(rewards_BT: jax.Array, mask_BT: jax.Array, *, gamma: float = 1.0) -> jax.Array:
    """R_B = sum_t m_t gamma^k_t r_t, k_t the response step (one example per row)."""
    mask_BT = mask_BT.astype(jnp.float32)
    steps_BT = jnp.cumsum(mask_BT, axis=1) - 1.0
    discount_BT = jnp.where(mask_BT > 0, jnp.power(jnp.float32(gamma), jnp.maximum(steps_BT, 0.0)), 0.0)
    return jnp.sum(discount_BT * rewards_BT, axis=1)
