"""Trajectories: the sampler follows the policy, stops at the goal, and bad trajectories are named."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jirl.irl import demos as demos_lib


def test_sampler_follows_the_policy_and_stops_at_the_goal(world, expert, demos):
    mdp = world[0]
    train = demos[0]
    states, actions, mask = (np.asarray(x) for x in train)
    lengths = mask.sum(1).astype(int)
    goal = int(np.flatnonzero(np.asarray(mdp.terminal_S))[0])
    next_SA = np.asarray(mdp.next_SAK[..., 0])
    for n in range(train.num):
        assert np.all(mask[n, : lengths[n]] == 1) and np.all(mask[n, lengths[n] :] == 0)
        assert np.all(next_SA[states[n, :-1], actions[n]][: lengths[n]] == states[n, 1 : lengths[n] + 1])
        if lengths[n] < actions.shape[1]:
            assert states[n, lengths[n]] == goal
        assert goal not in states[n, : lengths[n]]
    # Action frequencies at the start states match the policy (chi-square-like bound).
    pooled = demos_lib.merge(
        [
            demos_lib.sample_trajectories(jax.random.PRNGKey(i), mdp, expert.log_policy_SA, 200, 60)
            for i in range(3)
        ]
    )
    counts = np.asarray(demos_lib.action_counts(pooled, mdp.num_states, mdp.num_actions))
    probs = np.exp(np.asarray(expert.log_policy_SA))
    busy = np.flatnonzero(counts.sum(1) >= 150)
    assert len(busy) >= 3
    for s in busy:
        n = counts[s].sum()
        stderr = np.sqrt(np.maximum(probs[s] * (1 - probs[s]), 1e-4) / n)
        assert np.all(np.abs(counts[s] / n - probs[s]) <= 5 * stderr), s


def test_starts_follow_the_weights():
    weights = jnp.asarray([0.0, 0.25, 0.0, 0.75])
    starts = np.asarray(demos_lib.sample_starts(jax.random.PRNGKey(0), weights, 4000))
    assert set(np.unique(starts)) == {1, 3}
    assert abs((starts == 3).mean() - 0.75) < 0.03
    u = jnp.asarray(np.nextafter(np.float32(1), np.float32(0)))  # the largest uniform never picks p = 0
    assert int(demos_lib.inverse_cdf(jnp.asarray([0.5, 0.5, 0.0]), u)) == 1


def test_round_trip_through_lists_and_files(world, demos, tmp_path):
    mdp = world[0]
    train = demos_lib.select(demos[0], slice(0, 5))
    path = tmp_path / "demos.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in demos_lib.to_lists(train)))
    loaded = demos_lib.load(str(path), mdp)
    horizon = int(np.asarray(train.lengths_N).max())
    np.testing.assert_array_equal(np.asarray(loaded.lengths_N), np.asarray(train.lengths_N))
    np.testing.assert_array_equal(np.asarray(loaded.actions_NT), np.asarray(train.actions_NT)[:, :horizon])


@pytest.mark.parametrize(
    "episode,message",
    [
        (
            {"states": [0, 1, 100], "actions": [2, 2]},
            r"has state 100 at step 2, out of range; accepted: 0\.\.99",
        ),
        ({"states": [0, -1], "actions": [2]}, r"has state -1 at step 1, out of range"),
        ({"states": [0, 1], "actions": [8]}, r"has action 8 at step 0, out of range; accepted: 0\.\.7"),
        ({"states": [0, 5], "actions": [2]}, r"moves from state 0 by action 2 to state 5 at step 0"),
        ({"states": [0, 1, 2, 3], "actions": [2]}, r"has 4 states and 1 actions"),
        ({"actions": [2]}, "must be an object with 'states' and 'actions'"),
    ],
)
def test_bad_trajectories_are_named(world, episode, message):
    with pytest.raises(ValueError, match=message):
        demos_lib.from_lists([{"states": [0, 1], "actions": [2]}, episode], world[0])


def test_bad_files(world, tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        demos_lib.load(str(tmp_path / "missing.jsonl"), world[0])
    path = tmp_path / "broken.jsonl"
    path.write_text('{"states": [0, 1], "actions": [2]}\nnot json\n')
    with pytest.raises(ValueError, match="broken.jsonl:2 is not a JSON object"):
        demos_lib.load(str(path), world[0])


def test_concatenate_and_truncate(world, expert):
    mdp = world[0]
    first = demos_lib.sample_trajectories(
        jax.random.PRNGKey(1), mdp, expert.log_policy_SA, 4, 3, start_N=jnp.zeros(4, jnp.int32)
    )
    second = demos_lib.sample_trajectories(
        jax.random.PRNGKey(2), mdp, expert.log_policy_SA, 4, 60, demos_lib.final_states(first)
    )
    joined = demos_lib.concatenate(first, second)
    np.testing.assert_array_equal(
        np.asarray(joined.lengths_N), np.asarray(first.lengths_N + second.lengths_N)
    )
    np.testing.assert_array_equal(
        np.asarray(demos_lib.final_states(joined)), np.asarray(demos_lib.final_states(second))
    )
    cut = demos_lib.truncate(joined, jnp.asarray([0, 1, 2, 100]))
    assert np.asarray(cut.lengths_N).tolist() == [0, 1, 2, int(joined.lengths_N[3])]
