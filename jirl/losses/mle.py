"""Maximum likelihood: masked token-level mean negative log-likelihood (optionally with an entropy bonus)."""

from __future__ import annotations

import numbers
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
    entropy_bonus: float = 0.0,
):
    """L = sum_t m_t [(1 - eps)(-log pi_t) + eps (V_t - mean_v z_t) + z V_t^2 - beta H_t] / sum_t m_t.

    eps = label_smoothing (the cross-entropy to the uniform distribution is V_t - mean_v z_t, so the
    head must give `mean_logit`), z = z_loss (PaLM's log-normaliser penalty), V_t = logsumexp z_t.
    beta = entropy_bonus: H_t = -sum_v p_t[v] log p_t[v] = V_t - E_t is the entropy of the model's
    next-token distribution p_t = softmax z_t, E_t = sum_v p_t[v] z_t[v] (the head's
    `expected_logit`); L = E_E[-log pi] - beta E_E[H] without the other terms.
    Metrics report the plain NLL and the soft-Q diagnostics with gamma = 1, and the mean entropy
    `entropy` when beta > 0. The mean divides by the batch's token count (`_masking.COUNT_KEYS`)
    when the batch carries one.
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
    if entropy_bonus:
        if stats.expected_logit is None:
            raise ValueError(
                f"loss.entropy_bonus={entropy_bonus} needs the expected logit per position; compute the "
                "statistics with expected_logit=True."
            )
        entropy_BT = sq.value - stats.expected_logit * sq.mask  # H_t = V_t - E_t (0 where m_t = 0)
        per_token_BT = per_token_BT - entropy_bonus * entropy_BT
    loss = _masking.token_mean(per_token_BT, sq)
    metrics = _masking.token_metrics(sq, gamma=1.0)
    if entropy_bonus:
        metrics["entropy"] = _masking.token_mean(entropy_BT, sq)
    metrics["loss"] = loss
    return loss, metrics


def needs_mean_logit(*, label_smoothing: float = 0.0, **_) -> bool:
    """Whether the head must compute mean_v z_t for these options."""
    return bool(label_smoothing)


def needs_expected_logit(*, entropy_bonus: float = 0.0, **_) -> bool:
    """Whether the head must compute sum_v softmax(z_t)[v] z_t[v] for these options."""
    return bool(entropy_bonus)


def check_options(
    *, label_smoothing: float = 0.0, z_loss: float = 0.0, entropy_bonus: float = 0.0, **_
) -> None:
    """The accepted ranges: label_smoothing in [0, 1], z_loss >= 0, entropy_bonus >= 0."""
    if not 0.0 <= float(label_smoothing) <= 1.0:
        raise ConfigError(
            f"loss.label_smoothing={label_smoothing!r} is not accepted; give a number in [0, 1]."
        )
    if not float(z_loss) >= 0.0:
        raise ConfigError(f"loss.z_loss={z_loss!r} is not accepted; give a number >= 0.")
    if not (_is_number(entropy_bonus) and float(entropy_bonus) >= 0.0):
        raise ConfigError(f"loss.entropy_bonus={entropy_bonus!r} is not accepted; give a number >= 0.")


def _is_number(x) -> bool:
    """A real number (not a bool)."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool)
