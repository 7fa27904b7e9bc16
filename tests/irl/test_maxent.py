"""MaxEnt IRL recovers the reward: feature expectations match, states rank as under the true reward."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jirl.errors import ConfigError
from jirl.irl import demos as demos_lib
from jirl.irl import maxent, stats


def test_feature_expectations_match_within_one_percent(irl_fit):
    expert, model = np.asarray(irl_fit.expert_fe_F), np.asarray(irl_fit.model_fe_F)
    assert maxent.relative_gap(irl_fit.model_fe_F, irl_fit.expert_fe_F) < 0.01
    visible = np.abs(expert) >= 0.1  # every feature the demonstrations show at least a little
    np.testing.assert_allclose(model[visible], expert[visible], rtol=0.01)
    assert float(irl_fit.objective_K[-1]) < float(irl_fit.objective_K[0])


def test_recovered_reward_ranks_states_like_the_true_one(world, features, irl_fit):
    mdp, _, true_SA = world
    learned_SA = features[0] @ irl_fit.weights_F
    acting = np.asarray(mdp.terminal_S) == 0
    rho = stats.spearman(np.asarray(true_SA).mean(-1)[acting], np.asarray(learned_SA).mean(-1)[acting])
    assert rho > 0.9


def test_learned_policy_predicts_held_out_demos_like_the_true_one(expert, demos, irl_fit):
    test = demos[1]
    learned = float(demos_lib.log_likelihood_per_step(irl_fit.log_policy_SA, test))
    true = float(demos_lib.log_likelihood_per_step(expert.log_policy_SA, test))
    assert learned > -np.log(8) + 1.0  # far better than uniform
    assert abs(learned - true) < 0.05


def test_l2_optimum_is_stationary(world, features, demos, config):
    mdp = world[0]
    result = maxent.maxent_irl(mdp, features[0], demos[0], steps=config.irl.steps, l2=0.5)
    residual = result.model_fe_F - result.expert_fe_F + 0.5 * result.weights_F
    assert float(jnp.linalg.norm(residual)) < 1e-2 * float(jnp.linalg.norm(result.expert_fe_F))
    assert maxent.relative_gap(result.model_fe_F, result.expert_fe_F) > 1e-3  # the penalty pulls it off


def test_fit_weights_is_the_pure_core(world, features, demos, irl_fit, config):
    mdp, train = world[0], demos[0]
    expert_fe = maxent.expert_feature_expectations(features[0], train, mdp.discount)
    init = maxent.empirical_start(train, mdp.num_states)
    weights, values = jax.jit(
        lambda e, s: maxent.fit_weights(mdp, features[0], e, s, steps=config.irl.steps)
    )(expert_fe, init)
    # Inside one jit XLA rounds differently (and differently again with another number of threads),
    # and a line search amplifies that along the way: the end agrees to ~1e-3 (2e-4 seen on one
    # core), the path in between to ~1%.
    np.testing.assert_allclose(np.asarray(weights), np.asarray(irl_fit.weights_F), rtol=1e-3, atol=1e-4)
    assert values.shape == irl_fit.objective_K.shape
    np.testing.assert_allclose(
        np.asarray(values)[[0, -1]], np.asarray(irl_fit.objective_K)[[0, -1]], rtol=1e-5
    )
    np.testing.assert_allclose(np.asarray(values), np.asarray(irl_fit.objective_K), rtol=2e-2)


def test_bad_settings(world, features, demos):
    with pytest.raises(
        ValueError, match=r"unknown IRL optimizer 'newton'; accepted: \['lbfgs', 'adam', 'sgd'\]"
    ):
        maxent.maxent_irl(world[0], features[0], demos[0], optimizer="newton")
    with pytest.raises(ValueError, match="at least 1"):
        maxent.maxent_irl(world[0], features[0], demos[0], steps=0)
    with pytest.raises(ConfigError, match=r"^horizon=0 must be a whole number of steps, at least 1\.$"):
        maxent.maxent_irl(world[0], features[0], demos[0], horizon=0)
    with pytest.raises(ConfigError, match=r"^grad_tol=-1\.0 must be >= 0"):
        maxent.maxent_irl(world[0], features[0], demos[0], grad_tol=-1.0)


def test_warm_start_finds_the_cold_start_solution_in_fewer_sweeps(world, features, demos, irl_fit, config):
    cold = maxent.maxent_irl(world[0], features[0], demos[0], steps=config.irl.steps, warm_start=False)
    assert maxent.relative_gap(cold.model_fe_F, cold.expert_fe_F) < 1e-4
    assert maxent.relative_gap(irl_fit.model_fe_F, irl_fit.expert_fe_F) < 1e-4
    np.testing.assert_allclose(
        np.asarray(irl_fit.weights_F), np.asarray(cold.weights_F), rtol=1e-2, atol=1e-2
    )
    assert int(irl_fit.sweeps_K.sum()) < int(cold.sweeps_K.sum())


def test_lbfgs_counts_its_line_search_evaluations(irl_fit, config):
    evaluations = np.asarray(irl_fit.evaluations_K)
    assert evaluations.shape == (config.irl.steps,)
    assert evaluations[0] >= 1 and np.all((evaluations >= 0) & (evaluations <= maxent.MAX_LINESEARCH))
    assert np.all(np.asarray(irl_fit.sweeps_K)[evaluations > 0] > 0)
    assert np.all(np.asarray(irl_fit.sweeps_K)[evaluations == 0] == 0)  # steps after it stopped


def test_finite_horizon_matches_the_first_h_demo_steps(world, features, demos):
    mdp, horizon = world[0], 25
    result = maxent.maxent_irl(mdp, features[0], demos[0], steps=100, horizon=horizon)
    truncated = maxent.expert_feature_expectations(features[0], demos[0], mdp.discount, horizon)
    np.testing.assert_allclose(np.asarray(result.expert_fe_F), np.asarray(truncated))
    assert float(jnp.sum(jnp.abs(truncated))) < float(jnp.sum(jnp.abs(maxent.expert_feature_expectations(
        features[0], demos[0], mdp.discount))))  # fmt: skip
    assert maxent.relative_gap(result.model_fe_F, result.expert_fe_F) < 1e-4
    assert np.all(np.asarray(result.sweeps_K)[np.asarray(result.evaluations_K) == 1] == 2 * horizon)


def test_adam_warm_start_matches_cold(world, features, demos):
    run = lambda warm: maxent.maxent_irl(
        world[0], features[0], demos[0], steps=30, optimizer="adam", learning_rate=0.5, warm_start=warm
    )
    warm, cold = run(True), run(False)
    np.testing.assert_allclose(np.asarray(warm.weights_F), np.asarray(cold.weights_F), rtol=1e-3, atol=1e-3)
    assert int(warm.sweeps_K.sum()) < int(cold.sweeps_K.sum())
    assert np.all(np.asarray(warm.evaluations_K) == 1)
