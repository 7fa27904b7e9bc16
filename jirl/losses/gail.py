"""Adversarial imitation (GAIL) as the policy's objective, in the paper's form for language models.

A discriminator D(s_t, a_t) (jirl.losses.adversarial) tells expert tokens from the policy's own
samples; its logit d gives a per-token reward r_t (`reward`: 'airl' d = log D - log(1 - D), or
'gail' -log(1 - D)). The policy, started from the MLE model pi_ref, minimises

  L = pg_weight L_PG + mle_weight E_E[-log pi] + kl E_P[KL(pi || pi_ref)]

with L_PG the PPO-clip surrogate of -E[sum_t r_t] over K samples per prompt and a leave-one-out
baseline within each prompt's group (REINFORCE on fresh samples), a mean over sampled examples of
sums over their tokens (so its scale grows with the response length, while the other two terms are
token means), E_E the expert token mean and E_P the policy token mean of the full-vocabulary KL to
the starting model. Without a policy stream (evaluation) the objective is the expert NLL.
"""

from __future__ import annotations

from typing import Mapping, NamedTuple

import jax

from jirl.losses import _masking, adversarial
from jirl.losses.head import TokenStats


class PolicySamples(NamedTuple):
    """The policy's own samples as the policy term reads them, computed inside the step's gradient.

    batch: the packed policy batch (loss_mask, example_ids, group_ids, sample_logp: log pi at the
    params that sampled); logp: log pi(a_t | s_t) now; kl: KL(pi || pi_ref) per position; advantages:
    A_e on each token of example e (no gradient).
    """

    batch: Mapping[str, jax.Array]
    logp: jax.Array
    kl: jax.Array
    advantages: jax.Array


def gail_loss(
    stats: TokenStats,
    batch: Mapping[str, jax.Array],
    policy: PolicySamples | None = None,
    *,
    reward: str = "airl",
    pg_weight: float = 1.0,
    mle_weight: float = 1.0,
    kl: float = 0.1,
    clip: float = 0.2,
    samples_per_prompt: int = 4,
    discriminator: str = "tiny",
    discriminator_learning_rate: float = 1e-3,
):
    """The policy's loss and metrics: expert stream (stats, batch), policy samples `policy`.

    `reward`, `samples_per_prompt`, `discriminator` and `discriminator_learning_rate` shape the
    step around this loss (the rewards, the sampler, the discriminator and its optimizer)."""
    del reward, samples_per_prompt, discriminator, discriminator_learning_rate
    _masking.check_stats(stats, batch)
    sq = _masking.soft_q(stats, batch)
    nll = _masking.masked_mean(sq.value - sq.q, sq.mask)
    metrics = _masking.token_metrics(sq, gamma=1.0)
    for soft_q_only in ("reward", "td_reg"):  # IQLearn's implicit reward: not GAIL's (reward_mean)
        metrics.pop(soft_q_only)
    if policy is None:
        metrics["loss"] = nll
        return nll, metrics
    mask_BT = policy.batch["loss_mask"].astype(jax.numpy.float32)
    samples = policy.batch
    pg, pg_metrics = adversarial.policy_gradient_loss(
        policy.logp, samples["sample_logp"], policy.advantages, mask_BT, samples["example_ids"], clip
    )
    kl_mean = _masking.masked_mean(policy.kl, mask_BT)
    loss = pg_weight * pg + mle_weight * nll + kl * kl_mean
    metrics.update(pg_metrics)
    metrics.update(kl=kl_mean, policy_tokens=mask_BT.sum(), loss=loss)
    return loss, metrics


def check_options(**options) -> None:
    """The accepted ranges (jirl.losses.adversarial.check_options)."""
    adversarial.check_options(**options)


def is_online(**_) -> bool:
    """GAIL always reads the policy's own samples."""
    return True
