"""Soft value iteration, the policy it implies, and discounted state-action visitation frequencies.

Soft Bellman backup at temperature tau (tau = 1: MaxEnt / maximum causal entropy):

    Q(s, a) = r(s, a) + gamma * sum_s' P(s'|s, a) V(s'),    V(terminal) = 0
    V(s)    = tau * log sum_a exp(Q(s, a) / tau),            pi(a|s) = exp((Q(s, a) - V(s)) / tau)

iterated until max_s |V_new - V| <= tol * max(1, max_s |V|) (or max_iters). `value_iteration` is
the hard backup (tau -> 0: V = max_a Q). Visitation: d = init + gamma * P_pi^T d over the states
where the agent acts, D(s, a) = d(s) pi(a|s) = E[sum_t gamma^t 1(s_t = s, a_t = a)].
Everything is jitted; a stacked batch of MDPs goes through `jax.vmap`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jirl.irl.mdp import MDP

TOL = 1e-6
MAX_ITERS = 10_000


class Solution(NamedTuple):
    q_SA: jax.Array
    value_S: jax.Array
    log_policy_SA: jax.Array
    iterations: jax.Array  # backups done
    residual: jax.Array  # the last max |V_new - V|; <= tol * max(1, max |V|) when converged


def expected_next(mdp: MDP, value_S: jax.Array) -> jax.Array:
    """E[V(s') | s, a] = sum_k prob_SAK * V[next_SAK], [S, A]."""
    return jnp.sum(mdp.prob_SAK * value_S[mdp.next_SAK], axis=-1)


def q_values(mdp: MDP, reward_SA: jax.Array, value_S: jax.Array) -> jax.Array:
    """Q = r + gamma * E[V(s')], with V = 0 at terminal states."""
    return reward_SA + mdp.discount * expected_next(mdp, value_S * (1.0 - mdp.terminal_S))


def _iterate(backup, mdp: MDP, reward_SA, value_S, tol, max_iters):
    def cond(carry):
        _, i, residual, scale = carry
        return (i < max_iters) & (residual > tol * scale)

    def body(carry):
        value_S, i, _, _ = carry
        new_S = backup(q_values(mdp, reward_SA, value_S)) * (1.0 - mdp.terminal_S)
        residual = jnp.max(jnp.abs(new_S - value_S))
        return new_S, i + 1, residual, jnp.maximum(1.0, jnp.max(jnp.abs(new_S)))

    init = (value_S, jnp.int32(0), jnp.float32(jnp.inf), jnp.float32(1.0))
    value_S, iterations, residual, _ = jax.lax.while_loop(cond, body, init)
    return value_S, iterations, residual


@jax.jit
def soft_value_iteration(
    mdp: MDP,
    reward_SA: jax.Array,
    temperature: float | jax.Array = 1.0,
    *,
    tol: float = TOL,
    max_iters: int = MAX_ITERS,
    value_S: jax.Array | None = None,
) -> Solution:
    """Soft VI from `value_S` (default 0): V = tau logsumexp(Q / tau), pi = exp((Q - V) / tau)."""
    reward_SA = jnp.asarray(reward_SA, jnp.float32)
    tau = jnp.asarray(temperature, jnp.float32)
    backup = lambda q_SA: tau * jax.nn.logsumexp(q_SA / tau, axis=-1)
    start_S = jnp.zeros(mdp.num_states, jnp.float32) if value_S is None else value_S
    value_S, iterations, residual = _iterate(backup, mdp, reward_SA, start_S, tol, max_iters)
    q_SA = q_values(mdp, reward_SA, value_S)
    log_policy_SA = jax.nn.log_softmax(q_SA / tau, axis=-1)
    return Solution(q_SA, value_S, log_policy_SA, iterations, residual)


@jax.jit
def value_iteration(
    mdp: MDP, reward_SA: jax.Array, *, tol: float = TOL, max_iters: int = MAX_ITERS
) -> Solution:
    """Hard VI: V = max_a Q; the policy is uniform over the exact argmax set."""
    reward_SA = jnp.asarray(reward_SA, jnp.float32)
    start_S = jnp.zeros(mdp.num_states, jnp.float32)
    value_S, iterations, residual = _iterate(
        lambda q: jnp.max(q, axis=-1), mdp, reward_SA, start_S, tol, max_iters
    )
    q_SA = q_values(mdp, reward_SA, value_S)
    best_SA = q_SA >= jnp.max(q_SA, axis=-1, keepdims=True)
    log_policy_SA = jnp.where(best_SA, -jnp.log(jnp.sum(best_SA, -1, keepdims=True)), -jnp.inf)
    return Solution(q_SA, value_S, log_policy_SA, iterations, residual)


def propagate(mdp: MDP, weight_SA: jax.Array) -> jax.Array:
    """sum_{s,a} weight(s, a) P(s'|s, a), [S]: where mass at (s, a) goes next."""
    flow_SAK = weight_SA[..., None] * mdp.prob_SAK
    return jnp.zeros(mdp.num_states, flow_SAK.dtype).at[mdp.next_SAK.ravel()].add(flow_SAK.ravel())


@jax.jit
def state_action_visitation(
    mdp: MDP,
    log_policy_SA: jax.Array,
    init_S: jax.Array | None = None,
    *,
    tol: float = 1e-7,
    max_iters: int = MAX_ITERS,
) -> jax.Array:
    """D(s, a) = E[sum_t gamma^t 1(s_t = s, a_t = a)] from `init_S` (default: the MDP's start).

    d = init + gamma * sum_{s,a} d(s) pi(a|s) P(.|s, a) over non-terminal s, to a fixed point.
    """
    init_S = mdp.init_S if init_S is None else jnp.asarray(init_S, jnp.float32)
    acting_SA = jnp.exp(log_policy_SA) * (1.0 - mdp.terminal_S)[:, None]

    def cond(carry):
        _, i, residual = carry
        return (i < max_iters) & (residual > tol)

    def body(carry):
        d_S, i, _ = carry
        new_S = init_S + mdp.discount * propagate(mdp, d_S[:, None] * acting_SA)
        return new_S, i + 1, jnp.max(jnp.abs(new_S - d_S)) / jnp.maximum(1.0, jnp.max(new_S))

    d_S, _, _ = jax.lax.while_loop(cond, body, (init_S, jnp.int32(0), jnp.float32(jnp.inf)))
    return d_S[:, None] * acting_SA


def feature_expectations(visitation_SA: jax.Array, features_SAF: jax.Array) -> jax.Array:
    """mu = sum_{s,a} D(s, a) phi(s, a), [F]."""
    return jnp.einsum("sa,saf->f", visitation_SA, features_SAF)
