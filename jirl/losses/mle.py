"""Maximum likelihood: masked token-level mean negative log-likelihood."""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp

from jirl.losses import _masking


def mle_loss(
    logits_BTV: jax.Array,
    batch: Mapping[str, jax.Array],
    *,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
):
    """L = sum_t m_t [(1 - eps)(-log pi_t) + eps mean_v(-log pi(v|s_t)) + z V_t^2] / sum_t m_t.

    eps = label_smoothing, z = z_loss (PaLM's log-normaliser penalty), V_t = logsumexp z_t.
    Metrics report the plain NLL and the soft-Q diagnostics with gamma = 1.
    """
    _masking.check_inputs(logits_BTV, batch)
    sq = _masking.soft_q(logits_BTV, batch)
    per_token_BT = sq.value - sq.q
    if label_smoothing:
        safe_BTV = jnp.where(sq.mask[..., None] > 0, logits_BTV.astype(jnp.float32), 0.0)
        uniform_nll_BT = sq.value - jnp.mean(safe_BTV, axis=-1)
        per_token_BT = (1.0 - label_smoothing) * per_token_BT + label_smoothing * uniform_nll_BT
    if z_loss:
        per_token_BT = per_token_BT + z_loss * jnp.square(sq.value)
    loss = _masking.masked_mean(per_token_BT, sq.mask)
    metrics = _masking.token_metrics(sq, gamma=1.0)
    metrics["loss"] = loss
    return loss, metrics
