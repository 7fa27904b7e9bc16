"""Intent: a posterior over candidate goals from a partial trajectory.

For each candidate goal g the world is re-solved with g as its terminal state (the features
recompiled, so `distance(goal)` follows g) under the same reward weights; the batch of goal MDPs
goes through one vmapped soft value iteration. Then, for a prefix of k actions,

    log P(g | s_0, a_0, ..., s_k) = log P(g) + sum_{t<k} log pi_g(a_t | s_t) - log Z.

A trajectory that passes through a goal's cell without stopping rules that goal out (the agent
does not act at its own goal: pi_g(. | g) = 0).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jirl.errors import ConfigError
from jirl.irl import soft_vi
from jirl.irl.demos import Trajectories, truncate
from jirl.irl.features import compile_features
from jirl.irl.mdp import MDP, Layout, stack, with_goal


def goal_worlds(mdp: MDP, layout: Layout, goals: Sequence[int]) -> tuple[MDP, list[Layout]]:
    """The batch of MDPs (leading axis G) with each goal as the terminal state, and their layouts."""
    worlds = [with_goal(mdp, layout, g) for g in goals]
    return stack([m for m, _ in worlds]), [lay for _, lay in worlds]


def goal_features(spec: Sequence[str], mdp: MDP, layout: Layout, goals: Sequence[int]) -> jax.Array:
    """features_GSAF: the feature list compiled for each goal."""
    return jnp.stack([compile_features(spec, *with_goal(mdp, layout, g))[0] for g in goals])


@jax.jit
def goal_log_policies(goal_mdps: MDP, reward_GSA: jax.Array, temperature=1.0) -> jax.Array:
    """log pi_g(a|s), [G, S, A]; -inf at each goal's own terminal state."""
    solve = lambda m, r: soft_vi.soft_value_iteration(m, r, temperature).log_policy_SA
    log_policy_GSA = jax.vmap(solve)(goal_mdps, reward_GSA)
    return jnp.where(goal_mdps.terminal_S[..., None] > 0, -jnp.inf, log_policy_GSA)


@jax.jit
def goal_log_posterior(
    log_policy_GSA: jax.Array, trajectories: Trajectories, log_prior_G: jax.Array | None = None
) -> jax.Array:
    """log P(g | observed actions), [N, G] (uniform prior by default)."""
    num_goals = log_policy_GSA.shape[0]
    if log_prior_G is None:
        log_prior_G = jnp.full(num_goals, -jnp.log(num_goals))
    states_NT, actions_NT = trajectories.states_NT1[:, :-1], trajectories.actions_NT
    logp_GNT = log_policy_GSA[:, states_NT, actions_NT]
    loglik_GN = jnp.sum(jnp.where(trajectories.mask_NT[None] > 0, logp_GNT, 0.0), -1)
    joint_NG = loglik_GN.T + log_prior_G
    return joint_NG - jax.nn.logsumexp(joint_NG, axis=-1, keepdims=True)


def accuracy_by_fraction(
    log_policy_GSA: jax.Array, trajectories: Trajectories, goal_index_N, fractions: Sequence[float]
) -> np.ndarray:
    """Fraction of trajectories whose most probable goal is the true one, after observing the first
    ceil(f * length) actions, for each f in `fractions`."""
    lengths_N = np.asarray(trajectories.lengths_N)
    out = []
    for f in fractions:
        if not 0.0 <= f <= 1.0:
            raise ConfigError(f"intent fraction {f}; accepted: 0 <= f <= 1.")
        steps_N = np.ceil(f * lengths_N).astype(np.int32)
        posterior_NG = np.asarray(goal_log_posterior(log_policy_GSA, truncate(trajectories, steps_N)))
        out.append(float(np.mean(posterior_NG.argmax(-1) == np.asarray(goal_index_N))))
    return np.asarray(out)
