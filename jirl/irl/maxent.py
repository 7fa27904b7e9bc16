"""MaxEnt IRL (maximum causal entropy) with optax: linear reward weights on a feature tensor.

With r_w(s, a) = w . phi(s, a), soft VI gives V_w and pi_w. The objective minimised is the dual

    g(w) = E_{s_0 ~ demos}[V_w(s_0)] - w . mu_E + (l2 / 2) |w|^2,
    grad g = mu_w - mu_E + l2 w,

with mu_E = (1/N) sum_n sum_t gamma^t phi(s_t, a_t) over the demonstrations and mu_w the same
expectation under pi_w from the demonstrations' start states (soft_vi.state_action_visitation).
With deterministic transitions g(w) is exactly the discounted negative log-likelihood
-(1/N) sum_n sum_t gamma^t log pi_w(a_t | s_t) (the sum telescopes), so at the optimum (l2 = 0)
the model's feature expectations equal the expert's. g is convex in w; L-BFGS (the default) gets
there in ~100 steps on the gridworld, Adam in thousands.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from tqdm.auto import tqdm

from jirl.errors import ConfigError
from jirl.irl import soft_vi
from jirl.irl.demos import Trajectories
from jirl.irl.mdp import MDP

OPTIMIZERS = ("lbfgs", "adam", "sgd")


class IRLResult(NamedTuple):
    weights_F: jax.Array
    expert_fe_F: jax.Array
    model_fe_F: jax.Array
    objective_K: jax.Array  # g(w) at every step
    log_policy_SA: jax.Array  # pi_w at the final weights


@jax.jit
def expert_feature_expectations(features_SAF: jax.Array, demos: Trajectories, discount) -> jax.Array:
    """mu_E = (1/N) sum_n sum_t gamma^t phi(s_t, a_t), [F]."""
    phi_NTF = features_SAF[demos.states_NT1[:, :-1], demos.actions_NT]
    weight_NT = demos.mask_NT * discount ** jnp.arange(demos.actions_NT.shape[1], dtype=jnp.float32)
    return jnp.einsum("nt,ntf->f", weight_NT, phi_NTF) / demos.num


@functools.partial(jax.jit, static_argnames=("num_states",))
def empirical_start(demos: Trajectories, num_states: int) -> jax.Array:
    """The demonstrations' start-state distribution, [S]."""
    return jnp.zeros(num_states, jnp.float32).at[demos.states_NT1[:, 0]].add(1.0 / demos.num)


def dual(weights_F, mdp: MDP, features_SAF, expert_fe_F, init_S, l2=0.0):
    """(g(w), grad g(w), mu_w, soft-VI solution) as in the module docstring."""
    solution = soft_vi.soft_value_iteration(mdp, features_SAF @ weights_F)
    visitation_SA = soft_vi.state_action_visitation(mdp, solution.log_policy_SA, init_S)
    model_fe_F = soft_vi.feature_expectations(visitation_SA, features_SAF)
    value = init_S @ solution.value_S - weights_F @ expert_fe_F + 0.5 * l2 * weights_F @ weights_F
    return value, model_fe_F - expert_fe_F + l2 * weights_F, model_fe_F, solution


def make_optimizer(name: str, learning_rate, total_steps: int) -> optax.GradientTransformation:
    """L-BFGS (zoom line search; learning_rate unused), or Adam / SGD with a cosine decay to 1% of
    `learning_rate` over `total_steps`."""
    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown IRL optimizer '{name}'; accepted: {list(OPTIMIZERS)}.")
    if name == "lbfgs":
        return optax.lbfgs()
    schedule = optax.cosine_decay_schedule(learning_rate, max(total_steps, 1), alpha=0.01)
    return optax.adam(schedule) if name == "adam" else optax.sgd(schedule)


def dual_function(mdp: MDP, features_SAF, expert_fe_F, init_S, l2=0.0):
    """g as a function of w alone whose gradient (custom VJP) is mu_w - mu_E + l2 w: what a line
    search (L-BFGS) differentiates, without differentiating through soft value iteration."""

    @jax.custom_vjp
    def g(weights_F):
        return dual(weights_F, mdp, features_SAF, expert_fe_F, init_S, l2)[0]

    def forward(weights_F):
        value, grad_F, _, _ = dual(weights_F, mdp, features_SAF, expert_fe_F, init_S, l2)
        return value, grad_F

    g.defvjp(forward, lambda grad_F, cotangent: (cotangent * grad_F,))
    return g


