"""MDPs as arrays: K-successor sparse transitions, terminal states, start distribution, discount.

    P(s' | s, a) = sum_k prob_SAK[s, a, k] * [next_SAK[s, a, k] == s']

A dense `P_SAS` is stored exactly as its nonzero support (K = the largest support of a row), so one
code path (a gather over K successors) serves both. Entering a terminal state ends the episode:
V(terminal) = 0 and the agent never acts there. Every array is a pytree leaf, so `stack` makes a
batch of MDPs (same S, A, K) that `jax.vmap` maps over.

Generators return `(mdp, layout)`: the layout is the host-side geometry (coordinates, terrain,
landmarks, regions, action names) that the instructed features are compiled from.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jirl.errors import ConfigError

ATOL = 1e-5  # how far a transition row or the start distribution may be from summing to 1

# The 8 compass moves in clockwise order (so a +-1 rotation is the neighbouring direction);
# (d_row, d_col) on a grid, with row 0 at the top.
ACTIONS = ("n", "ne", "e", "se", "s", "sw", "w", "nw")
ACTION_VECTORS_A2 = np.array([(-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1)], np.int32)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class MDP:
    """A finite MDP; build one with `make_mdp` (which validates), not directly."""

    next_SAK: jax.Array  # int32: the k-th possible successor of (s, a)
    prob_SAK: jax.Array  # float32: its probability; each [s, a] row sums to 1
    terminal_S: jax.Array  # float32: 1 where entering ends the episode
    init_S: jax.Array  # float32: the start distribution
    discount: jax.Array  # float32 scalar (a [B] vector in a stacked batch)

    @property
    def num_states(self) -> int:
        return self.next_SAK.shape[-3]

    @property
    def num_actions(self) -> int:
        return self.next_SAK.shape[-2]

    def dense(self) -> jax.Array:
        """P_SAS[s, a, s'] (for small MDPs and tests)."""
        s, a, _ = self.next_SAK.shape
        one_hot_SAKS = jax.nn.one_hot(self.next_SAK, s, dtype=self.prob_SAK.dtype)
        return jnp.einsum("sak,sakt->sat", self.prob_SAK, one_hot_SAKS)

    def replace(self, **changes) -> "MDP":
        return dataclasses.replace(self, **changes)


def make_mdp(
    next_SAK=None,
    prob_SAK=None,
    *,
    P_SAS=None,
    terminal_S=None,
    init_S=None,
    discount: float = 0.95,
) -> MDP:
    """An MDP from sparse (`next_SAK`, `prob_SAK`) or dense (`P_SAS`) transitions, validated.

    terminal_S defaults to none terminal, init_S to uniform over the non-terminal states.
    Raises ConfigError naming the first bad entry and what is accepted.
    """
    if P_SAS is not None:
        if next_SAK is not None or prob_SAK is not None:
            raise ConfigError(
                "give transitions either dense (P_SAS) or sparse (next_SAK, prob_SAK), not both."
            )
        next_SAK, prob_SAK = sparse_from_dense(np.asarray(P_SAS, np.float64))
    if next_SAK is None or prob_SAK is None:
        raise ConfigError("an MDP needs transitions: P_SAS, or both next_SAK and prob_SAK.")
    next_SAK = np.asarray(next_SAK)
    prob_SAK = np.asarray(prob_SAK, np.float64)
    if next_SAK.ndim != 3 or next_SAK.shape != prob_SAK.shape:
        raise ConfigError(
            f"next_SAK and prob_SAK must both be [S, A, K]; got shapes {next_SAK.shape} and {prob_SAK.shape}."
        )
    num_states = next_SAK.shape[0]
    terminal_S = np.zeros(num_states) if terminal_S is None else np.asarray(terminal_S, np.float64)
    if init_S is None:
        init_S = 1.0 - terminal_S
        init_S = init_S / max(init_S.sum(), 1.0)
    init_S = np.asarray(init_S, np.float64)
    validate_transitions(next_SAK, prob_SAK)
    if terminal_S.shape != (num_states,) or not np.all((terminal_S == 0) | (terminal_S == 1)):
        raise ConfigError(f"terminal_S must be [{num_states}] of 0/1 flags; got shape {terminal_S.shape}.")
    if init_S.shape != (num_states,) or np.any(init_S < 0) or abs(init_S.sum() - 1.0) > ATOL:
        total = init_S.sum() if init_S.shape == (num_states,) else float("nan")
        raise ConfigError(
            f"init_S must be a distribution over the {num_states} states (>= 0, summing to 1); "
            f"got shape {init_S.shape}, sum {total:.6g}."
        )
    if np.any(init_S[terminal_S == 1] > 0):
        state = int(np.flatnonzero((init_S > 0) & (terminal_S == 1))[0])
        raise ConfigError(
            f"init_S puts mass on terminal state {state}; episodes must start where the agent acts."
        )
    if not 0.0 <= float(discount) < 1.0:
        raise ConfigError(f"discount must be in [0, 1); got {discount}.")
    return MDP(
        next_SAK=jnp.asarray(next_SAK, jnp.int32),
        prob_SAK=jnp.asarray(prob_SAK, jnp.float32),
        terminal_S=jnp.asarray(terminal_S, jnp.float32),
        init_S=jnp.asarray(init_S, jnp.float32),
        discount=jnp.asarray(discount, jnp.float32),
    )


def validate_transitions(next_SAK: np.ndarray, prob_SAK: np.ndarray) -> None:
    """ConfigError unless successors index states and every P(.|s, a) is a distribution."""
    num_states = next_SAK.shape[0]
    if not np.issubdtype(next_SAK.dtype, np.integer):
        raise ConfigError(f"next_SAK must hold integer state indices; got dtype {next_SAK.dtype}.")
    bad = np.argwhere((next_SAK < 0) | (next_SAK >= num_states))
    if bad.size:
        s, a, k = bad[0]
        raise ConfigError(
            f"transition successor next_SAK[{s}, {a}, {k}] = {next_SAK[s, a, k]} is not a state; "
            f"accepted: 0..{num_states - 1}."
        )
    bad = np.argwhere(~np.isfinite(prob_SAK) | (prob_SAK < 0))
    if bad.size:
        s, a, k = bad[0]
        raise ConfigError(
            f"transition probability P(.|s={s}, a={a})[{k}] = {prob_SAK[s, a, k]}; accepted: finite and >= 0."
        )
    sums_SA = prob_SAK.sum(-1)
    bad = np.argwhere(np.abs(sums_SA - 1.0) > ATOL)
    if bad.size:
        s, a = bad[0]
        raise ConfigError(
            f"transition row P(.|s={s}, a={a}) sums to {sums_SA[s, a]:.6g} ({len(bad)} bad rows); "
            f"accepted: every row sums to 1 (within {ATOL})."
        )


def sparse_from_dense(P_SAS: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(next_SAK, prob_SAK) holding exactly the nonzero entries of each row (padded with p = 0)."""
    if P_SAS.ndim != 3 or P_SAS.shape[0] != P_SAS.shape[2]:
        raise ConfigError(f"P_SAS must be [S, A, S]; got shape {P_SAS.shape}.")
    k = max(int((P_SAS != 0).sum(-1).max()), 1)
    order_SAS = np.argsort(P_SAS == 0, axis=-1, kind="stable")  # nonzero successors first
    next_SAK = order_SAS[..., :k].astype(np.int32)
    prob_SAK = np.take_along_axis(P_SAS, next_SAK, axis=-1)
    return next_SAK, prob_SAK


def stack(mdps: Sequence[MDP]) -> MDP:
    """A batch of MDPs with a leading axis, for `jax.vmap` (they must share S, A and K)."""
    shapes = {m.next_SAK.shape for m in mdps}
    if len(shapes) != 1:
        raise ValueError(f"stacked MDPs must share [S, A, K]; got {sorted(shapes)}.")
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *mdps)


def deterministic_successors(mdp: MDP) -> jax.Array:
    """successor_SA of an MDP whose every (s, a) has one successor (ConfigError otherwise)."""
    prob_SAK = np.asarray(mdp.prob_SAK)
    support_SA = (prob_SAK > 0).sum(-1)
    if np.any(support_SA != 1):
        s, a = np.argwhere(support_SA != 1)[0]
        raise ConfigError(
            f"this model needs deterministic transitions; P(.|s={s}, a={a}) has {support_SA[s, a]} "
            "successors (accepted: exactly one per state and action, e.g. world.move_probs=(1, 0, 0))."
        )
    k_SA = prob_SAK.argmax(-1)
    return jnp.asarray(np.take_along_axis(np.asarray(mdp.next_SAK), k_SA[..., None], -1)[..., 0])


# ----------------------------------------------------------------------------------- layouts


@dataclasses.dataclass(frozen=True)
class Layout:
    """Host-side geometry of an MDP's states, the vocabulary's raw material."""

    coords_S2: np.ndarray  # (row, col) on a grid; (y, x) on a road graph
    terrain_S: np.ndarray  # index into terrain_names
    terrain_names: tuple[str, ...]
    landmarks: dict  # name -> state index
    regions: dict  # name -> bool [S]
    action_names: tuple[str, ...] = ACTIONS
    action_vectors_A2: np.ndarray = dataclasses.field(default_factory=lambda: ACTION_VECTORS_A2.copy())
    grid_shape: tuple[int, int] | None = None  # (H, W) for a gridworld: state = row * W + col

    @property
    def num_states(self) -> int:
        return len(self.terrain_S)

    def with_landmark(self, name: str, state: int) -> "Layout":
        return dataclasses.replace(self, landmarks={**self.landmarks, name: int(state)})


def _moves(num_actions: int, move_probs: Sequence[float], step) -> tuple[np.ndarray, np.ndarray]:
    """Successors for `move_probs` = (intended, rotated -45 degrees, rotated +45 degrees)."""
    move_probs = tuple(float(p) for p in move_probs)
    if len(move_probs) != 3:
        raise ConfigError(
            f"move_probs={move_probs} must have 3 entries: (intended, rotated left, rotated right)."
        )
    rotations = [r for r, p in zip((0, -1, 1), move_probs) if p != 0] or [0]
    next_list, prob_list = [], []
    for rotation, p in zip((0, -1, 1), move_probs):
        if rotation not in rotations:
            continue
        actions = (np.arange(num_actions) + rotation) % num_actions
        next_list.append(step(actions))
        prob_list.append(np.full(next_list[-1].shape, p))
    return np.stack(next_list, -1), np.stack(prob_list, -1)


def gridworld(
    height: int,
    width: int,
    *,
    goal: Sequence[int],
    terrain_names: Sequence[str] = ("grass", "road", "mud", "water"),
    terrain_fractions: Sequence[float] = (0.6, 0.0, 0.25, 0.15),
    road_rows: Sequence[int] = (),
    road_cols: Sequence[int] = (),
    landmarks: dict | None = None,
    regions: dict | None = None,
    move_probs: Sequence[float] = (1.0, 0.0, 0.0),
    discount: float = 0.95,
    seed: int = 0,
) -> tuple[MDP, Layout]:
    """An H x W grid, 8 compass moves (into a wall: stay), a terminal goal cell, seeded terrain.

    Terrain: a smoothed random field cut at quantiles by `terrain_fractions`; then `road_rows` and
    `road_cols` are laid as roads (terrain 'road' if named). Regions are (row0, col0, row1, col1)
    rectangles, ends exclusive. Start: uniform over the non-goal cells.
    """
    if height < 2 or width < 2:
        raise ConfigError(f"a gridworld needs height and width >= 2; got {height} x {width}.")
    if len(terrain_fractions) != len(terrain_names):
        raise ConfigError(
            f"terrain_fractions has {len(terrain_fractions)} entries for {len(terrain_names)} terrain names."
        )
    num_states = height * width
    rng = np.random.default_rng(seed)
    field = rng.normal(size=(height + 4, width + 4))
    for _ in range(2):  # box-blur: terrain in blobs
        field = sum(np.roll(np.roll(field, dr, 0), dc, 1) for dr in (-1, 0, 1) for dc in (-1, 0, 1)) / 9
    field = field[2:-2, 2:-2].ravel()
    cuts = np.cumsum(np.asarray(terrain_fractions, np.float64) / np.sum(terrain_fractions))[:-1]
    terrain_S = np.searchsorted(np.quantile(field, cuts), field, side="right").astype(np.int32)
    if "road" in terrain_names:
        road = terrain_names.index("road")
        grid = terrain_S.reshape(height, width)
        for r in road_rows:
            grid[int(r), :] = road
        for c in road_cols:
            grid[:, int(c)] = road
        terrain_S = grid.ravel()
    rows, cols = np.divmod(np.arange(num_states), width)
    coords_S2 = np.stack([rows, cols], -1).astype(np.float64)

    def cell(name, rc) -> int:
        r, c = (int(v) for v in rc)
        if not (0 <= r < height and 0 <= c < width):
            raise ConfigError(f"{name} at {tuple(rc)} is outside the {height} x {width} grid.")
        return r * width + c

    goal_state = cell("goal", goal)

    def step(actions: np.ndarray) -> np.ndarray:
        r = rows[:, None] + ACTION_VECTORS_A2[actions, 0][None]
        c = cols[:, None] + ACTION_VECTORS_A2[actions, 1][None]
        inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
        return np.where(inside, r * width + c, np.arange(num_states)[:, None])

    next_SAK, prob_SAK = _moves(len(ACTIONS), move_probs, step)
    terminal_S = np.zeros(num_states)
    terminal_S[goal_state] = 1.0
    region_masks = {}
    for name, (r0, c0, r1, c1) in (regions or {}).items():
        mask = (rows >= r0) & (rows < r1) & (cols >= c0) & (cols < c1)
        if not mask.any():
            raise ConfigError(f"region '{name}' = {(r0, c0, r1, c1)} holds no cell of the grid.")
        region_masks[name] = mask
    marks = {"goal": goal_state, **{name: cell(name, rc) for name, rc in (landmarks or {}).items()}}
    layout = Layout(
        coords_S2=coords_S2,
        terrain_S=terrain_S,
        terrain_names=tuple(terrain_names),
        landmarks=marks,
        regions=region_masks,
        grid_shape=(height, width),
    )
    return make_mdp(next_SAK, prob_SAK, terminal_S=terminal_S, discount=discount), layout


def with_goal(mdp: MDP, layout: Layout, goal_state: int) -> tuple[MDP, Layout]:
    """The same world with `goal_state` as its only terminal state (start: uniform elsewhere)."""
    terminal_S = np.zeros(mdp.num_states, np.float32)
    terminal_S[goal_state] = 1.0
    init_S = (1.0 - terminal_S) / (mdp.num_states - 1)
    new = mdp.replace(terminal_S=jnp.asarray(terminal_S), init_S=jnp.asarray(init_S, jnp.float32))
    return new, layout.with_landmark("goal", goal_state)


def road_graph(
    rows: int,
    cols: int,
    *,
    goal: int | None = None,
    landmarks: dict | None = None,
    drop: float = 0.3,
    highway_every: int = 8,
    jitter: float = 0.3,
    move_probs: Sequence[float] = (1.0, 0.0, 0.0),
    discount: float = 0.95,
    seed: int = 0,
) -> tuple[MDP, Layout]:
    """A road-network-like graph: junctions on a jittered lattice, roads to the 8 lattice neighbours.

    Each local road survives with probability 1 - drop (both directions); every `highway_every`-th
    row and column is a highway, always kept. Action d follows the road in compass direction d, or
    stays at the junction where there is none. Terrain is the junction's road class ('highway' if a
    highway passes through it, else 'local'). `goal` and `landmarks` are junction indices
    (row * cols + col). Scales to 10^5 junctions (all numpy, no Python loops over junctions).
    """
    rng = np.random.default_rng(seed)
    num_states = rows * cols
    r_S, c_S = np.divmod(np.arange(num_states), cols)
    coords_S2 = np.stack([r_S, c_S], -1) + rng.uniform(-jitter, jitter, (num_states, 2))
    highway_S = (r_S % highway_every == 0) | (c_S % highway_every == 0)
    # One keep-flag per undirected edge: drawn for the 4 "forward" directions (e, se, s, sw).
    keep_SA = np.zeros((num_states, len(ACTIONS)), bool)
    neighbour_SA = np.zeros((num_states, len(ACTIONS)), np.int64)
    inside_SA = np.zeros((num_states, len(ACTIONS)), bool)
    for a, (dr, dc) in enumerate(ACTION_VECTORS_A2):
        r, c = r_S + dr, c_S + dc
        inside_SA[:, a] = (r >= 0) & (r < rows) & (c >= 0) & (c < cols)
        neighbour_SA[:, a] = np.where(inside_SA[:, a], r * cols + c, np.arange(num_states))
    for a in (2, 3, 4, 5):  # e, se, s, sw; their reverses are w, nw, n, ne
        keep = rng.uniform(size=num_states) >= drop
        straight = a in (2, 4)
        on_highway = (r_S % highway_every == 0) if a == 2 else (c_S % highway_every == 0)
        keep = keep | (on_highway if straight else False)
        keep_SA[:, a] = keep & inside_SA[:, a]
        reverse = (a + 4) % 8
        target = neighbour_SA[:, a]
        keep_SA[target[keep_SA[:, a]], reverse] = True

    def step(actions: np.ndarray) -> np.ndarray:
        s = np.arange(num_states)[:, None]
        return np.where(keep_SA[s, actions], neighbour_SA[s, actions], s)

    next_SAK, prob_SAK = _moves(len(ACTIONS), move_probs, step)
    goal = num_states - 1 if goal is None else int(goal)
    marks = {"goal": goal, **{name: int(s) for name, s in (landmarks or {}).items()}}
    for name, s in marks.items():
        if not 0 <= s < num_states:
            raise ConfigError(f"{name} = junction {s} is not in the {rows} x {cols} road graph.")
    terminal_S = np.zeros(num_states)
    terminal_S[goal] = 1.0
    layout = Layout(
        coords_S2=coords_S2,
        terrain_S=np.where(highway_S, 0, 1).astype(np.int32),
        terrain_names=("highway", "local"),
        landmarks=marks,
        regions={},
    )
    return make_mdp(next_SAK, prob_SAK, terminal_S=terminal_S, discount=discount), layout
