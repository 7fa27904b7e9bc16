"""Adversarial imitation's train state and step: the policy and a discriminator, trained together.

Each step, with the policy's K samples per prompt (the sampler's policy batch) and the expert batch:

  1. the discriminator's logit d_t = D_logit(s_t, a_t) on every policy token gives the rewards r_t
     and each sample's leave-one-out advantage within its prompt's group (jirl.losses.adversarial);
  2. the policy takes one step on L = L_PG + mle_weight E_E[-log pi] + kl E_P[KL(pi || pi_ref)]
     (jirl.losses.gail), pi_ref being the starting weights, kept in the state;
  3. the discriminator takes one step on its logistic loss, expert tokens against policy tokens,
     whose forward pass gave step 1's logits (both updates read the state the step started from).
     Its expert tokens are each conversation's last assistant turn (`losses.last_turn_mask`): the
     turn the sampler answers, so that both streams start from the same prompts.

The discriminator is a causal LM of its own (a preset, or a copy of the policy): its logit for the
token taken, z_t[a_t], is d_t, read by the same head stage as every objective (jirl.forward).
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct

from jirl import forward, losses, models, sharding
from jirl.experiment import Run
from jirl.losses import adversarial
from jirl.models import layers
from jirl.optimizer import nonfinite_counts
from jirl.train.state import TrainState, create_sharded_train_state, sharded_state_target
from jirl.train.step import TrainStep

# What the step reads of a policy batch beyond a batch's own keys (jirl.train.online.PolicySampler).
POLICY_KEYS = ("example_ids", "group_ids", "sample_logp")


@struct.dataclass
class AdversarialState(TrainState):
    """The policy's TrainState, plus the starting policy (the KL's anchor, never updated) and the
    discriminator with its optimizer state. One pytree: jit, orbax and shardings see it whole."""

    reference: Any
    discriminator: Any
    discriminator_opt_state: Any


def state_target(run: Run) -> tuple[nnx.GraphDef, nnx.GraphDef, AdversarialState, AdversarialState]:
    """(policy graphdef, discriminator graphdef, abstract state, state shardings), nothing allocated."""
    graphdef, policy, policy_shardings = sharded_state_target(run.model, run.tx, run.mesh, run.rules)
    disc = run.discriminator
    disc_graphdef, critic, critic_shardings = sharded_state_target(disc.model, disc.tx, run.mesh, run.rules)

    def combine(p: TrainState, d: TrainState) -> AdversarialState:
        return AdversarialState(
            step=p.step,
            params=p.params,
            opt_state=p.opt_state,
            reference=p.params,
            discriminator=d.params,
            discriminator_opt_state=d.opt_state,
        )

    return graphdef, disc_graphdef, combine(policy, critic), combine(policy_shardings, critic_shardings)


def initial_state(run: Run, policy: TrainState, shardings: AdversarialState, seed: int) -> AdversarialState:
    """The adversarial state around a fresh or pretrained policy state: pi_ref a copy of its weights,
    the discriminator a copy too (`copies_policy`) or fresh from seed + 1, placed on `shardings`."""
    disc = run.discriminator
    copy = jax.jit(lambda tree: jax.tree.map(jnp.copy, tree), out_shardings=shardings.params)
    reference = copy(policy.params)
    if disc.copies_policy:
        disc_params = copy(policy.params)
    else:
        _, fresh, _ = create_sharded_train_state(disc.model, disc.tx, seed + 1, run.mesh, run.rules)
        disc_params = fresh.params
    disc_opt_state = jax.jit(disc.tx.init, out_shardings=shardings.discriminator_opt_state)(disc_params)
    return AdversarialState(
        step=policy.step,
        params=policy.params,
        opt_state=policy.opt_state,
        reference=reference,
        discriminator=disc_params,
        discriminator_opt_state=disc_opt_state,
    )


def sequence_logp(
    graphdef: nnx.GraphDef, params: Any, batch: Mapping[str, jax.Array], temperature: float = 1.0
) -> jax.Array:
    """log q(a_t | s_t) of the batch's targets, q = softmax(z_t / temperature) (pi itself at 1),
    [B, T] float32, from the full logits."""
    logits_BTV = models.forward_batch(graphdef, params, batch).astype(jnp.float32)
    return _target_logp(logits_BTV / temperature, batch["targets"])


def _target_logp(logits_BTV: jax.Array, targets_BT: jax.Array) -> jax.Array:
    """log softmax(z_t)[a_t], [B, T]."""
    return jnp.take_along_axis(jax.nn.log_softmax(logits_BTV, axis=-1), targets_BT[..., None], axis=-1)[
        ..., 0
    ]


def make_sample_logp(graphdef: nnx.GraphDef, temperature: float = 1.0):
    """A jitted (params, policy batch) -> log q of its tokens, q the distribution that sampled them
    (the params then, at the sampler's temperature): the PPO ratio pi / q is then an importance
    weight, 1 on fresh samples at temperature 1. Full logits, replicated (not chunked, not sharded)."""
    adversarial.check_sampling_temperature(temperature)
    return jax.jit(lambda params, batch: sequence_logp(graphdef, params, batch, temperature))


def _skip_if_nonfinite(loss: jax.Array, grads: Any) -> tuple[Any, jax.Array]:
    """NaN gradients when the loss or the gradient norm is not finite (the optimizer then skips the
    step whole, jirl.optimizer), and the gradient norm."""
    norm = optax.global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(norm)
    return jax.tree.map(lambda g: jnp.where(finite, g, jnp.nan), grads), norm


def make_adversarial_step(
    graphdef: nnx.GraphDef,
    disc_graphdef: nnx.GraphDef,
    run: Run,
    state_shardings: AdversarialState | None = None,
) -> TrainStep:
    """A jitted `(state, expert, policy) -> (state, metrics)` (the state donated), as the module
    docstring says; sharded over `run.mesh` with `state_shardings`."""
    objective, head, disc = run.objective, run.head, run.discriminator
    form = objective.options.get("reward", "airl")
    mesh = run.mesh if state_shardings is not None else None
    constrain_fn = None if mesh is None else sharding.activation_constrainer(mesh, run.rules)

    def logits_d(disc_params, batch):
        return forward.token_stats(disc_graphdef, disc_params, batch, head).q

    def policy_loss(params, reference_BTV, expert, policy, advantages_BT):
        stats = forward.token_stats(graphdef, params, expert, head)
        logits_BTV = models.forward_batch(graphdef, params, policy).astype(jnp.float32)
        mask_BT = policy["loss_mask"].astype(jnp.float32)
        logp_BT = _target_logp(logits_BTV, policy["targets"])
        kl_BT, _ = adversarial.kl_to_reference(logits_BTV, reference_BTV, mask_BT)
        samples = losses.PolicySamples(policy, logp_BT, kl_BT, advantages_BT)
        loss, metrics = objective(stats, expert, policy=samples)
        metrics["policy_entropy"] = adversarial.entropy(logits_BTV, mask_BT)
        return loss, metrics

    def disc_loss(disc_params, expert, policy):
        """(loss, (metrics, d on the policy's tokens)): the logits also give the rewards."""
        expert_BT, policy_BT = logits_d(disc_params, expert), logits_d(disc_params, policy)
        last_turn_BT = losses.last_turn_mask(expert["loss_mask"], expert.get("segment_ids"))
        loss, metrics = adversarial.discriminator_loss(
            expert_BT, last_turn_BT, policy_BT, policy["loss_mask"]
        )
        return loss, (metrics, policy_BT)

    def train_step(state: AdversarialState, expert: Mapping[str, jax.Array], policy: Mapping[str, jax.Array]):
        missing = [k for k in POLICY_KEYS if policy is None or k not in policy]
        if missing:
            raise ValueError(
                f"the adversarial step needs the policy's samples with {list(POLICY_KEYS)} (missing "
                f"{missing}): step(state, expert, policy), policy from an online.PolicySampler made with "
                "samples_per_prompt and sample_logp."
            )
        with layers.activation_sharding(constrain_fn):
            mask_BT = policy["loss_mask"].astype(jnp.float32)
            (d_loss, (d_metrics, d_BT)), d_grads = jax.value_and_grad(disc_loss, has_aux=True)(
                state.discriminator, expert, policy
            )
            rewards_BT = adversarial.token_rewards(d_BT, form)  # no gradient: stop_gradient inside
            advantages_BT = adversarial.leave_one_out_advantages(
                rewards_BT, mask_BT, policy["example_ids"], policy["group_ids"]
            )
            reference_BTV = models.forward_batch(graphdef, state.reference, policy).astype(jnp.float32)
            reference_BTV = jax.lax.stop_gradient(reference_BTV)
            (loss, metrics), grads = jax.value_and_grad(policy_loss, has_aux=True)(
                state.params, reference_BTV, expert, policy, advantages_BT
            )
        grads, grad_norm = _skip_if_nonfinite(loss, grads)
        d_grads, d_grad_norm = _skip_if_nonfinite(d_loss, d_grads)
        applied_before = state.step - nonfinite_counts(state.opt_state).get("nonfinite_steps", 0)
        updates, opt_state = run.tx.update(grads, state.opt_state, state.params)
        d_updates, d_opt_state = disc.tx.update(d_grads, state.discriminator_opt_state, state.discriminator)
        reward_mean = _masked_mean(rewards_BT, mask_BT)
        metrics = dict(
            metrics,
            **d_metrics,
            loss=loss,
            grad_norm=grad_norm,
            disc_grad_norm=d_grad_norm,
            reward_mean=reward_mean,
            reward_std=jnp.sqrt(_masked_mean(jnp.square(rewards_BT - reward_mean), mask_BT)),
            learning_rate=run.schedule(applied_before),
            **nonfinite_counts(opt_state),
            **{f"disc_{k}": v for k, v in nonfinite_counts(d_opt_state).items()},
        )
        new_state = state.replace(
            step=state.step + 1,
            params=optax.apply_updates(state.params, updates),
            opt_state=opt_state,
            discriminator=optax.apply_updates(state.discriminator, d_updates),
            discriminator_opt_state=d_opt_state,
        )
        return new_state, metrics

    if mesh is None:
        return TrainStep(jax.jit(train_step, donate_argnums=0))
    batch_sharding = sharding.batch_sharding(mesh, run.rules)
    return TrainStep(
        jax.jit(
            train_step,
            in_shardings=(state_shardings, batch_sharding, batch_sharding),
            out_shardings=(state_shardings, sharding.replicated(mesh)),
            donate_argnums=0,
        )
    )


def _masked_mean(x_BT: jax.Array, mask_BT: jax.Array) -> jax.Array:
    """Mean of x over the policy's tokens (mask 1)."""
    return jnp.sum(x_BT * mask_BT) / jnp.maximum(jnp.sum(mask_BT), 1.0)


__all__ = [
    "AdversarialState",
    "initial_state",
    "make_adversarial_step",
    "make_sample_logp",
    "state_target",
]
