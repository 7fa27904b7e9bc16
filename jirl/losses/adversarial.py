"""Adversarial imitation (GAIL for language models): the discriminator's loss, rewards, advantages, surrogate.

A discriminator D = sigmoid(d) scores each (s_t, a_t) as the expert's; the policy is trained by policy
gradient on the per-token reward it implies:

  discriminator:  L_D = -E_E[log sigmoid(d)] - E_P[log(1 - sigmoid(d))]
  reward:         r_t = log D - log(1 - D) = d_t ('airl')   or   r_t = -log(1 - D) = softplus(d_t) ('gail')
  return:         G_e = sum_{t in e} m_t r_t
  advantage:      A_e = G_e - mean_{e' in group(e), e' != e} G_e'   (leave-one-out; 0 baseline when alone)
  policy:         L_pi = -(1/E) sum_e sum_{t in e} min(rho_t A_e, clip(rho_t, 1 - eps, 1 + eps) A_e),
                  rho_t = exp(log pi_t - log pi_old_t)

plus a full-vocabulary KL(pi || pi_ref) penalty. E_E, E_P are masked token means over the expert and
policy batches. A policy batch is packed [B, T]: `example_ids` (1-based, 0 on padding) name the sampled
example of each token and `group_ids` (1-based, 0 on padding) the prompt it answers (K samples share one);
ids are at most B T, so B T + 1 segments hold them all. Only tokens with m_t = 1 are read: an example is
present when it has at least one. Everything accumulates in float32; masked positions never leak NaN.
"""

from __future__ import annotations

import math
import numbers

import jax
import jax.numpy as jnp

from jirl.errors import ConfigError
from jirl.losses import _masking

REWARDS = ("airl", "gail")


def _masked(x_BT: jax.Array, mask_BT: jax.Array) -> jax.Array:
    """x as float32 with 0 where m = 0 (garbage there, NaN or inf, reaches neither value nor gradient)."""
    return jnp.where(mask_BT > 0, x_BT.astype(jnp.float32), 0.0)


def _num_segments(x_BT: jax.Array) -> int:
    return x_BT.shape[0] * x_BT.shape[1] + 1


def _present(mask_BT: jax.Array, example_ids_BT: jax.Array, num_segments: int) -> jax.Array:
    """[num_segments] bool: example e has at least one token with m = 1 (segment 0, padding, never)."""
    counts = jax.ops.segment_sum(
        (mask_BT > 0).astype(jnp.float32).reshape(-1),
        example_ids_BT.astype(jnp.int32).reshape(-1),
        num_segments,
    )
    return (counts > 0).at[0].set(False)


def token_rewards(disc_logit_BT, form: str) -> jax.Array:
    """Per-token reward from the discriminator's logit d = log D - log(1 - D) (D = sigmoid(d), the
    probability that (s_t, a_t) is the expert's): 'airl': log D - log(1 - D) = d; 'gail': -log(1 - D) =
    softplus(d). No gradient flows to the discriminator (stop_gradient)."""
    if form not in REWARDS:
        raise ConfigError(f"loss.reward={form!r} is not accepted; give one of {list(REWARDS)}.")
    d_BT = jax.lax.stop_gradient(disc_logit_BT).astype(jnp.float32)
    return d_BT if form == "airl" else jax.nn.softplus(d_BT)


def discriminator_loss(
    expert_logit_BT, expert_mask_BT, policy_logit_BT, policy_mask_BT
) -> tuple[jax.Array, dict]:
    """Logistic loss: -E_E[log sigmoid(d)] - E_P[log(1 - sigmoid(d))], each a masked token mean of its
    stream (log(1 - sigmoid(d)) = log sigmoid(-d), both numerically stable). Metrics: disc_loss,
    disc_expert_accuracy (share of expert tokens with d > 0), disc_policy_accuracy (policy tokens, d < 0)."""
    expert_BT = _masked(expert_logit_BT, expert_mask_BT)
    policy_BT = _masked(policy_logit_BT, policy_mask_BT)
    expert_term = _masking.masked_mean(-jax.nn.log_sigmoid(expert_BT), expert_mask_BT)
    policy_term = _masking.masked_mean(-jax.nn.log_sigmoid(-policy_BT), policy_mask_BT)
    loss = expert_term + policy_term
    metrics = {
        "disc_loss": loss,
        "disc_expert_accuracy": _masking.masked_mean(jax.lax.stop_gradient(expert_BT) > 0, expert_mask_BT),
        "disc_policy_accuracy": _masking.masked_mean(jax.lax.stop_gradient(policy_BT) < 0, policy_mask_BT),
    }
    return loss, metrics


