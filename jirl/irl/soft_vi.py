"""Soft value iteration, the policy it implies, and discounted state-action visitation frequencies.

Soft Bellman backup at temperature tau (tau = 1: MaxEnt / maximum causal entropy):

    Q(s, a) = r(s, a) + gamma * sum_s' P(s'|s, a) V(s'),    V(terminal) = 0
    V(s)    = tau * log sum_a exp(Q(s, a) / tau),            pi(a|s) = exp((Q(s, a) - V(s)) / tau)

iterated until max_s |V_new - V| <= tol * max(1, max_s |V|), or until that residual stalls (float32
round-off: the backup is a max-norm gamma-contraction, so it halves every ln 2 / (1 - gamma) sweeps
until then), or max_iters. `value_iteration` is
the hard backup (tau -> 0: V = max_a Q). Visitation: d = init + gamma * P_pi^T d over the states
where the agent acts, D(s, a) = d(s) pi(a|s) = E[sum_t gamma^t 1(s_t = s, a_t = a)]. Both
fixed-point solves take a warm start (`value_S`, `visits_S`): the stopping rule is the same, so a
warm start near the answer only saves sweeps (at discount 0.975 each 10x of error costs ~90).

Finite horizon H (exactly H backward sweeps, a time-dependent policy; Ziebart's recursion):

    V_H = 0,   Q_t = r + gamma * E[V_{t+1}(s')],   V_t = tau log sum_a exp(Q_t / tau),
    pi_t(a|s) = exp((Q_t(s, a) - V_t(s)) / tau)                          for t = H-1, ..., 0
    d_0 = init,   d_{t+1}(s') = sum_{s,a} d_t(s) pi_t(a|s) P(s'|s, a) (1 - terminal(s))
    D(s, a) = sum_{t<H} gamma^t d_t(s) pi_t(a|s)

(Q_{H-1} = r: the last action sees only its own reward). E_{s_0 ~ init}[V_0(s_0)] is the log
partition function of H-step trajectories and its gradient in r is D. Discount 1 is allowed here.
Everything is jitted; a stacked batch of MDPs goes through `jax.vmap`.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jirl.errors import ConfigError
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


def stall_window(discount) -> jax.Array:
    """Sweeps within which a gamma-contraction at least halves its residual, twice over, plus slack:
    a residual that has not halved in that many sweeps is float32 round-off, not convergence."""
    return jnp.int32(2.0 * jnp.log(2.0) / jnp.maximum(1.0 - discount, 1e-6)) + 8


def fixed_point(sweep, start, tol, discount, max_iters):
    """(x, sweeps, residual): x <- sweep(x) = (new x, residual, scale) until residual <= tol * scale,
    or the residual stalls (no halving within stall_window sweeps), or max_iters."""
    window = stall_window(discount)

    def cond(carry):
        _, i, residual, scale, _, mark_i = carry
        return (i < max_iters) & (residual > tol * scale) & (i - mark_i <= window)

    def body(carry):
        x, i, _, _, mark, mark_i = carry
        new_x, residual, scale = sweep(x)
        halved = residual <= 0.5 * mark
        mark, mark_i = jnp.where(halved, residual, mark), jnp.where(halved, i + 1, mark_i)
        return new_x, i + 1, residual, scale, mark, mark_i

    big = jnp.float32(jnp.finfo(jnp.float32).max)
    init = (start, jnp.int32(0), big, jnp.float32(1.0), big, jnp.int32(0))
    x, sweeps, residual, _, _, _ = jax.lax.while_loop(cond, body, init)
    return x, sweeps, residual


def _iterate(backup, mdp: MDP, reward_SA, value_S, tol, max_iters):
    def sweep(value_S):
        new_S = backup(q_values(mdp, reward_SA, value_S)) * (1.0 - mdp.terminal_S)
        return new_S, jnp.max(jnp.abs(new_S - value_S)), jnp.maximum(1.0, jnp.max(jnp.abs(new_S)))

    return fixed_point(sweep, value_S, tol, mdp.discount, max_iters)


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
def state_visitation(
    mdp: MDP,
    log_policy_SA: jax.Array,
    init_S: jax.Array | None = None,
    *,
    visits_S: jax.Array | None = None,
    tol: float = 1e-7,
    max_iters: int = MAX_ITERS,
) -> tuple[jax.Array, jax.Array]:
    """(d, sweeps): d = init + gamma * sum_{s,a} d(s) pi(a|s) P(.|s, a) over non-terminal s, iterated
    from `visits_S` (default: init) until |d_new - d|_1 <= tol * max(1, |d_new|_1), or until that
    change stalls (the sweep is an L1 gamma-contraction: only round-off stalls it)."""
    init_S = mdp.init_S if init_S is None else jnp.asarray(init_S, jnp.float32)
    acting_SA = jnp.exp(log_policy_SA) * (1.0 - mdp.terminal_S)[:, None]

    def sweep(d_S):
        new_S = init_S + mdp.discount * propagate(mdp, d_S[:, None] * acting_SA)
        return new_S, jnp.sum(jnp.abs(new_S - d_S)), jnp.maximum(1.0, jnp.sum(new_S))

    start_S = init_S if visits_S is None else visits_S
    d_S, sweeps, _ = fixed_point(sweep, start_S, tol, mdp.discount, max_iters)
    return d_S, sweeps


@jax.jit
def state_action_visitation(
    mdp: MDP,
    log_policy_SA: jax.Array,
    init_S: jax.Array | None = None,
    *,
    tol: float = 1e-7,
    max_iters: int = MAX_ITERS,
) -> jax.Array:
    """D(s, a) = E[sum_t gamma^t 1(s_t = s, a_t = a)] = d(s) pi(a|s) from `init_S` (default: the
    MDP's start), d from `state_visitation`."""
    d_S, _ = state_visitation(mdp, log_policy_SA, init_S, tol=tol, max_iters=max_iters)
    return d_S[:, None] * jnp.exp(log_policy_SA) * (1.0 - mdp.terminal_S)[:, None]


# ------------------------------------------------------------------------------ finite horizon


class HorizonSolution(NamedTuple):
    value_TS: jax.Array  # V_t for t = 0..H, [H + 1, S]; V_H = 0
    q_SA: jax.Array  # Q_0
    value_S: jax.Array  # V_0
    log_policy_SA: jax.Array  # log pi_0, the first step's policy (pi_t needs value_TS)


def check_horizon(horizon) -> int:
    """`horizon` as an int, or ConfigError unless it is a whole number >= 1."""
    if isinstance(horizon, bool) or int(horizon) != horizon or horizon < 1:
        raise ConfigError(f"horizon={horizon!r} must be a whole number of steps, at least 1.")
    return int(horizon)


def _soft_max(q_SA: jax.Array, tau: jax.Array) -> jax.Array:
    return tau * jax.nn.logsumexp(q_SA / tau, axis=-1)


def finite_horizon_values(mdp: MDP, reward_SA: jax.Array, horizon: int, temperature=1.0) -> jax.Array:
    """V_0..V_H, [H + 1, S]: exactly H soft backups from V_H = 0 (module docstring)."""
    return _finite_horizon_values(mdp, reward_SA, check_horizon(horizon), temperature)


@functools.partial(jax.jit, static_argnames=("horizon",))
def _finite_horizon_values(mdp: MDP, reward_SA: jax.Array, horizon: int, temperature=1.0) -> jax.Array:
    reward_SA = jnp.asarray(reward_SA, jnp.float32)
    tau = jnp.asarray(temperature, jnp.float32)

    def backup(value_S, _):
        new_S = _soft_max(q_values(mdp, reward_SA, value_S), tau) * (1.0 - mdp.terminal_S)
        return new_S, new_S

    last_S = jnp.zeros(mdp.num_states, jnp.float32)
    _, values_TS = jax.lax.scan(backup, last_S, None, length=horizon)  # V_{H-1}, ..., V_0
    return jnp.concatenate([values_TS[::-1], last_S[None]])


def finite_horizon_soft_vi(mdp: MDP, reward_SA: jax.Array, horizon: int, temperature=1.0) -> HorizonSolution:
    """The H-step soft values and the first step's Q and policy."""
    return _finite_horizon_soft_vi(mdp, reward_SA, check_horizon(horizon), temperature)


@functools.partial(jax.jit, static_argnames=("horizon",))
def _finite_horizon_soft_vi(mdp: MDP, reward_SA: jax.Array, horizon: int, temperature=1.0) -> HorizonSolution:
    value_TS = _finite_horizon_values(mdp, reward_SA, horizon, temperature)
    q_SA = q_values(mdp, jnp.asarray(reward_SA, jnp.float32), value_TS[1])
    log_policy_SA = jax.nn.log_softmax(q_SA / jnp.asarray(temperature, jnp.float32), axis=-1)
    return HorizonSolution(value_TS, q_SA, value_TS[0], log_policy_SA)


@jax.jit
def finite_horizon_visitation(
    mdp: MDP, reward_SA: jax.Array, value_TS: jax.Array, init_S: jax.Array | None = None, temperature=1.0
) -> jax.Array:
    """D(s, a) = sum_{t<H} gamma^t d_t(s) pi_t(a|s), [S, A]: H forward sweeps, pi_t recomputed from
    V_{t+1} (so only [H + 1, S] is stored, never [H, S, A])."""
    init_S = mdp.init_S if init_S is None else jnp.asarray(init_S, jnp.float32)
    reward_SA = jnp.asarray(reward_SA, jnp.float32)
    tau = jnp.asarray(temperature, jnp.float32)
    acting_S1 = (1.0 - mdp.terminal_S)[:, None]

    def forward(carry, next_value_S):
        mass_S, total_SA = carry  # mass_S = gamma^t d_t
        policy_SA = jax.nn.softmax(q_values(mdp, reward_SA, next_value_S) / tau, axis=-1)
        flow_SA = mass_S[:, None] * policy_SA * acting_S1
        return (mdp.discount * propagate(mdp, flow_SA), total_SA + flow_SA), None

    start = (init_S, jnp.zeros(reward_SA.shape, jnp.float32))
    (_, visits_SA), _ = jax.lax.scan(forward, start, value_TS[1:])
    return visits_SA


def feature_expectations(visitation_SA: jax.Array, features_SAF: jax.Array) -> jax.Array:
    """mu = sum_{s,a} D(s, a) phi(s, a), [F]."""
    return jnp.einsum("sa,saf->f", visitation_SA, features_SAF)
