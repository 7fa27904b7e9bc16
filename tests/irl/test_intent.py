"""Intent: the goal posterior from a prefix; accuracy grows with the fraction observed."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jirl.irl import demos as demos_lib
from jirl.irl import intent
from jirl.irl.stages import intent_set


@pytest.fixture(scope="module")
def goals(config):
    width = config.world.width
    return [r * width + c for r, c in config.intent.goals]


@pytest.fixture(scope="module")
def learned_policies(world, goals, irl_fit, config):
    mdp, layout, _ = world
    goal_mdps, _ = intent.goal_worlds(mdp, layout, goals)
    reward_GSA = intent.goal_features(tuple(config.features), mdp, layout, goals) @ irl_fit.weights_F
    return intent.goal_log_policies(goal_mdps, reward_GSA)


def test_posterior_is_a_distribution_and_starts_at_the_prior(learned_policies, world, goals, config):
    mdp, layout, _ = world
    trajectories, labels = intent_set(config, jax.random.PRNGKey(5), mdp, layout, goals)
    nothing = demos_lib.truncate(trajectories, jnp.zeros(trajectories.num, jnp.int32))
    prior = np.exp(np.asarray(intent.goal_log_posterior(learned_policies, nothing)))
    np.testing.assert_allclose(prior, 1 / len(goals), rtol=1e-6)
    posterior = np.exp(np.asarray(intent.goal_log_posterior(learned_policies, trajectories)))
    np.testing.assert_allclose(posterior.sum(-1), 1.0, rtol=1e-5)
    skewed = jnp.log(jnp.asarray([0.8, 0.1, 0.1]))
    with_prior = np.exp(np.asarray(intent.goal_log_posterior(learned_policies, nothing, skewed)))
    np.testing.assert_allclose(with_prior, np.broadcast_to([0.8, 0.1, 0.1], with_prior.shape), rtol=1e-5)


def test_passing_through_a_goal_rules_it_out(learned_policies, goals):
    """A trajectory that steps off goal g's cell was not heading for g."""
    start = goals[0]
    trajectory = demos_lib.Trajectories(
        jnp.asarray([[start, start - 1]]),
        jnp.asarray([[6]]),
        jnp.ones((1, 1)),  # action 6: west
    )
    posterior = np.exp(np.asarray(intent.goal_log_posterior(learned_policies, trajectory)))
    assert posterior[0, 0] == 0.0 and posterior[0, 1:].sum() == pytest.approx(1.0)


def test_accuracy_grows_with_the_fraction_observed(learned_policies, world, goals, config):
    mdp, layout, _ = world
    trajectories, labels = intent_set(config, jax.random.PRNGKey(6), mdp, layout, goals)
    fractions = [float(f) for f in config.intent.fractions]
    accuracy = intent.accuracy_by_fraction(learned_policies, trajectories, labels, fractions)
    assert accuracy[0] > 1 / len(goals)  # better than chance after a quarter of the trajectory
    assert accuracy[-1] >= accuracy[0] and accuracy[-1] > 0.9
    with pytest.raises(ValueError, match="intent fraction 1.5"):
        intent.accuracy_by_fraction(learned_policies, trajectories, labels, [1.5])
