"""Abnormal behaviour: a per-trajectory score under the learned model, and injected abnormal sets.

    score(trajectory) = -(1/T) sum_t log pi_w(a_t | s_t)      (per-step negative log-likelihood)

Higher is more abnormal; ROC-AUC (`stats.roc_auc`) measures how well the score separates held-out
normal trajectories from injected abnormal ones:

    wrong_goal  an agent with the same reward heading for another goal
    detour      an agent that first visits a waypoint, then the goal
    erratic     at every step, with probability p, a uniformly random action
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jirl.errors import ConfigError
from jirl.irl import demos as demos_lib
from jirl.irl import stats
from jirl.irl.mdp import MDP

KINDS = ("wrong_goal", "detour", "erratic")


@jax.jit
def scores(log_policy_SA: jax.Array, trajectories: demos_lib.Trajectories) -> jax.Array:
    """Per-step negative log-likelihood of each trajectory, [N]."""
    logp_NT = log_policy_SA[trajectories.states_NT1[:, :-1], trajectories.actions_NT]
    total_N = jnp.sum(jnp.where(trajectories.mask_NT > 0, logp_NT, 0.0), -1)
    return -total_N / jnp.maximum(jnp.sum(trajectories.mask_NT, -1), 1.0)


def erratic_policy(log_policy_SA: jax.Array, prob: float) -> jax.Array:
    """log((1 - p) pi + p / A)."""
    num_actions = log_policy_SA.shape[-1]
    return jnp.logaddexp(jnp.log1p(-prob) + log_policy_SA, jnp.log(prob / num_actions))


def _starts(key, mdp: MDP, avoid_S: jax.Array, n: int) -> jax.Array:
    return demos_lib.sample_starts(key, mdp.init_S * (1.0 - avoid_S), n)


def inject(
    key: jax.Array,
    mdp: MDP,
    log_policy_SA: jax.Array,
    *,
    kinds: Sequence[str] = KINDS,
    per_kind: int,
    horizon: int,
    other_goal_mdps: MDP,
    other_goal_log_policies: jax.Array,
    waypoint_mdps: MDP,
    waypoint_log_policies: jax.Array,
    erratic_prob: float = 0.3,
) -> dict[str, demos_lib.Trajectories]:
    """Abnormal trajectories of each kind, starting from the MDP's start distribution.

    log_policy_SA: the normal agent (true reward, true goal). other_goal_*: a batch (leading axis)
    of MDPs and policies for wrong goals; waypoint_*: the same for detour waypoints.
    """
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise ConfigError(f"unknown anomaly kind(s) {unknown}; accepted: {list(KINDS)}.")
    out = {}
    keys = dict(zip(KINDS, jax.random.split(key, len(KINDS))))

    def batch(item_mdps, item_policies, key, fn):
        # The same n for every item (one compiled sampler), then the first per_kind rows.
        count = item_policies.shape[0]
        n, parts = -(-per_kind // count), []
        for i, key_i in enumerate(jax.random.split(key, count)):
            item = jax.tree_util.tree_map(lambda x: np.asarray(x)[i], item_mdps)
            parts.append(fn(key_i, item, item_policies[i], n))
        merged = demos_lib.merge(parts)
        order = np.argsort(np.arange(merged.num) % n, kind="stable")[:per_kind]  # items interleaved
        return demos_lib.select(merged, order)

    if "wrong_goal" in kinds:

        def wrong(key, goal_mdp, policy, n):
            k1, k2 = jax.random.split(key)
            start_N = _starts(k1, mdp, goal_mdp.terminal_S, n)
            return demos_lib.sample_trajectories(k2, goal_mdp, policy, n, horizon, start_N)

        out["wrong_goal"] = batch(other_goal_mdps, other_goal_log_policies, keys["wrong_goal"], wrong)
    if "detour" in kinds:

        def detour(key, way_mdp, policy, n):
            k1, k2, k3 = jax.random.split(key, 3)
            start_N = _starts(k1, mdp, way_mdp.terminal_S, n)
            first = demos_lib.sample_trajectories(k2, way_mdp, policy, n, horizon, start_N)
            second = demos_lib.sample_trajectories(
                k3, mdp, log_policy_SA, n, horizon, demos_lib.final_states(first)
            )
            return demos_lib.concatenate(first, second)

        out["detour"] = batch(waypoint_mdps, waypoint_log_policies, keys["detour"], detour)
    if "erratic" in kinds:
        out["erratic"] = demos_lib.sample_trajectories(
            keys["erratic"], mdp, erratic_policy(log_policy_SA, erratic_prob), per_kind, horizon
        )
    return {k: v for k, v in out.items() if v.num}


def evaluate(log_policy_SA: jax.Array, normal: demos_lib.Trajectories, abnormal: dict) -> dict:
    """ROC-AUC of the score, all injected kinds together and per kind; the scores for plotting."""
    normal_scores = np.asarray(scores(log_policy_SA, normal))
    kind_scores = {k: np.asarray(scores(log_policy_SA, t)) for k, t in abnormal.items()}
    all_abnormal = np.concatenate(list(kind_scores.values()))
    return {
        "auc": stats.roc_auc(normal_scores, all_abnormal),
        "auc_by_kind": {k: stats.roc_auc(normal_scores, s) for k, s in kind_scores.items()},
        "normal_scores": normal_scores,
        "abnormal_scores": kind_scores,
    }
