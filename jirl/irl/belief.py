"""An exact POMDP-style belief computation on a small instance, to price the value-noise shortcut.

The world: a size x size grid, 8 moves (into a wall: stay), a terminal goal. Entering a cell costs
its cost (plus `diagonal_cost` for a diagonal move). Most cells cost `base_cost`; each of U
uncertain cells independently costs `low` (probability p_low) or `high`. The agent knows the prior,
and sees the true cost of every uncertain cell within Chebyshev distance `radius` of where it stands.

Exact planning: the belief is, per uncertain cell, unknown / low / high (3^U values); the reachable
(cell, belief) pairs are enumerated from the start and solved by value iteration over them,

    V(c, b) = max_a [ -cost_b(c'_a) + gamma sum_o P(o | b, c'_a) V(c'_a, b + o) ],

where o are the costs newly seen from c'_a. Seen from outside (the world drawn from the prior), the
agent's action distribution at cell c is the visitation-weighted mixture of its choices over the
beliefs it can hold there. The value-noise approximation plans once on the prior-mean costs and
adds N(0, sigma^2) to the successors' values (`rationality`); `compare` times both and measures
the total-variation distance between their action distributions.
"""

from __future__ import annotations

import dataclasses
import itertools
import time

import jax
import jax.numpy as jnp
import numpy as np

from jirl.errors import ConfigError
from jirl.irl import rationality
from jirl.irl.mdp import ACTION_VECTORS_A2, ACTIONS, MDP, make_mdp


