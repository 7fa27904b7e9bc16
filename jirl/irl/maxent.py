"""MaxEnt IRL (maximum causal entropy) with optax: linear reward weights on a feature tensor.

With r_w(s, a) = w . phi(s, a), soft VI gives V_w and pi_w. The objective minimised is the dual

    g(w) = E_{s_0 ~ demos}[V_w(s_0)] - w . mu_E + (l2 / 2) |w|^2,
    grad g = mu_w - mu_E + l2 w,

with mu_E = (1/N) sum_n sum_t gamma^t phi(s_t, a_t) over the demonstrations and mu_w the same
expectation under pi_w from the demonstrations' start states (soft_vi.state_action_visitation).
With deterministic transitions g(w) is exactly the discounted negative log-likelihood
-(1/N) sum_n sum_t gamma^t log pi_w(a_t | s_t) (the sum telescopes), so at the optimum (l2 = 0)
the model's feature expectations equal the expert's. g is convex in w.

Two forms of the inner problem: infinite horizon (soft VI and the visitation solved to a fixed
point, each warm-started from the previous evaluation's answer, carried in the optimizer state),
or `horizon=H` (exactly H backward and H forward sweeps, time-dependent policy, t < H; see
soft_vi). L-BFGS (the default) takes its direction from optax.scale_by_lbfgs and a backtracking
line search of our own, so that every trial point starts from the last one's solution; each step
reports how many evaluations of g it took. Adam / SGD take one evaluation per step.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from tqdm.auto import tqdm

from jirl.errors import ConfigError
from jirl.irl import soft_vi
from jirl.irl.demos import Trajectories
from jirl.irl.mdp import MDP

OPTIMIZERS = ("lbfgs", "adam", "sgd")
MAX_LINESEARCH = 20  # evaluations of g per L-BFGS step at most
ARMIJO = 1e-4  # sufficient decrease: g(w + t d) <= g(w) + ARMIJO * t * grad . d
CURVATURE = 0.9  # or: no increase beyond float32 noise and |grad(w + t d) . d| <= CURVATURE |grad . d|
VALUE_NOISE = 1e-6  # that noise, relative to max(1, |g(w)|)
# The inner fixed points' tolerance (relative residual; soft_vi stops earlier only at float32
# round-off): 10x below soft_vi.TOL, so that a warm-started solve, whose error has no smooth
# dependence on w, is as accurate as a cold one (max |grad error| ~ 1e-5 on the tests' world).
SOLVE_TOL = 1e-7


class IRLResult(NamedTuple):
    weights_F: jax.Array
    expert_fe_F: jax.Array
    model_fe_F: jax.Array
    objective_K: jax.Array  # g(w) at every step
    log_policy_SA: jax.Array  # pi_w at the final weights (finite horizon: pi_0, the first step's)
    evaluations_K: jax.Array | None = None  # evaluations of g at every step (L-BFGS: its line search's)
    sweeps_K: jax.Array | None = None  # soft-VI backups + visitation sweeps at every step


class Problem(NamedTuple):
    """What g depends on besides w (a pytree, so it crosses jit)."""

    mdp: MDP
    features_SAF: jax.Array
    expert_fe_F: jax.Array
    init_S: jax.Array
    l2: jax.Array


class WarmStart(NamedTuple):
    """The last evaluation's soft values and state visitation: where the next one starts."""

    value_S: jax.Array
    visits_S: jax.Array


class Evaluation(NamedTuple):
    value: jax.Array  # g(w)
    grad_F: jax.Array  # mu_w - mu_E + l2 w
    model_fe_F: jax.Array  # mu_w
    warm: WarmStart
    sweeps: jax.Array  # backups + visitation sweeps this evaluation took


class Carry(NamedTuple):
    """The optimizer loop's state: weights, optax state, g at the weights (and where the next
    solve starts), and whether L-BFGS stopped (no decrease found, or max |grad| <= grad_tol)."""

    weights_F: jax.Array
    opt_state: optax.OptState
    evaluation: Evaluation
    done: jax.Array


