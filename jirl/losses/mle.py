"""Maximum likelihood: masked token-level mean negative log-likelihood."""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp

from jirl.errors import ConfigError
from jirl.losses import _masking
from jirl.losses.head import TokenStats


def mle_loss(
    stats: TokenStats,
    batch: Mapping[str, jax.Array],
    *,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
):
    """L = sum_t m_t [(1 - eps)(-log pi_t) + eps (V_t - mean_v z_t) + z V_t^2] / sum_t m_t.

    eps = label_smoothing (the cross-entropy to the uniform distribution is V_t - mean_v z_t, so the
    head must give `mean_logit`), z = z_loss (PaLM's log-normaliser penalty), V_t = logsumexp z_t.
    Metrics report the plain NLL and the soft-Q diagnostics with gamma = 1.
    """
    _masking.check_stats(stats, batch)
    sq = _masking.soft_q(stats, batch)
    per_token_BT = sq.value - sq.q
    if label_smoothing:
        if stats.mean_logit is None:
            raise ValueError(
                f"loss.label_smoothing={label_smoothing} needs the mean logit per position; compute the "
                "statistics with mean_logit=True."
            )
        uniform_nll_BT = sq.value - stats.mean_logit * sq.mask
        per_token_BT = (1.0 - label_smoothing) * per_token_BT + label_smoothing * uniform_nll_BT
    if z_loss:
        per_token_BT = per_token_BT + z_loss * jnp.square(sq.value)
    loss = _masking.masked_mean(per_token_BT, sq.mask)
    metrics = _masking.token_metrics(sq, gamma=1.0)
    metrics["loss"] = loss
    return loss, metrics


def needs_mean_logit(*, label_smoothing: float = 0.0, **_) -> bool:
    """Whether the head must compute mean_v z_t for these options."""
    return bool(label_smoothing)


def check_options(*, label_smoothing: float = 0.0, z_loss: float = 0.0, **_) -> None:
    """The accepted ranges: label_smoothing in [0, 1], z_loss >= 0."""
    if not 0.0 <= float(label_smoothing) <= 1.0:
        raise ConfigError(
            f"loss.label_smoothing={label_smoothing!r} is not accepted; give a number in [0, 1]."
        )
    if not float(z_loss) >= 0.0:
        raise ConfigError(f"loss.z_loss={z_loss!r} is not accepted; give a number >= 0.")