def sequence_returns(rewards_BT, mask_BT, example_ids_BT, num_segments) -> jax.Array:
    """G_e = sum_t m_t r_t over the tokens of example e; [num_segments] float32 (index = example id;
    index 0 collects nothing)."""
    masked_BT = _masked(rewards_BT, mask_BT) * (example_ids_BT > 0)
    return jax.ops.segment_sum(
        masked_BT.reshape(-1), example_ids_BT.astype(jnp.int32).reshape(-1), num_segments
    )


def leave_one_out_advantages(rewards_BT, mask_BT, example_ids_BT, group_ids_BT) -> jax.Array:
    """A_e = G_e - b_e with b_e the mean return of the OTHER examples of e's group (the group's present
    members; b_e = 0 when e is alone), broadcast to e's tokens: [B, T] float32, 0 where mask is 0. The
    leave-one-out baseline keeps the estimator unbiased (the group mean including e itself would scale the
    gradient by (K - 1) / K). No gradient (stop_gradient)."""
    n = _num_segments(rewards_BT)
    example_ids = example_ids_BT.astype(jnp.int32)
    returns_S = sequence_returns(jax.lax.stop_gradient(rewards_BT), mask_BT, example_ids, n)
    present_S = _present(mask_BT, example_ids, n)
    # Each example's group: the group id its read tokens carry (the same on all of them).
    group_of_S = jax.ops.segment_max(
        jnp.where(mask_BT > 0, group_ids_BT.astype(jnp.int32), 0).reshape(-1), example_ids.reshape(-1), n
    )
    group_of_S = jnp.where(present_S, group_of_S, 0)
    weight_S = present_S.astype(jnp.float32)
    group_sum_S = jax.ops.segment_sum(returns_S * weight_S, group_of_S, n)
    group_count_S = jax.ops.segment_sum(weight_S, group_of_S, n)
    others_S = group_count_S[group_of_S] - 1.0
    baseline_S = jnp.where(
        others_S > 0, (group_sum_S[group_of_S] - returns_S) / jnp.maximum(others_S, 1.0), 0.0
    )
    advantage_S = jnp.where(present_S, returns_S - baseline_S, 0.0)
    return jax.lax.stop_gradient(_masked(advantage_S[example_ids], mask_BT))


def policy_gradient_loss(
    logp_BT, sample_logp_BT, advantages_BT, mask_BT, example_ids_BT, clip: float
) -> tuple[jax.Array, dict]:
    """PPO-clip surrogate per token with the example's advantage, summed over each example's tokens and
    averaged over examples: L = -(1/E) sum_e sum_{t in e} min(rho_t A_e, clip(rho_t, 1 - clip, 1 + clip) A_e),
    rho_t = exp(logp_t - sample_logp_t) (sample_logp: log pi at the params that sampled, no gradient).
    E = number of distinct examples present (with a token of m = 1). On fresh samples rho = 1 and the
    gradient is exactly REINFORCE's: -(1/E) sum_e A_e sum_t grad log pi(a_t | s_t). clip = 0 means no
    clipping (plain ratio). Metrics: pg_loss, clip_fraction (share of masked tokens where the clipped term
    is the smaller, so the token's gradient is 0), examples (E)."""
    clip = float(clip)
    logp_BT = _masked(logp_BT, mask_BT)
    sample_logp_BT = jax.lax.stop_gradient(_masked(sample_logp_BT, mask_BT))
    advantages_BT = jax.lax.stop_gradient(_masked(advantages_BT, mask_BT))
    ratio_BT = jnp.exp(logp_BT - sample_logp_BT)
    unclipped_BT = ratio_BT * advantages_BT
    if clip > 0:
        clipped_BT = jnp.clip(ratio_BT, 1.0 - clip, 1.0 + clip) * advantages_BT
        surrogate_BT = jnp.minimum(unclipped_BT, clipped_BT)
        active_BT = jax.lax.stop_gradient(clipped_BT < unclipped_BT)
    else:
        surrogate_BT = unclipped_BT
        active_BT = jnp.zeros_like(mask_BT, dtype=bool)
    surrogate_BT = jnp.where(mask_BT > 0, surrogate_BT, 0.0)
    examples = jnp.sum(_present(mask_BT, example_ids_BT, _num_segments(mask_BT)).astype(jnp.float32))
    loss = -jnp.sum(surrogate_BT) / jnp.maximum(examples, 1.0)
    metrics = {
        "pg_loss": loss,
        "clip_fraction": _masking.masked_mean(active_BT, mask_BT),
        "examples": examples,
    }
    return loss, metrics


