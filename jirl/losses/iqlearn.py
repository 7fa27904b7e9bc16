"""IQLearn as TD-regularised MLE (inverse soft-Q learning over token logits).

With Q_t = z_t[a_t], V_t = logsumexp z_t, V'_t = c_t V_{t+1} and r_t = Q_t - gamma V'_t:

  offline:  L = E_E[-log pi] + lam E_E[r^2]
  online:   L = E_E[-log pi] + alpha (S_P[V - gamma V'] - S_E[V - gamma V'])
                + lam ((1 - alpha) E_E[r^2] + alpha E_P[r^2])

E_E is the masked token mean over the expert batch, E_P over the policy batch. S_E and S_P are per
episode: the sum over each response's tokens, averaged over responses (in a multi-turn conversation,
over its last assistant turn alone: the turn online sampling answers). That is the normalisation
IQ-Learn's value term calls for: sum_t (V_t - gamma V_{t+1}) over an episode telescopes to V(s_0) +
(1 - gamma) sum_{t>=1} V_t, so at gamma = 1 both sums are the mean V(s_0) of the batch's prompts,
and the term vanishes when the policy answers the expert batch's own prompts (as IQ-Learn's
(1 - gamma) E[V(s_0)] does). Token means would leave sum_n V(s_0,n) (1/N_P - 1/N_E), a token-count
artifact; every turn of a conversation in S_E would leave the gap between the values of its earlier
turns' prompts and its last one's, which no policy sample answers. lam = 0 and alpha = 0 give
exactly MLE. -log pi_t = -r_t + (V_t - gamma V'_t), the unsimplified IQ-Learn form. The inputs are
the head's per-position TokenStats (jirl.losses.head), never the logits themselves.

Each of E_E, E_P, S_E, S_P divides a sum by its own count (expert tokens, policy tokens, expert and
policy episodes); a stream's batch may carry those counts (`_masking.COUNT_KEYS`), so that L over
slices of a batch, each given the whole batch's counts, adds up to L over the batch.
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp

from jirl.errors import ConfigError
from jirl.losses import _masking
from jirl.losses.head import Stream, TokenStats


def _expert_terms(sq: _masking.SoftQ, gamma: float):
    reward_BT = sq.q - gamma * sq.next_value
    nll = _masking.token_mean(sq.value - sq.q, sq)
    td_reg = _masking.token_mean(jnp.square(reward_BT), sq)
    value_gap = _masking.episode_mean(sq.value - gamma * sq.next_value, sq)  # S[V - gamma V']
    return nll, td_reg, value_gap


def iqlearn_loss(
    stats: TokenStats,
    batch: Mapping[str, jax.Array],
    policy: Stream | None = None,
    *,
    lam: float = 0.1,
    gamma: float = 1.0,
    alpha: float = 0.0,
    stop_grad_next_value: bool = False,
):
    """IQLearn loss and metrics of the expert stream (stats, batch); online with the `policy` stream."""
    _masking.check_stats(stats, batch)
    online = policy is not None
    if alpha and not online:
        raise ValueError(
            f"loss.alpha={alpha} asks for online IQLearn, which needs the policy stream "
            "(policy=Stream(stats, batch) of the model's own samples); use alpha=0 for offline IQLearn."
        )

    sq = _masking.soft_q(stats, batch, stop_grad_next_value=stop_grad_next_value)
    nll, td_reg, value_gap = _expert_terms(sq, gamma)
    metrics = _masking.token_metrics(sq, gamma)

    if not online:
        loss = nll + lam * td_reg
    else:
        _masking.check_stats(policy.stats, policy.batch, name="policy batch")
        psq = _masking.soft_q(policy.stats, policy.batch, stop_grad_next_value=stop_grad_next_value)
        _, policy_td_reg, policy_value_gap = _expert_terms(psq, gamma)
        loss = (
            nll
            + alpha * (policy_value_gap - value_gap)
            + lam * ((1.0 - alpha) * td_reg + alpha * policy_td_reg)
        )
        policy_metrics = _masking.token_metrics(psq, gamma)
        metrics.update({f"policy_{k}": v for k, v in policy_metrics.items()})
        metrics["value_gap"] = policy_value_gap - value_gap
    metrics["loss"] = loss
    return loss, metrics


def check_options(*, lam: float = 0.1, gamma: float = 1.0, alpha: float = 0.0, **_) -> None:
    """The accepted ranges: lam >= 0, gamma and alpha in [0, 1]."""
    for key, value, low, high in (
        ("lam", lam, 0.0, float("inf")),
        ("gamma", gamma, 0.0, 1.0),
        ("alpha", alpha, 0.0, 1.0),
    ):
        if not low <= float(value) <= high:
            accepted = f">= {low:g}" if high == float("inf") else f"in [{low:g}, {high:g}]"
            raise ConfigError(f"loss.{key}={value!r} is not accepted; give a number {accepted}.")


def is_online(*, alpha: float = 0.0, **_) -> bool:
    """Whether these options read a policy stream: alpha > 0."""
    return float(alpha) > 0


def offline(**options) -> dict:
    """The options of the offline terms alone (alpha = 0): what the expert stream measures."""
    return dict(options, alpha=0.0)
