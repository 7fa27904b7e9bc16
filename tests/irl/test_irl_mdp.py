"""MDPs as arrays: generators, dense <-> sparse, validation of bad transitions, batches."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jirl.irl import mdp as mdp_lib


def test_gridworld_moves_walls_goal_and_start():
    mdp, layout = mdp_lib.gridworld(4, 5, goal=(3, 4), landmarks={"tower": (0, 2)}, seed=1)
    assert (mdp.num_states, mdp.num_actions, mdp.next_SAK.shape[-1]) == (20, 8, 1)
    assert mdp.next_SAK.dtype == jnp.int32 and mdp.prob_SAK.dtype == jnp.float32
    east, north = mdp_lib.ACTIONS.index("e"), mdp_lib.ACTIONS.index("n")
    assert int(mdp.next_SAK[0, east, 0]) == 1  # (0,0) -> (0,1)
    assert int(mdp.next_SAK[0, north, 0]) == 0  # into the wall: stay
    assert int(mdp.next_SAK[6, mdp_lib.ACTIONS.index("se"), 0]) == 12  # (1,1) -> (2,2)
    assert np.flatnonzero(np.asarray(mdp.terminal_S)).tolist() == [19]
    np.testing.assert_allclose(np.asarray(mdp.init_S), np.r_[np.full(19, 1 / 19), 0.0], rtol=1e-6)
    assert layout.landmarks == {"goal": 19, "tower": 2}
    np.testing.assert_allclose(np.asarray(mdp.dense()).sum(-1), 1.0, rtol=1e-6)


def test_gridworld_terrain_fractions_and_roads():
    _, layout = mdp_lib.gridworld(
        10, 10, goal=(9, 9), terrain_fractions=(0.5, 0.0, 0.3, 0.2), road_rows=(2,), road_cols=(6,), seed=3
    )
    grid = layout.terrain_S.reshape(10, 10)
    assert np.all(grid[2] == 1) and np.all(grid[:, 6] == 1)  # roads
    off_road = np.delete(np.delete(grid, 2, 0), 6, 1).ravel()
    counts = np.bincount(off_road, minlength=4) / off_road.size
    assert counts[2] > 0.15 and counts[3] > 0.08 and counts[0] > 0.35  # quantile cuts, roughly


def test_slippery_moves_are_three_successors_and_dense_round_trips():
    mdp, _ = mdp_lib.gridworld(5, 5, goal=(4, 4), move_probs=(0.8, 0.1, 0.1))
    assert mdp.next_SAK.shape == (25, 8, 3)
    P_SAS = np.asarray(mdp.dense(), np.float64)
    np.testing.assert_allclose(P_SAS.sum(-1), 1.0, rtol=1e-6)
    # (2,2) moving north: 0.8 north, 0.1 north-west, 0.1 north-east.
    row = P_SAS[12, 0]
    assert row[7] == pytest.approx(0.8) and row[6] == pytest.approx(0.1) and row[8] == pytest.approx(0.1)
    again = mdp_lib.make_mdp(P_SAS=P_SAS, terminal_S=mdp.terminal_S, discount=0.9)
    np.testing.assert_allclose(np.asarray(again.dense()), P_SAS, atol=1e-7)
    assert again.next_SAK.shape[-1] <= 3


def test_sparse_from_dense_keeps_exactly_the_support():
    rng = np.random.default_rng(0)
    P_SAS = rng.uniform(size=(6, 2, 6)) * (rng.uniform(size=(6, 2, 6)) < 0.4)
    P_SAS[..., 0] += 1e-3  # no empty row
    P_SAS /= P_SAS.sum(-1, keepdims=True)
    next_SAK, prob_SAK = mdp_lib.sparse_from_dense(P_SAS)
    assert next_SAK.shape[-1] == (P_SAS > 0).sum(-1).max()
    rebuilt = np.zeros_like(P_SAS)
    for s, a, k in np.ndindex(*next_SAK.shape):
        rebuilt[s, a, next_SAK[s, a, k]] += prob_SAK[s, a, k]
    np.testing.assert_array_equal(rebuilt, P_SAS)


def _scale_first_row(P_SAS):
    P_SAS = P_SAS.copy()
    P_SAS[0] *= 0.9
    return P_SAS


def _negative(P_SAS):
    P_SAS = P_SAS.copy()
    P_SAS[1, 1, 0], P_SAS[1, 1, 1] = -0.25, 0.75
    return P_SAS


@pytest.mark.parametrize(
    "change,message",
    [
        (_scale_first_row, r"P\(\.\|s=0, a=0\) sums to 0\.9 \(2 bad rows\); accepted: every row sums to 1"),
        (_negative, r"P\(\.\|s=1, a=1\)\[0\] = -0\.25; accepted: finite and >= 0"),
    ],
)
def test_bad_dense_transitions_name_the_row(change, message):
    with pytest.raises(ValueError, match=message):
        mdp_lib.make_mdp(P_SAS=change(np.full((4, 2, 4), 0.25)))


def test_bad_sparse_transitions_and_other_fields():
    next_SAK = np.zeros((3, 2, 1), np.int32)
    prob_SAK = np.ones((3, 2, 1))
    bad_next = next_SAK.copy()
    bad_next[2, 1, 0] = 3
    with pytest.raises(ValueError, match=r"next_SAK\[2, 1, 0\] = 3 is not a state; accepted: 0\.\.2"):
        mdp_lib.make_mdp(bad_next, prob_SAK)
    with pytest.raises(ValueError, match="must both be"):
        mdp_lib.make_mdp(next_SAK, prob_SAK[:, :1])
    with pytest.raises(ValueError, match="discount must be in"):
        mdp_lib.make_mdp(next_SAK, prob_SAK, discount=1.0)
    with pytest.raises(ValueError, match="sum 0.5"):
        mdp_lib.make_mdp(next_SAK, prob_SAK, init_S=[0.5, 0.0, 0.0])
    with pytest.raises(ValueError, match="terminal state 0"):
        mdp_lib.make_mdp(next_SAK, prob_SAK, terminal_S=[1, 0, 0], init_S=[1.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="either dense"):
        mdp_lib.make_mdp(next_SAK, prob_SAK, P_SAS=np.ones((3, 2, 3)) / 3)


def test_move_probs_that_do_not_sum_to_one_are_rejected():
    with pytest.raises(ValueError, match=r"sums to 0\.95 .*accepted: every row sums to 1"):
        mdp_lib.gridworld(4, 4, goal=(3, 3), move_probs=(0.8, 0.1, 0.05))
    with pytest.raises(ValueError, match="must have 3 entries"):
        mdp_lib.gridworld(4, 4, goal=(3, 3), move_probs=(0.9, 0.1))
    with pytest.raises(ValueError, match=r"goal at \(4, 0\) is outside"):
        mdp_lib.gridworld(4, 4, goal=(4, 0))


def test_road_graph_roads_go_both_ways_and_highways_stay():
    mdp, layout = mdp_lib.road_graph(12, 12, drop=0.4, highway_every=4, seed=2)
    next_SA = np.asarray(mdp.next_SAK[..., 0])
    moved = next_SA != np.arange(144)[:, None]
    for s, a in zip(*np.nonzero(moved)):
        assert next_SA[next_SA[s, a], (a + 4) % 8] == s  # the reverse road exists
    e = mdp_lib.ACTIONS.index("e")
    assert np.all(moved[np.arange(0, 11), e])  # row 0 is a highway: every eastward road kept
    assert 0.2 < moved.mean() < 0.9  # some local roads dropped
    assert set(np.unique(layout.terrain_S)) == {0, 1} and layout.terrain_names == ("highway", "local")
    assert float(mdp.terminal_S[143]) == 1.0


def test_deterministic_successors_and_its_refusal():
    mdp, _ = mdp_lib.gridworld(3, 3, goal=(2, 2))
    np.testing.assert_array_equal(
        np.asarray(mdp_lib.deterministic_successors(mdp)), np.asarray(mdp.next_SAK[..., 0])
    )
    slippery, _ = mdp_lib.gridworld(3, 3, goal=(2, 2), move_probs=(0.8, 0.2, 0.0))
    with pytest.raises(
        ValueError, match=r"needs deterministic transitions; P\(\.\|s=0, a=0\) has 2 successors"
    ):
        mdp_lib.deterministic_successors(slippery)


def test_stack_makes_a_batch_that_vmap_maps_over():
    a, layout = mdp_lib.gridworld(4, 4, goal=(3, 3))
    b, _ = mdp_lib.with_goal(a, layout, 0)
    batch = mdp_lib.stack([a, b])
    assert batch.next_SAK.shape == (2, 16, 8, 1) and batch.discount.shape == (2,)
    terminal_counts = jax.vmap(lambda m: jnp.sum(m.terminal_S))(batch)
    np.testing.assert_array_equal(np.asarray(terminal_counts), [1, 1])
    with pytest.raises(ValueError, match="must share"):
        mdp_lib.stack([a, mdp_lib.gridworld(3, 3, goal=(2, 2))[0]])