def _log_probs(logits_BTV, mask_BT):
    """(log p, p) in float32 with log p = 0 where p = 0 (a -inf logit), so p log p terms stay finite."""
    logp_BTV = jax.nn.log_softmax(jnp.where(mask_BT[..., None] > 0, logits_BTV.astype(jnp.float32), 0.0))
    p_BTV = jnp.exp(logp_BTV)
    return jnp.where(p_BTV > 0, logp_BTV, 0.0), p_BTV


def kl_to_reference(logits_BTV, reference_logits_BTV, mask_BT) -> tuple[jax.Array, jax.Array]:
    """Per-position full-vocabulary KL(pi || pi_ref) = sum_v p_v (log p_v - log q_v), computed in float32
    from log_softmax of both, [B, T] (0 where mask is 0), and its masked token mean. Gradient flows to
    `logits_BTV` only (the reference is stop_gradient)."""
    logp_BTV, p_BTV = _log_probs(logits_BTV, mask_BT)
    ref_BTV = jnp.where(
        mask_BT[..., None] > 0, jax.lax.stop_gradient(reference_logits_BTV).astype(jnp.float32), 0.0
    )
    logq_BTV = jnp.where(p_BTV > 0, jax.nn.log_softmax(ref_BTV), 0.0)
    kl_BT = jnp.where(mask_BT > 0, jnp.sum(p_BTV * (logp_BTV - logq_BTV), axis=-1), 0.0)
    return kl_BT, _masking.masked_mean(kl_BT, mask_BT)


def entropy(logits_BTV, mask_BT) -> jax.Array:
    """Masked token mean of -sum_v p_v log p_v (float32), no gradient (a metric)."""
    logp_BTV, p_BTV = _log_probs(jax.lax.stop_gradient(logits_BTV), mask_BT)
    return _masking.masked_mean(-jnp.sum(p_BTV * logp_BTV, axis=-1), mask_BT)


def _finite_at_least(key: str, value, low: float, *, strict: bool = False) -> None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if (
        isinstance(value, bool)
        or not math.isfinite(number)
        or not (number > low if strict else number >= low)
    ):
        raise ConfigError(
            f"loss.{key}={value!r} is not accepted; give a finite number {'>' if strict else '>='} {low:g}."
        )


def check_sampling_temperature(temperature: float) -> None:
    """The policy's samples must be random (temperature > 0): greedy ones are the same K times, so
    every leave-one-out advantage is 0 and the policy-gradient term learns nothing."""
    if isinstance(temperature, bool) or not float(temperature) > 0:
        raise ConfigError(
            f"online.temperature={temperature!r} gives GAIL the same sample of a prompt K times, so every "
            "advantage is 0; give a temperature > 0 (1 samples the policy itself)."
        )


def check_options(
    *,
    reward="airl",
    pg_weight=1.0,
    mle_weight=1.0,
    kl=0.1,
    clip=0.2,
    samples_per_prompt=4,
    discriminator="tiny",
    discriminator_learning_rate=1e-3,
    **_,
) -> None:
    """The accepted values: reward in REWARDS; pg_weight, mle_weight, kl, clip finite and >= 0;
    samples_per_prompt an int >= 1; discriminator a non-empty string (the preset's name, checked
    where the presets are); discriminator_learning_rate finite and > 0."""
    if not isinstance(reward, str) or reward not in REWARDS:
        raise ConfigError(f"loss.reward={reward!r} is not accepted; give one of {list(REWARDS)}.")
    for key, value in (("pg_weight", pg_weight), ("mle_weight", mle_weight), ("kl", kl), ("clip", clip)):
        _finite_at_least(key, value, 0.0)
    if (
        isinstance(samples_per_prompt, bool)
        or not isinstance(samples_per_prompt, numbers.Integral)
        or samples_per_prompt < 1
    ):
        raise ConfigError(
            f"loss.samples_per_prompt={samples_per_prompt!r} is not accepted; give an integer >= 1."
        )
    if not isinstance(discriminator, str) or not discriminator.strip():
        raise ConfigError(
            f"loss.discriminator={discriminator!r} is not accepted; give a non-empty string (a preset name)."
        )
    _finite_at_least("discriminator_learning_rate", discriminator_learning_rate, 0.0, strict=True)
