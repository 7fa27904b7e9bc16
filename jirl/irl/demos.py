"""Trajectories: sampling them from a policy (jitted, vmapped over N), validating and loading them.

A batch of N trajectories of at most T actions is padded:

    states_NT1[n, t]   s_t for t = 0..T (after the episode ends: the last state, repeated)
    actions_NT[n, t]   a_t (0 after the end)
    mask_NT[n, t]      1 where a_t was taken

An episode ends on entering a terminal state or after T actions (truncated).
"""

from __future__ import annotations

import functools
import json
import os
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jirl.errors import ConfigError
from jirl.irl.mdp import MDP


class Trajectories(NamedTuple):
    states_NT1: jax.Array
    actions_NT: jax.Array
    mask_NT: jax.Array

    @property
    def lengths_N(self) -> np.ndarray:
        """Actions taken in each trajectory (host side)."""
        return np.asarray(self.mask_NT).sum(-1).astype(np.int32)

    @property
    def num(self) -> int:
        return self.actions_NT.shape[0]


def draw_uniforms(key: jax.Array, shape: tuple[int, ...], stream: int = 0) -> jax.Array:
    """U[0, 1) numbers for `key` (a threefry key) and `stream`, drawn with XLA's RngBitGenerator.

    Threefry is slow to compile on XLA:CPU (~0.5 s per use); the bit generator is not, and these
    draws only feed simulations.
    """
    data = jax.random.key_data(key).ravel()[-2:].astype(jnp.uint32)
    salt = jnp.asarray([stream, 0x9E3779B9], jnp.uint32)
    return jax.random.uniform(
        jax.random.wrap_key_data(jnp.concatenate([data, salt]), impl="unsafe_rbg"), shape
    )


def inverse_cdf(weights_K: jax.Array, u: jax.Array) -> jax.Array:
    """The index k drawn with probability weights_K[k] / sum(weights_K) from u ~ U[0, 1).

    Never an index of zero weight (a u that rounds past the end gives the last positive one).
    """
    cdf_K = jnp.cumsum(weights_K)
    index = jnp.sum(cdf_K <= u * cdf_K[-1])
    last_positive = weights_K.shape[0] - 1 - jnp.argmax(weights_K[::-1] > 0)
    return jnp.minimum(index, last_positive).astype(jnp.int32)


def rollout(
    key: jax.Array,
    mdp: MDP,
    choose: Callable[[jax.Array, jax.Array], jax.Array],
    start_N: jax.Array,
    horizon: int,
    uniforms: int = 1,
) -> Trajectories:
    """Roll out `choose(u, state) -> action` from each start state for up to `horizon` actions.

    All randomness is drawn up front (one call, U[0, 1)): `choose` gets `uniforms` of them per step,
    and one more picks the successor. Keeping random-number generation out of the scan body keeps
    the compile short.
    """
    u_NTU = draw_uniforms(key, (start_N.shape[0], horizon, uniforms + 1), 1)

    def one(start, u_TU):
        def step(carry, u_U):
            s, done = carry
            a = choose(u_U[:uniforms], s)
            k = inverse_cdf(mdp.prob_SAK[s, a], u_U[uniforms])
            s_next = jnp.where(done, s, mdp.next_SAK[s, a, k])
            mask = 1.0 - done
            return (s_next, done | (mdp.terminal_S[s_next] > 0)), (s_next, jnp.where(done, 0, a), mask)

        done = mdp.terminal_S[start] > 0
        _, (states, actions, mask) = jax.lax.scan(step, (start, done), u_TU)
        return jnp.concatenate([start[None], states]), actions, mask

    states, actions, mask = jax.vmap(one)(start_N, u_NTU)
    return Trajectories(states.astype(jnp.int32), actions.astype(jnp.int32), mask.astype(jnp.float32))


@functools.partial(jax.jit, static_argnames=("n",))
def sample_starts(key: jax.Array, weights_S: jax.Array, n: int) -> jax.Array:
    """n states drawn from weights_S (normalised here), [n]."""
    return jax.vmap(lambda u: inverse_cdf(weights_S, u))(draw_uniforms(key, (n,), 2))


def _sample(key, mdp, log_policy_SA, start_N, horizon):
    choose = lambda u, s: inverse_cdf(jnp.exp(log_policy_SA[s]), u[0])
    return rollout(key, mdp, choose, start_N, horizon)


@functools.partial(jax.jit, static_argnames=("n", "horizon"))
def _sample_from_init(key, mdp, log_policy_SA, weights_S, *, n, horizon):
    return _sample(key, mdp, log_policy_SA, sample_starts(key, weights_S, n), horizon)


