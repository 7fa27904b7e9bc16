"""Abnormal behaviour: the per-step NLL score separates held-out normal trajectories from injected ones."""

import jax
import numpy as np
import pytest

from jirl.irl import anomaly
from jirl.irl import demos as demos_lib
from jirl.irl.stages import abnormal_set


@pytest.fixture(scope="module")
def injected(world, expert, config):
    mdp, layout, _ = world
    goal = layout.landmarks["goal"]
    width = config.world.width
    others = [r * width + c for r, c in config.intent.goals if r * width + c != goal]
    abnormal, waypoints = abnormal_set(
        config, jax.random.PRNGKey(11), mdp, layout, expert.log_policy_SA, others
    )
    return abnormal, waypoints, others


def test_injected_kinds(injected, world, config):
    abnormal, waypoints, others = injected
    mdp = world[0]
    assert sorted(abnormal) == sorted(anomaly.KINDS)
    assert all(t.num == config.anomaly.per_kind for t in abnormal.values())
    finals = np.asarray(demos_lib.final_states(abnormal["wrong_goal"]))
    assert np.isin(finals, others).mean() > 0.9  # they head for (and mostly reach) the other goals
    detour = abnormal["detour"]
    visited = [
        set(np.asarray(detour.states_NT1)[n, : int(detour.lengths_N[n]) + 1]) for n in range(detour.num)
    ]
    assert np.mean([bool(v & set(waypoints)) for v in visited]) > 0.9
    goal = int(np.flatnonzero(np.asarray(mdp.terminal_S))[0])
    assert np.mean(np.asarray(demos_lib.final_states(detour)) == goal) > 0.8


def test_scores_are_the_per_step_nll(irl_fit, demos):
    test = demos_lib.select(demos[1], slice(0, 5))
    scores = np.asarray(anomaly.scores(irl_fit.log_policy_SA, test))
    logp = np.asarray(irl_fit.log_policy_SA)
    for n in range(5):
        length = int(test.lengths_N[n])
        steps = [logp[test.states_NT1[n, t], test.actions_NT[n, t]] for t in range(length)]
        assert scores[n] == pytest.approx(-np.mean(steps), rel=1e-5)


def test_roc_auc_above_0_9_on_the_injected_set(irl_fit, demos, injected):
    abnormal = injected[0]
    found = anomaly.evaluate(irl_fit.log_policy_SA, demos[1], abnormal)
    assert found["auc"] > 0.9, found["auc_by_kind"]
    assert set(found["auc_by_kind"]) == set(anomaly.KINDS)


def test_unknown_kind(world, expert):
    mdp = world[0]
    with pytest.raises(ValueError, match=r"unknown anomaly kind\(s\) \['teleport'\]"):
        anomaly.inject(
            jax.random.PRNGKey(0),
            mdp,
            expert.log_policy_SA,
            kinds=("teleport",),
            per_kind=1,
            horizon=5,
            other_goal_mdps=None,
            other_goal_log_policies=None,
            waypoint_mdps=None,
            waypoint_log_policies=None,
        )
