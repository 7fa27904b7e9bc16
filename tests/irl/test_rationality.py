"""Value noise vs Boltzmann: the probit closed form against simulation; each model fits its own agent."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jirl.irl import demos as demos_lib
from jirl.irl import mdp as mdp_lib
from jirl.irl import rationality


@pytest.fixture(scope="module")
def utilities(world):
    mdp, _, reward_SA = world
    successor_SA = mdp_lib.deterministic_successors(mdp)
    u_SA, value_S = rationality.utilities(mdp, reward_SA, successor_SA)
    return mdp, successor_SA, u_SA


def simulate(u_SA, successor_SA, noise_S, states, draws, rng):
    """Brute force: eps per successor state, argmax, exact ties split evenly; action frequencies."""
    freqs = []
    for s in states:
        eps = rng.normal(size=(draws, len(noise_S))) * noise_S  # one draw for every state
        util = u_SA[s] + eps[:, successor_SA[s]]
        best = util >= util.max(1, keepdims=True)
        freqs.append((best / best.sum(1, keepdims=True)).mean(0))
    return np.array(freqs)


@pytest.mark.parametrize("per_successor", [False, True])
def test_probit_closed_form_matches_simulation(utilities, per_successor, rng):
    mdp, successor_SA, u_SA = utilities
    num_states = mdp.num_states
    noise_S = rng.uniform(0.5, 3.0, num_states) if per_successor else np.full(num_states, 0.99 * 1.5)
    noise = jnp.asarray(noise_S, jnp.float32) if per_successor else jnp.float32(noise_S[0])
    probs = np.exp(np.asarray(rationality.value_noise_log_probs(u_SA, successor_SA, noise, 0.0)))
    sums = probs[np.asarray(mdp.terminal_S) == 0].sum(-1)
    np.testing.assert_allclose(sums, 1.0, atol=1e-4 if per_successor else 1e-5)
    states = [0, 9, 23, 44, 55, 81]  # corners (shared successors: the walls), edges, inside
    draws = 100_000
    freqs = simulate(np.asarray(u_SA, np.float64), np.asarray(successor_SA), noise_S, states, draws, rng)
    stderr = np.sqrt(np.maximum(probs[states] * (1 - probs[states]), 1e-6) / draws)
    assert np.all(np.abs(probs[states] - freqs) <= 5 * stderr + 1e-4)


def test_shared_successors_win_once(utilities):
    """At a corner, bumping into either wall leads to the same cell: only the better bump can win."""
    mdp, successor_SA, u_SA = utilities
    log_probs = np.asarray(rationality.value_noise_log_probs(u_SA, successor_SA, 1.5, rationality.LAPSE))
    corner = 0
    stays = np.flatnonzero(np.asarray(successor_SA[corner]) == corner)
    assert len(stays) == 5  # n, ne, sw, w, nw from the top-left corner
    u = np.asarray(u_SA[corner])
    best = stays[u[stays] == u[stays].max()]
    dominated = np.setdiff1d(stays, best)
    np.testing.assert_allclose(np.exp(log_probs[corner, dominated]), rationality.LAPSE / 8, rtol=1e-4)


def test_boltzmann_is_a_softmax(utilities):
    _, _, u_SA = utilities
    log_probs = rationality.boltzmann_log_probs(u_SA, 0.7, 0.0)
    np.testing.assert_allclose(
        np.asarray(log_probs), np.asarray(jax.nn.log_softmax(u_SA / 0.7, -1)), atol=1e-5
    )


def test_value_noise_sampler_follows_the_closed_form(utilities):
    mdp, successor_SA, u_SA = utilities
    trajectories = rationality.sample_value_noise(
        jax.random.PRNGKey(3), mdp, u_SA, successor_SA, 1.5, 400, 60
    )
    counts = np.asarray(demos_lib.action_counts(trajectories, mdp.num_states, mdp.num_actions))
    probs = np.exp(np.asarray(rationality.value_noise_log_probs(u_SA, successor_SA, 0.99 * 1.5, 0.0)))
    busy = np.flatnonzero(counts.sum(-1) >= 200)
    assert len(busy) >= 3
    for s in busy:
        n = counts[s].sum()
        stderr = np.sqrt(np.maximum(probs[s] * (1 - probs[s]), 1e-4) / n)
        assert np.all(np.abs(counts[s] / n - probs[s]) <= 5 * stderr), s


@pytest.fixture(scope="module")
def agents(utilities, config):
    """Train and test demonstrations from a value-noise agent and from a Boltzmann agent."""
    mdp, successor_SA, u_SA = utilities
    rc = config.rationality
    keys = jax.random.split(jax.random.PRNGKey(7), 4)
    horizon = config.demos.horizon
    value_noise = [
        rationality.sample_value_noise(keys[i], mdp, u_SA, successor_SA, rc.sigma, n, horizon)
        for i, n in ((0, rc.train), (1, rc.test))
    ]
    boltzmann = [
        rationality.sample_boltzmann(keys[i], mdp, u_SA, rc.temperature, n, horizon)
        for i, n in ((2, rc.train), (3, rc.test))
    ]
    return {"value_noise": value_noise, "boltzmann": boltzmann}


@pytest.mark.parametrize("agent", ["value_noise", "boltzmann"])
def test_each_model_fits_its_own_agent_better(utilities, agents, agent, config):
    mdp, successor_SA, u_SA = utilities
    result = rationality.compare(mdp, u_SA, successor_SA, *agents[agent])
    assert result["better"] == agent, result
    truth = config.rationality.sigma if agent == "value_noise" else config.rationality.temperature
    assert result[agent]["fitted"] == pytest.approx(truth, rel=0.2)


def test_fit_refuses_unknown_models(utilities):
    mdp, successor_SA, u_SA = utilities
    with pytest.raises(
        ValueError, match=r"unknown choice model 'logit'; accepted: \['boltzmann', 'value_noise'\]"
    ):
        rationality.fit("logit", u_SA, successor_SA, jnp.ones_like(u_SA), 0.99)