_sample_from = jax.jit(_sample, static_argnames=("horizon",))


def bucket(n: int) -> int:
    """The batch size actually simulated for n trajectories: a power of two, at least 32, so that a
    handful of compiled samplers serve every n (extra rows are dropped)."""
    return max(32, 1 << (int(n) - 1).bit_length())


def sample_trajectories(
    key: jax.Array,
    mdp: MDP,
    log_policy_SA: jax.Array,
    n: int,
    horizon: int,
    start_N: jax.Array | None = None,
) -> Trajectories:
    """N trajectories of the stochastic policy exp(log_policy_SA), from `start_N` or the MDP's init."""
    if start_N is None:
        out = _sample_from_init(key, mdp, log_policy_SA, mdp.init_S, n=bucket(n), horizon=horizon)
    else:
        start_N = np.asarray(start_N, np.int32)
        if start_N.shape != (n,):
            raise ConfigError(
                f"start_N has shape {start_N.shape}; accepted: one start state per trajectory, ({n},)."
            )
        padded = np.pad(start_N, (0, bucket(n) - start_N.shape[0]), mode="edge")
        out = _sample_from(key, mdp, log_policy_SA, padded, horizon)
    return host(out, n)


def host(trajectories: Trajectories, n: int | None = None) -> Trajectories:
    """The first n trajectories as NumPy arrays (host-side helpers below work on these)."""
    return Trajectories(*(np.asarray(x)[:n] for x in trajectories))


def final_states(trajectories: Trajectories) -> np.ndarray:
    """s_{len} of each trajectory, [N]."""
    return np.take_along_axis(np.asarray(trajectories.states_NT1), trajectories.lengths_N[:, None], 1)[:, 0]


def concatenate(first: Trajectories, second: Trajectories) -> Trajectories:
    """Row n: `first`'s actions, then `second`'s (which must start where `first` ended)."""
    f_len, s_len = np.asarray(first.lengths_N), np.asarray(second.lengths_N)
    total = first.actions_NT.shape[1] + second.actions_NT.shape[1]
    states = np.zeros((first.num, total + 1), np.int32)
    actions = np.zeros((first.num, total), np.int32)
    mask = np.zeros((first.num, total), np.float32)
    f_states, s_states = np.asarray(first.states_NT1), np.asarray(second.states_NT1)
    for n in range(first.num):
        a, b = f_len[n], s_len[n]
        if s_states[n, 0] != f_states[n, a]:
            raise ValueError(
                f"trajectory {n}: the second part starts at {s_states[n, 0]}, not {f_states[n, a]}."
            )
        states[n, : a + 1] = f_states[n, : a + 1]
        states[n, a + 1 : a + b + 1] = s_states[n, 1 : b + 1]
        states[n, a + b + 1 :] = states[n, a + b]
        actions[n, :a] = np.asarray(first.actions_NT)[n, :a]
        actions[n, a : a + b] = np.asarray(second.actions_NT)[n, :b]
        mask[n, : a + b] = 1.0
    return Trajectories(states, actions, mask)


def truncate(trajectories: Trajectories, steps_N: jax.Array) -> Trajectories:
    """Keep the first steps_N[n] actions of each trajectory (a partial observation)."""
    keep_NT = np.arange(trajectories.actions_NT.shape[1])[None] < np.asarray(steps_N)[:, None]
    return trajectories._replace(mask_NT=np.asarray(trajectories.mask_NT) * keep_NT)


def select(trajectories: Trajectories, index) -> Trajectories:
    return Trajectories(*(np.asarray(x)[index] for x in trajectories))


def merge(parts: Sequence[Trajectories]) -> Trajectories:
    """Concatenate batches along N (padding to the longest T)."""
    horizon = max(p.actions_NT.shape[1] for p in parts)
    out = []
    for p in parts:
        states, actions, mask = (np.asarray(x) for x in p)
        extra = horizon - actions.shape[1]
        out.append(
            (
                np.concatenate([states, np.repeat(states[:, -1:], extra, 1)], 1),
                np.pad(actions, ((0, 0), (0, extra))),
                np.pad(mask, ((0, 0), (0, extra))),
            )
        )
    return Trajectories(*(np.concatenate(x) for x in zip(*out)))


def action_counts(trajectories: Trajectories, num_states: int, num_actions: int) -> np.ndarray:
    """N(s, a): how often each (s, a) occurs in the trajectories, [S, A]."""
    states, actions, mask = (np.asarray(x) for x in trajectories)
    index = states[:, :-1] * num_actions + actions
    counts = np.bincount(index.ravel(), weights=mask.ravel(), minlength=num_states * num_actions)
    return counts.reshape(num_states, num_actions).astype(np.float32)


