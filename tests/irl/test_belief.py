"""Exact belief planning on a small instance: reduces to the MDP, lies between its bounds, is compared."""

import itertools

import jax.numpy as jnp
import numpy as np
import pytest

from jirl.irl import belief, soft_vi


def _mdp_value_at_start(world, cost_of_uncertain):
    mdp, _ = belief.mean_cost_mdp(world)
    cost_S = np.full(world.size**2, world.base_cost)
    cost_S[list(world.uncertain)] = cost_of_uncertain
    reward_SA = belief._reward(world, mdp, jnp.asarray(cost_S, jnp.float32))
    return float(soft_vi.value_iteration(mdp, reward_SA).value_S[world.start])


def test_without_uncertain_cells_it_is_value_iteration():
    world = belief.CostWorld(size=4, start=0, goal=15, uncertain=())
    exact = belief.solve_exact(world)
    assert exact["belief_states"] == 15  # every non-goal cell, one belief each
    assert exact["value"] == pytest.approx(_mdp_value_at_start(world, []), rel=1e-5)
    np.testing.assert_allclose(exact["policy_SA"].sum(-1), 1.0)


def test_value_lies_between_acting_blind_and_knowing_everything():
    """V(mean-cost MDP) <= V(POMDP) <= E_h V(MDP of world h): information helps, clairvoyance more."""
    world = belief.random_world(4, 2, seed=0, low=1.0, high=8.0, p_low=0.5)
    exact = belief.solve_exact(world)
    blind = _mdp_value_at_start(world, [4.5, 4.5])
    clairvoyant = np.mean(
        [_mdp_value_at_start(world, list(costs)) for costs in itertools.product((1.0, 8.0), repeat=2)]
    )
    assert blind - 1e-4 <= exact["value"] <= clairvoyant + 1e-4
    assert blind < clairvoyant


def test_belief_count_grows_with_the_uncertain_cells():
    counts = [belief.solve_exact(belief.random_world(5, u, seed=1))["belief_states"] for u in (0, 2, 4)]
    assert counts[0] < counts[1] < counts[2]


def test_compare_reports_times_and_distances():
    result = belief.compare(belief.random_world(4, 2, seed=0), repeats=1, worlds=64)
    assert result["belief_states"] > 0 and result["exact_seconds"] > 0
    for model in ("value_noise", "boltzmann", "value_noise_per_successor"):
        assert 0.0 <= result[model]["total_variation"] <= 1.0
    assert result["value_noise"]["seconds"] > 0 and result["value_noise"]["fitted"] > 0
    with pytest.raises(ValueError, match="num_uncertain=99"):
        belief.random_world(4, 99)