@functools.partial(jax.jit, static_argnames=("horizon",))
def expert_feature_expectations(
    features_SAF: jax.Array, demos: Trajectories, discount, horizon: int | None = None
) -> jax.Array:
    """mu_E = (1/N) sum_n sum_{t < H} gamma^t phi(s_t, a_t), [F] (H = every step by default)."""
    phi_NTF = features_SAF[demos.states_NT1[:, :-1], demos.actions_NT]
    steps_T = jnp.arange(demos.actions_NT.shape[1])
    weight_NT = demos.mask_NT * discount ** steps_T.astype(jnp.float32)
    if horizon is not None:
        weight_NT = weight_NT * (steps_T < horizon)
    return jnp.einsum("nt,ntf->f", weight_NT, phi_NTF) / demos.num


@functools.partial(jax.jit, static_argnames=("num_states",))
def empirical_start(demos: Trajectories, num_states: int) -> jax.Array:
    """The demonstrations' start-state distribution, [S]."""
    return jnp.zeros(num_states, jnp.float32).at[demos.states_NT1[:, 0]].add(1.0 / demos.num)


def cold_start(problem: Problem) -> WarmStart:
    """V = 0 and d = init: where a solve without a warm start begins."""
    return WarmStart(jnp.zeros(problem.mdp.num_states, jnp.float32), problem.init_S)


def solve(weights_F, problem: Problem, warm: WarmStart, horizon: int | None = None):
    """(soft-VI solution, D(s, a), the warm start for the next solve, sweeps) at reward phi . w."""
    mdp, reward_SA = problem.mdp, problem.features_SAF @ weights_F
    if horizon is not None:
        solution = soft_vi.finite_horizon_soft_vi(mdp, reward_SA, horizon)
        visitation_SA = soft_vi.finite_horizon_visitation(mdp, reward_SA, solution.value_TS, problem.init_S)
        return solution, visitation_SA, warm, jnp.int32(2 * horizon)
    solution = soft_vi.soft_value_iteration(mdp, reward_SA, value_S=warm.value_S, tol=SOLVE_TOL)
    visits_S, visit_sweeps = soft_vi.state_visitation(
        mdp, solution.log_policy_SA, problem.init_S, visits_S=warm.visits_S, tol=SOLVE_TOL
    )
    visitation_SA = visits_S[:, None] * jnp.exp(solution.log_policy_SA) * (1.0 - mdp.terminal_S)[:, None]
    return solution, visitation_SA, WarmStart(solution.value_S, visits_S), solution.iterations + visit_sweeps


def evaluate(weights_F, problem: Problem, warm: WarmStart, horizon: int | None = None) -> Evaluation:
    """g(w) and its gradient (module docstring), the inner solves started from `warm`."""
    solution, visitation_SA, warm, sweeps = solve(weights_F, problem, warm, horizon)
    model_fe_F = soft_vi.feature_expectations(visitation_SA, problem.features_SAF)
    l2 = problem.l2
    value = (
        problem.init_S @ solution.value_S - weights_F @ problem.expert_fe_F + 0.5 * l2 * weights_F @ weights_F
    )
    return Evaluation(value, model_fe_F - problem.expert_fe_F + l2 * weights_F, model_fe_F, warm, sweeps)


def dual(weights_F, mdp: MDP, features_SAF, expert_fe_F, init_S, l2=0.0, *, horizon: int | None = None):
    """(g(w), grad g(w), mu_w, soft-VI solution) as in the module docstring, solved from cold."""
    problem = Problem(mdp, features_SAF, expert_fe_F, jnp.asarray(init_S, jnp.float32), jnp.float32(l2))
    solution, visitation_SA, _, _ = solve(weights_F, problem, cold_start(problem), horizon)
    model_fe_F = soft_vi.feature_expectations(visitation_SA, features_SAF)
    value = problem.init_S @ solution.value_S - weights_F @ expert_fe_F + 0.5 * l2 * weights_F @ weights_F
    return value, model_fe_F - expert_fe_F + l2 * weights_F, model_fe_F, solution