@dataclasses.dataclass(frozen=True)
class CostWorld:
    size: int
    start: int
    goal: int
    uncertain: tuple[int, ...]  # cells whose cost is low or high
    base_cost: float = 1.0
    low: float = 1.0
    high: float = 8.0
    p_low: float = 0.5
    diagonal_cost: float = 0.4
    radius: int = 1
    discount: float = 0.99

    def successor(self, cell: int, action: int) -> int:
        r, c = divmod(cell, self.size)
        nr, nc = r + ACTION_VECTORS_A2[action, 0], c + ACTION_VECTORS_A2[action, 1]
        return int(nr * self.size + nc) if 0 <= nr < self.size and 0 <= nc < self.size else cell

    def near(self, cell: int) -> list[int]:
        """Indices (into `uncertain`) of the uncertain cells the agent sees from `cell`."""
        r, c = divmod(cell, self.size)
        return [
            j
            for j, u in enumerate(self.uncertain)
            if max(abs(u // self.size - r), abs(u % self.size - c)) <= self.radius
        ]


def random_world(size: int = 5, num_uncertain: int = 4, seed: int = 0, **kwargs) -> CostWorld:
    """Start in the top-left corner, goal in the bottom-right, uncertain cells drawn near the diagonal."""
    rng = np.random.default_rng(seed)
    start, goal = 0, size * size - 1
    candidates = [c for c in range(size * size) if c not in (start, goal) and abs(c // size - c % size) <= 1]
    if not 0 <= num_uncertain <= len(candidates):
        raise ConfigError(
            f"num_uncertain={num_uncertain}; accepted: 0..{len(candidates)} on a {size} x {size} grid."
        )
    uncertain = tuple(sorted(int(c) for c in rng.choice(candidates, num_uncertain, replace=False)))
    return CostWorld(size=size, start=start, goal=goal, uncertain=uncertain, **kwargs)


def _observe(world: CostWorld, cell: int, belief: tuple[int, ...]):
    """[(probability, belief)] after seeing the uncertain cells near `cell` (1 = low, 2 = high)."""
    unknown = [j for j in world.near(cell) if belief[j] == 0]
    out = []
    for outcome in itertools.product((1, 2), repeat=len(unknown)):
        new = list(belief)
        p = 1.0
        for j, o in zip(unknown, outcome):
            new[j] = o
            p *= world.p_low if o == 1 else 1.0 - world.p_low
        if p > 0:
            out.append((p, tuple(new)))
    return out


def _cost(world: CostWorld, cell: int, belief: tuple[int, ...]) -> float:
    if cell in world.uncertain:
        status = belief[world.uncertain.index(cell)]
        if status == 0:  # never happens with radius >= 1: a cell is seen before it is entered
            return world.p_low * world.low + (1 - world.p_low) * world.high
        return world.low if status == 1 else world.high
    return world.base_cost


def solve_exact(world: CostWorld, *, tol: float = 1e-10, max_iters: int = 100_000) -> dict:
    """Enumerate reachable (cell, belief), value-iterate, and mix the choices per cell (float64).

    Returns policy_SA (the action distribution at each cell seen from outside), visits_S (discounted
    visits per cell), value (expected discounted return from the start), belief_states (count).
    """
    num_actions = len(ACTIONS)
    index: dict = {}
    nodes: list = []

    def node(cell, belief):
        key = (cell, belief)
        if key not in index:
            index[key] = len(nodes)
            nodes.append(key)
        return index[key]

    start = [(p, node(world.start, b)) for p, b in _observe(world, world.start, (0,) * len(world.uncertain))]
    rewards, branches = [], []
    i = 0
    while i < len(nodes):  # breadth-first: nodes grows as successors are found
        cell, belief = nodes[i]
        row_r, row_b = [], []
        for a in range(num_actions):
            nxt = world.successor(cell, a)
            row_r.append(-_cost(world, nxt, belief) - world.diagonal_cost * (a % 2 == 1))
            row_b.append(
                [] if nxt == world.goal else [(p, node(nxt, b)) for p, b in _observe(world, nxt, belief)]
            )
        rewards.append(row_r)
        branches.append(row_b)
        i += 1
    n = len(nodes)
    k = max(len(b) for row in branches for b in row) or 1
    next_NAK = np.full((n, num_actions, k), n)  # index n: the terminal, V = 0
    prob_NAK = np.zeros((n, num_actions, k))
    for i, row in enumerate(branches):
        for a, outcomes in enumerate(row):
            for j, (p, target) in enumerate(outcomes):
                next_NAK[i, a, j], prob_NAK[i, a, j] = target, p
    reward_NA = np.asarray(rewards)
    value = np.zeros(n + 1)
    for _ in range(max_iters):
        q_NA = reward_NA + world.discount * (prob_NAK * value[next_NAK]).sum(-1)
        new = np.append(q_NA.max(-1), 0.0)
        if np.max(np.abs(new - value)) <= tol * max(1.0, np.abs(new).max()):
            value = new
            break
        value = new
    q_NA = reward_NA + world.discount * (prob_NAK * value[next_NAK]).sum(-1)
    best_NA = q_NA >= q_NA.max(-1, keepdims=True) - 1e-9 * max(1.0, np.abs(q_NA).max())
    policy_NA = best_NA / best_NA.sum(-1, keepdims=True)
    # Discounted visits d = start + gamma P_pi^T d over the (cell, belief) nodes.
    init_N = np.zeros(n + 1)
    for p, i in start:
        init_N[i] += p
    visits_N = init_N.copy()
    flow_NAK = policy_NA[..., None] * prob_NAK
    for _ in range(max_iters):
        new = init_N + world.discount * np.bincount(
            next_NAK.ravel(), weights=(visits_N[:n, None, None] * flow_NAK).ravel(), minlength=n + 1
        )
        new[n] = 0.0
        if np.max(np.abs(new - visits_N)) <= tol * max(1.0, new.max()):
            visits_N = new
            break
        visits_N = new
    cells_N = np.array([c for c, _ in nodes])
    num_cells = world.size * world.size
    visits_S = np.bincount(cells_N, weights=visits_N[:n], minlength=num_cells)
    mass_SA = np.zeros((num_cells, num_actions))
    np.add.at(mass_SA, cells_N, visits_N[:n, None] * policy_NA)
    policy_SA = np.where(
        visits_S[:, None] > 0, mass_SA / np.maximum(visits_S[:, None], 1e-300), 1 / num_actions
    )
    return {
        "policy_SA": policy_SA,
        "visits_S": visits_S,
        "value": float(sum(p * value[i] for p, i in start)),
        "belief_states": n,
    }


def mean_cost_mdp(world: CostWorld) -> tuple[MDP, jax.Array]:
    """The observer's MDP: every uncertain cell at its prior-mean cost; (mdp, reward_SA)."""
    num_cells, num_actions = world.size * world.size, len(ACTIONS)
    next_SA = np.array([[world.successor(c, a) for a in range(num_actions)] for c in range(num_cells)])
    terminal_S = np.zeros(num_cells)
    terminal_S[world.goal] = 1.0
    init_S = np.zeros(num_cells)
    init_S[world.start] = 1.0
    mdp = make_mdp(
        next_SA[..., None],
        np.ones((num_cells, num_actions, 1)),
        terminal_S=terminal_S,
        init_S=init_S,
        discount=world.discount,
    )
    cost_S = _costs(
        world, np.full((1, len(world.uncertain)), world.p_low * world.low + (1 - world.p_low) * world.high)
    )
    return mdp, _reward(world, mdp, cost_S[0])


def _costs(world: CostWorld, uncertain_HU) -> np.ndarray:
    cost_HS = np.full((len(uncertain_HU), world.size * world.size), world.base_cost)
    cost_HS[:, list(world.uncertain)] = uncertain_HU
    return cost_HS


def _reward(world: CostWorld, mdp: MDP, cost_S) -> jax.Array:
    diagonal_A = world.diagonal_cost * (np.arange(len(ACTIONS)) % 2 == 1)
    return -jnp.asarray(cost_S, jnp.float32)[mdp.next_SAK[..., 0]] - jnp.asarray(diagonal_A, jnp.float32)


@jax.jit
def _sampled_successor_values(mdp: MDP, reward_HSA, cost_HS):
    """Per successor s': mean and std over worlds h of W_h(s') = -cost_h(s') + gamma V*_h(s')."""
    value_HS = jax.vmap(lambda r: rationality.utilities(mdp, r, mdp.next_SAK[..., 0])[1])(reward_HSA)
    w_HS = -cost_HS + mdp.discount * value_HS
    return jnp.mean(w_HS, 0), jnp.std(w_HS, 0)


def per_successor_noise(world: CostWorld, mdp: MDP, *, worlds: int = 256, seed: int = 0):
    """(u_SA, noise_S) of value noise with a closed-form sigma per successor, from sampled worlds.

    Each sampled world h (uncertain costs drawn from the prior) is solved with full knowledge;
    u(s, a) = -diagonal(a) + mean_h W_h(s'_a) and noise(s') = std_h W_h(s'), so the agent acts on
    argmax_a -diagonal(a) + W(s'_a) with W(s') ~ N(mean, std^2) drawn per successor.
    """
    rng = np.random.default_rng(seed)
    low_HU = rng.uniform(size=(worlds, len(world.uncertain))) < world.p_low
    cost_HS = jnp.asarray(_costs(world, np.where(low_HU, world.low, world.high)), jnp.float32)
    reward_HSA = jax.vmap(lambda c: _reward(world, mdp, c))(cost_HS)
    mean_S, std_S = _sampled_successor_values(mdp, reward_HSA, cost_HS)
    diagonal_A = world.diagonal_cost * (np.arange(len(ACTIONS)) % 2 == 1)
    u_SA = mean_S[mdp.next_SAK[..., 0]] - jnp.asarray(diagonal_A, jnp.float32)
    return u_SA, std_S


def _median_seconds(fn, repeats):
    jax.block_until_ready(fn())  # compile, warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def compare(world: CostWorld, *, repeats: int = 3, worlds: int = 256) -> dict:
    """Exact belief planning vs value noise (and Boltzmann): time and action-distribution distance.

    Approximations, all over the observer's view (the world drawn from the prior):
      value_noise: plan on prior-mean costs, one sigma fitted to the exact action distribution;
      value_noise_per_successor: sigma(s') and the mean from `worlds` sampled worlds (no fit);
      boltzmann: plan on prior-mean costs, temperature fitted.
    Times are medians over `repeats` (JAX parts jitted and warm: compile excluded). Distance:
    total variation between action distributions at each cell, averaged over the exact agent's
    discounted visits.
    """
    exact_times = []
    for _ in range(repeats):
        start = time.perf_counter()
        exact = solve_exact(world)
        exact_times.append(time.perf_counter() - start)
    mdp, reward_SA = mean_cost_mdp(world)
    successor_SA = mdp.next_SAK[..., 0]
    weights_S = exact["visits_S"] / exact["visits_S"].sum()
    counts_SA = jnp.asarray(weights_S[:, None] * exact["policy_SA"], jnp.float32)
    u_SA, _ = rationality.utilities(mdp, reward_SA, successor_SA)
    noise_scale = jnp.float32(world.discount)

    def distance(log_probs_SA):
        probs_SA = np.exp(np.asarray(log_probs_SA, np.float64))
        return float((weights_S * 0.5 * np.abs(probs_SA - exact["policy_SA"]).sum(-1)).sum())

    result = {
        "grid": world.size,
        "uncertain_cells": len(world.uncertain),
        "belief_states": exact["belief_states"],
        "exact_seconds": float(np.median(exact_times)),
        "exact_value": exact["value"],
    }
    for model in ("value_noise", "boltzmann"):
        fitted = rationality.fit(model, u_SA, successor_SA, counts_SA, world.discount, lapse=1e-6)
        result[model] = {
            "fitted": fitted.param,
            "total_variation": distance(
                rationality.model_log_probs(fitted, u_SA, successor_SA, world.discount, 1e-6)
            ),
        }
    result["value_noise"]["seconds"] = _median_seconds(
        lambda: rationality.value_noise_log_probs(
            rationality.utilities(mdp, reward_SA, successor_SA)[0], successor_SA, noise_scale, 1e-6
        ),
        repeats,
    )

    def per_successor():
        per_u_SA, per_noise_S = per_successor_noise(world, mdp, worlds=worlds)
        return rationality.value_noise_log_probs(per_u_SA, successor_SA, per_noise_S, 1e-6)

    result["value_noise_per_successor"] = {
        "worlds": worlds,
        "total_variation": distance(per_successor()),
        "seconds": _median_seconds(per_successor, repeats),
    }
    result["speedup_value_noise"] = result["exact_seconds"] / result["value_noise"]["seconds"]
    result["speedup_per_successor"] = result["exact_seconds"] / result["value_noise_per_successor"]["seconds"]
    return result