@functools.partial(jax.jit, static_argnames=("steps", "total_steps", "optimizer"))
def _steps(
    weights_F,
    opt_state,
    mdp,
    features_SAF,
    expert_fe_F,
    init_S,
    l2,
    learning_rate,
    *,
    steps,
    total_steps,
    optimizer,
):
    tx = make_optimizer(optimizer, learning_rate, total_steps)
    g = dual_function(mdp, features_SAF, expert_fe_F, init_S, l2)
    value_and_grad = optax.value_and_grad_from_state(g) if optimizer == "lbfgs" else None

    def step(carry, _):
        weights_F, opt_state = carry
        if optimizer == "lbfgs":
            value, grad_F = value_and_grad(weights_F, state=opt_state)
            updates, opt_state = tx.update(grad_F, opt_state, weights_F, value=value, grad=grad_F, value_fn=g)
        else:
            value, grad_F, _, _ = dual(weights_F, mdp, features_SAF, expert_fe_F, init_S, l2)
            updates, opt_state = tx.update(grad_F, opt_state, weights_F)
        return (optax.apply_updates(weights_F, updates), opt_state), value

    (weights_F, opt_state), values = jax.lax.scan(step, (weights_F, opt_state), None, length=steps)
    return weights_F, opt_state, values


def fit_weights(
    mdp, features_SAF, expert_fe_F, init_S, *, l2=0.0, learning_rate=0.1, steps=100, optimizer="lbfgs"
):
    """(weights minimising g from zero, g at each step): pure and jittable, for callers that loop
    over data sets. (It vmaps, but L-BFGS's nested while loops then run every member as long as
    the slowest.)"""
    weights_F = jnp.zeros(features_SAF.shape[-1], jnp.float32)
    opt_state = make_optimizer(optimizer, learning_rate, steps).init(weights_F)
    weights_F, _, values = _steps(
        weights_F,
        opt_state,
        mdp,
        features_SAF,
        expert_fe_F,
        init_S,
        jnp.asarray(l2, jnp.float32),
        jnp.asarray(learning_rate, jnp.float32),
        steps=steps,
        total_steps=steps,
        optimizer=optimizer,
    )
    return weights_F, values


def maxent_irl(
    mdp: MDP,
    features_SAF: jax.Array,
    demos: Trajectories,
    *,
    steps: int = 100,
    learning_rate: float = 0.1,
    l2: float = 0.0,
    optimizer: str = "lbfgs",
    chunk: int = 25,
    progress: bool = False,
) -> IRLResult:
    """Recover reward weights from demonstrations (with `progress`: `chunk` steps per jitted call)."""
    if optimizer not in OPTIMIZERS:
        raise ConfigError(f"unknown IRL optimizer '{optimizer}'; accepted: {list(OPTIMIZERS)}.")
    if steps < 1:
        raise ConfigError(f"irl.steps={steps} must be at least 1.")
    features_SAF = jnp.asarray(features_SAF, jnp.float32)
    expert_fe_F = expert_feature_expectations(features_SAF, demos, mdp.discount)
    init_S = empirical_start(demos, mdp.num_states)
    weights_F = jnp.zeros(features_SAF.shape[-1], jnp.float32)
    opt_state = make_optimizer(optimizer, learning_rate, steps).init(weights_F)
    values, done = [], 0
    chunk = chunk if progress else steps  # one jitted call when nobody watches
    with tqdm(total=steps, desc="MaxEnt IRL", disable=not progress, leave=False) as bar:
        while done < steps:
            n = min(chunk, steps - done)
            weights_F, opt_state, chunk_values = _steps(
                weights_F,
                opt_state,
                mdp,
                features_SAF,
                expert_fe_F,
                init_S,
                jnp.float32(l2),
                jnp.float32(learning_rate),
                steps=n,
                total_steps=steps,
                optimizer=optimizer,
            )
            values.append(chunk_values)
            done += n
            bar.update(n)
            bar.set_postfix(objective=f"{float(chunk_values[-1]):.4f}")
    _, _, model_fe_F, solution = dual(weights_F, mdp, features_SAF, expert_fe_F, init_S, l2)
    return IRLResult(weights_F, expert_fe_F, model_fe_F, jnp.concatenate(values), solution.log_policy_SA)


def relative_gap(model_fe_F: jax.Array, expert_fe_F: jax.Array) -> float:
    """|mu_w - mu_E| / |mu_E| (L2): how far the feature expectations are from matching."""
    return float(jnp.linalg.norm(model_fe_F - expert_fe_F) / jnp.linalg.norm(expert_fe_F))