def make_optimizer(name: str, learning_rate, total_steps: int) -> optax.GradientTransformation:
    """L-BFGS's direction (optax.scale_by_lbfgs; our line search scales it, learning_rate unused),
    or Adam / SGD with a cosine decay to 1% of `learning_rate` over `total_steps`."""
    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown IRL optimizer '{name}'; accepted: {list(OPTIMIZERS)}.")
    if name == "lbfgs":
        return optax.scale_by_lbfgs()
    schedule = optax.cosine_decay_schedule(learning_rate, max(total_steps, 1), alpha=0.01)
    return optax.adam(schedule) if name == "adam" else optax.sgd(schedule)


# ------------------------------------------------------------------------------ line search


class LineSearch(NamedTuple):
    step: jax.Array  # the next trial step size t (the accepted one once `found`)
    last: Evaluation  # the latest finite evaluation (accepted once `found`)
    count: jax.Array
    found: jax.Array
    sweeps: jax.Array


def _shorter_step(step, value0, slope0, value):
    """The minimiser of the parabola through g(0), g'(0) and g(t), clipped to [0.1 t, 0.5 t]."""
    curvature = (value - value0 - slope0 * step) / step**2
    guess = jnp.where(curvature > 0, -slope0 / (2 * curvature), 0.5 * step)
    return jnp.where(jnp.isfinite(guess), jnp.clip(guess, 0.1 * step, 0.5 * step), 0.5 * step)


def line_search(evaluate_at, weights_F, direction_F, start: Evaluation) -> LineSearch:
    """Backtracking from t = 1 along `direction_F` until sufficient decrease (ARMIJO) or, within
    float32 noise of g, a flat enough slope (CURVATURE); each trial starts from the last trial's
    solution. At most MAX_LINESEARCH evaluations."""
    value0, slope0 = start.value, start.grad_F @ direction_F
    slack = VALUE_NOISE * jnp.maximum(1.0, jnp.abs(value0))

    def body(search: LineSearch) -> LineSearch:
        trial = evaluate_at(weights_F + search.step * direction_F, search.last.warm)
        slope = trial.grad_F @ direction_F
        decrease = trial.value <= value0 + ARMIJO * search.step * slope0
        flat = (trial.value <= value0 + slack) & (jnp.abs(slope) <= CURVATURE * jnp.abs(slope0))
        finite = jnp.isfinite(trial.value) & jnp.all(jnp.isfinite(trial.grad_F))
        found = finite & (decrease | flat)
        step = jnp.where(found, search.step, _shorter_step(search.step, value0, slope0, trial.value))
        last = jax.tree.map(lambda new, old: jnp.where(finite, new, old), trial, search.last)
        return LineSearch(step, last, search.count + 1, found, search.sweeps + trial.sweeps)

    cond = lambda search: ~search.found & (search.count < MAX_LINESEARCH)
    init = LineSearch(jnp.float32(1.0), start, jnp.int32(0), jnp.bool_(False), jnp.int32(0))
    return jax.lax.while_loop(cond, body, init)


# ------------------------------------------------------------------------------ optimizer loop


def _evaluator(problem: Problem, horizon, warm_start: bool):
    """w, warm -> Evaluation; without `warm_start` every solve starts cold."""
    return lambda weights_F, warm: evaluate(
        weights_F, problem, warm if warm_start else cold_start(problem), horizon
    )


def _lbfgs_step(carry: Carry, evaluate_at, tx, grad_tol):
    """One L-BFGS step: direction -H grad (steepest descent if that is not downhill), line search."""

    def active(carry: Carry):
        start = carry.evaluation
        preconditioned_F, opt_state = tx.update(start.grad_F, carry.opt_state, carry.weights_F)
        downhill = start.grad_F @ preconditioned_F > 0
        direction_F = -jnp.where(downhill, preconditioned_F, start.grad_F)
        search = line_search(evaluate_at, carry.weights_F, direction_F, start)
        weights_F = jnp.where(search.found, carry.weights_F + search.step * direction_F, carry.weights_F)
        evaluation = jax.tree.map(lambda new, old: jnp.where(search.found, new, old), search.last, start)
        done = ~search.found | (jnp.max(jnp.abs(evaluation.grad_F)) <= grad_tol)
        carry = Carry(weights_F, opt_state, evaluation, done)
        return carry, (start.value, search.count, search.sweeps)

    idle = lambda carry: (carry, (carry.evaluation.value, jnp.int32(0), jnp.int32(0)))
    return jax.lax.cond(carry.done, idle, active, carry)