@jax.jit
def log_likelihood_per_step(log_policy_SA: jax.Array, trajectories: Trajectories) -> jax.Array:
    """Mean over all taken actions of log pi(a_t | s_t)."""
    logp_NT = log_policy_SA[trajectories.states_NT1[:, :-1], trajectories.actions_NT]
    return jnp.sum(jnp.where(trajectories.mask_NT > 0, logp_NT, 0.0)) / jnp.sum(trajectories.mask_NT)


# ------------------------------------------------------------------------- validation, loading


def from_lists(episodes: Sequence[dict], mdp: MDP, *, source: str = "trajectory") -> Trajectories:
    """Validated trajectories from [{"states": [s_0, ..., s_T], "actions": [a_0, ..., a_{T-1}]}, ...].

    `states` has one more entry than `actions` (the state the last action led to), or as many (the
    last action, whose outcome is not recorded, is then dropped). Every state must be in 0..S-1,
    every action in 0..A-1, and each s_{t+1} a possible successor of (s_t, a_t).
    """
    num_states, num_actions = mdp.num_states, mdp.num_actions
    next_SAK, prob_SAK = np.asarray(mdp.next_SAK), np.asarray(mdp.prob_SAK)
    rows = []
    for n, episode in enumerate(episodes):
        if not isinstance(episode, dict) or "states" not in episode or "actions" not in episode:
            raise ConfigError(f"{source} {n} must be an object with 'states' and 'actions' lists.")
        states = [int(s) for s in episode["states"]]
        actions = [int(a) for a in episode["actions"]]
        if len(states) == len(actions):
            states, actions = states, actions[:-1]
        if len(states) != len(actions) + 1 or not actions:
            raise ConfigError(
                f"{source} {n} has {len(states)} states and {len(actions)} actions; accepted: at least one "
                "action, and one state more than actions."
            )
        for t, s in enumerate(states):
            if not 0 <= s < num_states:
                raise ConfigError(
                    f"{source} {n} has state {s} at step {t}, out of range; accepted: 0..{num_states - 1}."
                )
        for t, a in enumerate(actions):
            if not 0 <= a < num_actions:
                raise ConfigError(
                    f"{source} {n} has action {a} at step {t}, out of range; accepted: 0..{num_actions - 1}."
                )
            s, s_next = states[t], states[t + 1]
            if not np.any((next_SAK[s, a] == s_next) & (prob_SAK[s, a] > 0)):
                raise ConfigError(
                    f"{source} {n} moves from state {s} by action {a} to state {s_next} at step {t}, which "
                    "the transitions do not allow."
                )
        rows.append((states, actions))
    if not rows:
        raise ConfigError(f"no {source}s given; accepted: a list of {{'states': [...], 'actions': [...]}}.")
    horizon = max(len(a) for _, a in rows)
    states_NT1 = np.zeros((len(rows), horizon + 1), np.int32)
    actions_NT = np.zeros((len(rows), horizon), np.int32)
    mask_NT = np.zeros((len(rows), horizon), np.float32)
    for n, (states, actions) in enumerate(rows):
        states_NT1[n, : len(states)] = states
        states_NT1[n, len(states) :] = states[-1]
        actions_NT[n, : len(actions)] = actions
        mask_NT[n, : len(actions)] = 1.0
    return Trajectories(states_NT1, actions_NT, mask_NT)


def load(path: str, mdp: MDP) -> Trajectories:
    """Trajectories from a JSON-lines file, one {"states": [...], "actions": [...]} per line."""
    if not os.path.isfile(path):
        raise ConfigError(f"demonstrations file '{path}' does not exist.")
    episodes = []
    with open(path) as f:
        for i, line in enumerate(f, 1):
            if line.strip():
                try:
                    episodes.append(json.loads(line))
                except json.JSONDecodeError:
                    raise ConfigError(f"{path}:{i} is not a JSON object.") from None
    return from_lists(episodes, mdp, source=f"{os.path.basename(path)} trajectory")


def to_lists(trajectories: Trajectories) -> list[dict]:
    """The inverse of `from_lists` (for writing demonstrations)."""
    out = []
    for states, actions, mask in zip(*(np.asarray(x) for x in trajectories)):
        n = int(mask.sum())
        out.append({"states": states[: n + 1].tolist(), "actions": actions[:n].tolist()})
    return out
