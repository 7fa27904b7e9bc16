"""Soft value iteration and visitation against a float64 NumPy reference; the MaxEnt gradient identity.

Tolerances: JAX runs in float32 to a relative residual of 1e-6; the reference iterates in float64
to 1e-13. Values (|V| up to ~100 here) agree to 1e-4 relative, probabilities to 1e-4 absolute.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jirl.errors import ConfigError
from jirl.irl import maxent, soft_vi
from jirl.irl import mdp as mdp_lib


def reference_soft_vi(P_SAS, reward_SA, terminal_S, gamma, tau):
    """Dense float64 soft VI: (V, Q, log pi); tau = 0 is the hard max."""
    value_S = np.zeros(P_SAS.shape[0])
    for _ in range(100_000):
        q_SA = reward_SA + gamma * P_SAS @ (value_S * (1 - terminal_S))
        if tau == 0:
            new_S = q_SA.max(-1)
        else:
            m = q_SA.max(-1, keepdims=True)
            new_S = tau * (m[:, 0] / tau + np.log(np.exp((q_SA - m) / tau).sum(-1)))
        new_S = new_S * (1 - terminal_S)
        if np.max(np.abs(new_S - value_S)) < 1e-13 * max(1.0, np.abs(new_S).max()):
            value_S = new_S
            break
        value_S = new_S
    q_SA = reward_SA + gamma * P_SAS @ (value_S * (1 - terminal_S))
    if tau == 0:
        return value_S, q_SA, None
    z = (q_SA - q_SA.max(-1, keepdims=True)) / tau
    return value_S, q_SA, z - np.log(np.exp(z).sum(-1, keepdims=True))


def reference_visitation(P_SAS, policy_SA, terminal_S, init_S, gamma):
    """D(s, a) = d(s) pi(a|s) with d = (I - gamma M^T)^-1 init, M[s, s'] = sum_a pi P (1 - term(s))."""
    acting_SA = policy_SA * (1 - terminal_S)[:, None]
    M_SS = np.einsum("sa,sat->st", acting_SA, P_SAS)
    d_S = np.linalg.solve(np.eye(len(init_S)) - gamma * M_SS.T, init_S)
    return d_S[:, None] * acting_SA


def _worlds():
    rng = np.random.default_rng(0)
    grid, _ = mdp_lib.gridworld(6, 6, goal=(5, 5), move_probs=(0.8, 0.1, 0.1), discount=0.95, seed=1)
    roads, _ = mdp_lib.road_graph(7, 7, drop=0.3, highway_every=3, discount=0.9, seed=2)
    return {
        "slippery_grid": (grid, rng.uniform(-3.0, -0.5, (36, 8))),
        "road_graph": (roads, rng.uniform(-2.0, 0.5, (49, 8))),
    }


WORLDS = _worlds()


@pytest.mark.parametrize("name", sorted(WORLDS))
@pytest.mark.parametrize("tau", [1.0, 0.5, 0.0])
def test_matches_float64_reference(name, tau):
    mdp, reward_SA = WORLDS[name]
    P_SAS = np.asarray(mdp.dense(), np.float64)
    terminal_S, gamma = np.asarray(mdp.terminal_S, np.float64), float(mdp.discount)
    value_ref, q_ref, logp_ref = reference_soft_vi(P_SAS, reward_SA, terminal_S, gamma, tau)
    if tau == 0:
        solution = soft_vi.value_iteration(mdp, reward_SA)
    else:
        solution = soft_vi.soft_value_iteration(mdp, reward_SA, tau)
    assert solution.value_S.dtype == jnp.float32
    assert int(solution.iterations) < soft_vi.MAX_ITERS
    np.testing.assert_allclose(np.asarray(solution.value_S), value_ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(solution.q_SA), q_ref, rtol=1e-4, atol=1e-4)
    if tau:
        np.testing.assert_allclose(np.exp(np.asarray(solution.log_policy_SA)), np.exp(logp_ref), atol=1e-4)
        gamma32 = np.float32(gamma)
        visits = soft_vi.state_action_visitation(mdp, solution.log_policy_SA)
        reference = reference_visitation(
            P_SAS, np.exp(logp_ref), terminal_S, np.asarray(mdp.init_S, np.float64), gamma32
        )
        np.testing.assert_allclose(np.asarray(visits), reference, rtol=1e-4, atol=1e-5)


def test_hard_policy_is_uniform_over_the_argmax():
    mdp, _ = mdp_lib.gridworld(3, 3, goal=(2, 2))
    solution = soft_vi.value_iteration(mdp, -jnp.ones((9, 8)))
    policy = np.exp(np.asarray(solution.log_policy_SA))
    # From (0, 0) only the diagonal reaches the goal in two steps.
    assert policy[0, mdp_lib.ACTIONS.index("se")] == pytest.approx(1.0)
    # From (0, 2) two moves reach the goal in two steps (s, then s; or sw, then se): a tie.
    assert policy[2, mdp_lib.ACTIONS.index("s")] == pytest.approx(0.5)
    assert policy[2, mdp_lib.ACTIONS.index("sw")] == pytest.approx(0.5)


def test_convergence_is_reported(world):
    mdp, _, reward_SA = world
    full = soft_vi.soft_value_iteration(mdp, reward_SA)
    chex.assert_shape([full.q_SA, full.log_policy_SA], (mdp.num_states, mdp.num_actions))
    chex.assert_type([full.q_SA, full.value_S, full.log_policy_SA], jnp.float32)
    assert float(full.residual) <= soft_vi.TOL * max(1.0, float(jnp.max(jnp.abs(full.value_S))))
    cut = soft_vi.soft_value_iteration(mdp, reward_SA, max_iters=3)
    assert int(cut.iterations) == 3 and float(cut.residual) > 1.0


def test_vmap_over_a_batch_of_mdps_and_rewards(world):
    mdp, layout, reward_SA = world
    other, _ = mdp_lib.with_goal(mdp, layout, 0)
    batch = mdp_lib.stack([mdp, other])
    rewards = jnp.stack([reward_SA, reward_SA * 0.5])
    values = jax.vmap(lambda m, r: soft_vi.soft_value_iteration(m, r).value_S)(batch, rewards)
    np.testing.assert_allclose(
        np.asarray(values[0]), np.asarray(soft_vi.soft_value_iteration(mdp, reward_SA).value_S), rtol=1e-5
    )
    np.testing.assert_allclose(
        np.asarray(values[1]),
        np.asarray(soft_vi.soft_value_iteration(other, reward_SA * 0.5).value_S),
        rtol=1e-5,
    )


def test_maxent_gradient_is_the_feature_expectation_gap(world, features, demos):
    """d/dw of the discounted NLL (autodiff through unrolled soft VI) = mu_w - mu_E (soft_vi visits)."""
    mdp, _, _ = world
    features_SAF = features[0]
    train = demos[0]
    P_SAS = mdp.dense()
    weights = jnp.asarray([-3.0, -1.0, -8.0, -15.0, -5.0, -1.0, 0.1], jnp.float32)
    states_NT, actions_NT = train.states_NT1[:, :-1], train.actions_NT
    discounts_NT = train.mask_NT * mdp.discount ** jnp.arange(actions_NT.shape[1], dtype=jnp.float32)

    def nll(w):
        reward_SA = features_SAF @ w

        def backup(_, value_S):
            q_SA = reward_SA + mdp.discount * P_SAS @ (value_S * (1 - mdp.terminal_S))
            return jax.nn.logsumexp(q_SA, -1) * (1 - mdp.terminal_S)

        value_S = jax.lax.fori_loop(0, 2000, backup, jnp.zeros(mdp.num_states))
        q_SA = reward_SA + mdp.discount * P_SAS @ (value_S * (1 - mdp.terminal_S))
        log_pi = jax.nn.log_softmax(q_SA, -1)
        return -jnp.sum(discounts_NT * log_pi[states_NT, actions_NT]) / train.num

    expert_fe = maxent.expert_feature_expectations(features_SAF, train, mdp.discount)
    init_S = maxent.empirical_start(train, mdp.num_states)
    value, grad, _, _ = maxent.dual(weights, mdp, features_SAF, expert_fe, init_S)
    np.testing.assert_allclose(np.asarray(jax.grad(nll)(weights)), np.asarray(grad), rtol=2e-3, atol=2e-3)
    assert float(nll(weights)) == pytest.approx(float(value), rel=1e-4)  # deterministic: g(w) = NLL


def reference_finite_horizon(P_SAS, reward_SA, terminal_S, init_S, gamma, horizon):
    """Float64: (V_0..V_H, log pi_0, D) of the H-step recursion (soft_vi's module docstring)."""
    alive_S = 1 - terminal_S
    values = [np.zeros(len(init_S))]
    for _ in range(horizon):
        q_SA = reward_SA + gamma * P_SAS @ (values[-1] * alive_S)
        top = q_SA.max(-1)
        values.append((top + np.log(np.exp(q_SA - top[:, None]).sum(-1))) * alive_S)
    values = values[::-1]
    d_S, visits_SA, log_policy0 = init_S.copy(), np.zeros_like(reward_SA), None
    for t in range(horizon):
        q_SA = reward_SA + gamma * P_SAS @ (values[t + 1] * alive_S)
        log_policy = q_SA - q_SA.max(-1, keepdims=True)
        log_policy -= np.log(np.exp(log_policy).sum(-1, keepdims=True))
        log_policy0 = log_policy if t == 0 else log_policy0
        flow_SA = gamma**t * d_S[:, None] * np.exp(log_policy) * alive_S[:, None]
        visits_SA += flow_SA
        d_S = np.einsum("sa,sat->t", flow_SA, P_SAS) / gamma**t
    return np.stack(values), log_policy0, visits_SA


@pytest.mark.parametrize("name", sorted(WORLDS))
@pytest.mark.parametrize("horizon,gamma", [(1, None), (7, None), (40, None), (40, 1.0)])
def test_finite_horizon_matches_float64_reference(name, horizon, gamma):
    mdp, reward_SA = WORLDS[name]
    if gamma is not None:
        mdp = mdp.replace(discount=jnp.float32(gamma))
    P_SAS = np.asarray(mdp.dense(), np.float64)
    terminal_S, init_S = np.asarray(mdp.terminal_S, np.float64), np.asarray(mdp.init_S, np.float64)
    values, log_policy, visits = reference_finite_horizon(
        P_SAS, reward_SA, terminal_S, init_S, float(mdp.discount), horizon
    )
    solution = soft_vi.finite_horizon_soft_vi(mdp, reward_SA, horizon)
    chex.assert_shape(solution.value_TS, (horizon + 1, mdp.num_states))
    np.testing.assert_allclose(np.asarray(solution.value_TS), values, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(np.exp(np.asarray(solution.log_policy_SA)), np.exp(log_policy), atol=1e-5)
    got = soft_vi.finite_horizon_visitation(mdp, reward_SA, solution.value_TS)
    np.testing.assert_allclose(np.asarray(got), visits, rtol=1e-4, atol=1e-5)


def test_one_step_horizon_is_the_softmax_of_the_reward():
    mdp, reward_SA = WORLDS["road_graph"]
    solution = soft_vi.finite_horizon_soft_vi(mdp, reward_SA, 1)
    expected = jax.nn.log_softmax(jnp.asarray(reward_SA, jnp.float32), -1)
    np.testing.assert_allclose(np.asarray(solution.log_policy_SA), np.asarray(expected), atol=1e-6)


@pytest.mark.parametrize("horizon", [0, -3, 2.5, True])
def test_a_horizon_below_one_step_is_a_config_error(horizon):
    mdp, reward_SA = WORLDS["slippery_grid"]
    with pytest.raises(ConfigError, match=r"^horizon=.* must be a whole number of steps, at least 1\.$"):
        soft_vi.finite_horizon_soft_vi(mdp, reward_SA, horizon)


@pytest.mark.parametrize("name", sorted(WORLDS))
def test_warm_started_solves_land_where_cold_ones_do(name):
    mdp, reward_SA = WORLDS[name]
    cold = soft_vi.soft_value_iteration(mdp, reward_SA)
    nearby = soft_vi.soft_value_iteration(mdp, reward_SA * 1.05)
    warm = soft_vi.soft_value_iteration(mdp, reward_SA, value_S=nearby.value_S)
    assert int(warm.iterations) < int(cold.iterations)
    np.testing.assert_allclose(np.asarray(warm.value_S), np.asarray(cold.value_S), rtol=1e-5, atol=1e-5)
    visits_cold, sweeps_cold = soft_vi.state_visitation(mdp, cold.log_policy_SA)
    visits_near, _ = soft_vi.state_visitation(mdp, nearby.log_policy_SA)
    visits_warm, sweeps_warm = soft_vi.state_visitation(mdp, cold.log_policy_SA, visits_S=visits_near)
    assert int(sweeps_warm) < int(sweeps_cold)
    np.testing.assert_allclose(np.asarray(visits_warm), np.asarray(visits_cold), rtol=1e-5, atol=1e-6)


def test_a_stalled_residual_stops_the_solve():
    """A tolerance below float32 round-off stops within a stall window, not at max_iters."""
    mdp, reward_SA = WORLDS["slippery_grid"]
    solution = soft_vi.soft_value_iteration(mdp, reward_SA * 100.0, tol=0.0)
    assert int(solution.iterations) < 2_000
    assert float(solution.residual) <= 1e-5 * float(jnp.max(jnp.abs(solution.value_S)))