def _first_order_step(carry: Carry, evaluate_at, tx):
    """One Adam / SGD step on grad g, the solve started from the previous step's."""
    evaluation = evaluate_at(carry.weights_F, carry.evaluation.warm)
    updates, opt_state = tx.update(evaluation.grad_F, carry.opt_state, carry.weights_F)
    weights_F = optax.apply_updates(carry.weights_F, updates)
    return carry._replace(weights_F=weights_F, opt_state=opt_state, evaluation=evaluation), (
        evaluation.value,
        jnp.int32(1),
        evaluation.sweeps,
    )


@functools.partial(jax.jit, static_argnames=("optimizer", "total_steps", "horizon", "warm_start"))
def init_carry(
    weights_F, problem: Problem, learning_rate, grad_tol, *, optimizer, total_steps, horizon, warm_start
):
    """The loop state at `weights_F`, with g evaluated there (from cold)."""
    opt_state = make_optimizer(optimizer, learning_rate, total_steps).init(weights_F)
    evaluation = evaluate(weights_F, problem, cold_start(problem), horizon)
    done = (jnp.max(jnp.abs(evaluation.grad_F)) <= grad_tol) & (optimizer == "lbfgs")
    return Carry(weights_F, opt_state, evaluation, done)


@functools.partial(jax.jit, static_argnames=("steps", "total_steps", "optimizer", "horizon", "warm_start"))
def _steps(
    carry: Carry,
    problem: Problem,
    learning_rate,
    grad_tol,
    *,
    steps,
    total_steps,
    optimizer,
    horizon,
    warm_start,
):
    """`steps` optimizer steps: (carry, g before each step, evaluations per step, sweeps per step)."""
    tx = make_optimizer(optimizer, learning_rate, total_steps)
    evaluate_at = _evaluator(problem, horizon, warm_start)
    if optimizer == "lbfgs":
        step = lambda carry, _: _lbfgs_step(carry, evaluate_at, tx, grad_tol)
    else:
        step = lambda carry, _: _first_order_step(carry, evaluate_at, tx)
    carry, (values, evaluations, sweeps) = jax.lax.scan(step, carry, None, length=steps)
    return carry, values, evaluations, sweeps


def check_settings(optimizer: str, steps: int, horizon, grad_tol: float) -> int | None:
    """ConfigError for a bad setting; returns the horizon (None: infinite)."""
    if optimizer not in OPTIMIZERS:
        raise ConfigError(f"unknown IRL optimizer '{optimizer}'; accepted: {list(OPTIMIZERS)}.")
    if steps < 1:
        raise ConfigError(f"irl.steps={steps} must be at least 1.")
    if not float(grad_tol) >= 0.0:
        raise ConfigError(f"grad_tol={grad_tol} must be >= 0 (0: stop only when no decrease is found).")
    return None if horizon is None else soft_vi.check_horizon(horizon)


def _problem(mdp, features_SAF, expert_fe_F, init_S, l2) -> Problem:
    f32 = lambda x: jnp.asarray(x, jnp.float32)
    return Problem(mdp, f32(features_SAF), f32(expert_fe_F), f32(init_S), f32(l2))


def fit_weights(
    mdp,
    features_SAF,
    expert_fe_F,
    init_S,
    *,
    l2=0.0,
    learning_rate=0.1,
    steps=100,
    optimizer="lbfgs",
    horizon: int | None = None,
    warm_start: bool = True,
    grad_tol=0.0,
):
    """(weights minimising g from zero, g at each step): pure and jittable, for callers that loop
    over data sets. (It vmaps, but the nested while loops then run every member as long as the
    slowest.)"""
    horizon = check_settings(optimizer, steps, horizon, 0.0)
    carry, values, _, _ = run_steps(
        _problem(mdp, features_SAF, expert_fe_F, init_S, l2),
        learning_rate, grad_tol, steps=steps, optimizer=optimizer, horizon=horizon, warm_start=warm_start,
    )  # fmt: skip
    return carry.weights_F, values


def run_steps(
    problem: Problem,
    learning_rate,
    grad_tol,
    *,
    steps,
    optimizer,
    horizon,
    warm_start,
    carry=None,
    total_steps=None,
):
    """`steps` steps from `carry` (default: w = 0): (carry, values, evaluations, sweeps), per step."""
    total_steps = steps if total_steps is None else total_steps
    static = dict(total_steps=total_steps, optimizer=optimizer, horizon=horizon, warm_start=warm_start)
    learning_rate, grad_tol = jnp.asarray(learning_rate, jnp.float32), jnp.asarray(grad_tol, jnp.float32)
    if carry is None:
        weights_F = jnp.zeros(problem.features_SAF.shape[-1], jnp.float32)
        carry = init_carry(weights_F, problem, learning_rate, grad_tol, **static)
    return _steps(carry, problem, learning_rate, grad_tol, steps=steps, **static)


def maxent_irl(
    mdp: MDP,
    features_SAF: jax.Array,
    demos: Trajectories,
    *,
    steps: int = 100,
    learning_rate: float = 0.1,
    l2: float = 0.0,
    optimizer: str = "lbfgs",
    horizon: int | None = None,
    warm_start: bool = True,
    grad_tol: float = 0.0,
    chunk: int = 25,
    progress: bool = False,
) -> IRLResult:
    """Recover reward weights from demonstrations (with `progress`: `chunk` steps per jitted call).

    horizon: None for the discounted infinite-horizon form, or H for exactly H steps (mu_E then
    counts each demonstration's first H steps). warm_start: start each inner solve from the last
    one's answer. grad_tol: L-BFGS stops once max |grad g| <= grad_tol (always once no step
    decreases g)."""
    horizon = check_settings(optimizer, steps, horizon, grad_tol)
    features_SAF = jnp.asarray(features_SAF, jnp.float32)
    expert_fe_F = expert_feature_expectations(features_SAF, demos, mdp.discount, horizon)
    problem = _problem(mdp, features_SAF, expert_fe_F, empirical_start(demos, mdp.num_states), l2)
    carry, outputs, done = None, [], 0
    chunk = chunk if progress else steps  # one jitted call when nobody watches
    with tqdm(total=steps, desc="MaxEnt IRL", disable=not progress, leave=False) as bar:
        while done < steps:
            n = min(chunk, steps - done)
            carry, *per_step = run_steps(
                problem, learning_rate, grad_tol, steps=n, optimizer=optimizer, horizon=horizon,
                warm_start=warm_start, carry=carry, total_steps=steps,
            )  # fmt: skip
            outputs.append(per_step)
            done += n
            bar.update(n)
            bar.set_postfix(objective=f"{float(per_step[0][-1]):.4f}")
    values, evaluations, sweeps = (jnp.concatenate(parts) for parts in zip(*outputs))
    warm = carry.evaluation.warm if warm_start else cold_start(problem)
    model_fe_F, log_policy_SA = _final_fit(carry.weights_F, problem, warm, horizon=horizon)
    return IRLResult(carry.weights_F, expert_fe_F, model_fe_F, values, log_policy_SA, evaluations, sweeps)


@functools.partial(jax.jit, static_argnames=("horizon",))
def _final_fit(weights_F, problem: Problem, warm: WarmStart, horizon):
    """(mu_w, log pi_w) at the final weights."""
    solution, visitation_SA, _, _ = solve(weights_F, problem, warm, horizon)
    return soft_vi.feature_expectations(visitation_SA, problem.features_SAF), solution.log_policy_SA


def relative_gap(model_fe_F: jax.Array, expert_fe_F: jax.Array) -> float:
    """|mu_w - mu_E| / |mu_E| (L2): how far the feature expectations are from matching."""
    return float(jnp.linalg.norm(model_fe_F - expert_fe_F) / jnp.linalg.norm(expert_fe_F))
