"""jirl's MaxEnt IRL against imitation's MCE IRL (HumanCompatibleAI) on the same gridworlds.

    python benchmarks/irl_peer.py [--sides 12 30 50] [--horizon 40] [--peer-steps 400] [--road 316]

The peer. `imitation` is no dependency of jirl (nor of its tests). This script runs the peer in a
python that imports it: `--peer-python PATH`, or else benchmarks/.peer-venv/bin/python, which the
first run creates (it is gitignored) and fills with
    torch==2.13.0 (the CPU wheel; a plain `torch` pulls a CUDA build), gymnasium~=0.29.1,
    stable-baselines3~=2.2.1, seals~=0.2.1, scipy, tqdm, then imitation==1.0.1 with --no-deps
(its other requirements, e.g. sacred, optuna, tensorboard, serve its scripts, not MCE IRL).
By hand: python -m venv benchmarks/.peer-venv && benchmarks/.peer-venv/bin/pip install <the above>.

The problem, one per side n (n * n states): 4 moves (n, e, s, w; into a wall: stay), no terminal
state, uniform start, 4 state features (road, mud, water from jirl's seeded terrain field; the
Manhattan distance to a point, / n), true reward r*(s) = phi(s) . w*, horizon H = 40,
undiscounted: the finite-horizon MCE setting imitation implements (mce_partition_fh: Q_{H-1} = r,
Q_t = r + P V_{t+1}, V_t = logsumexp_a Q_t; mce_occupancy_measures: d_0 = init,
d_{t+1} = sum_a d_t pi_t P). jirl solves the same recursion (soft_vi.finite_horizon_*, `horizon=H`).

The expert: d*_t from r* by `reference_occupancy` below (float64 NumPy, exact, no sampling). Both
learners get it: imitation its discounted state occupancy sum_{t<=H} d*_t (it also counts the state
after the last action), jirl mu_E = sum_{t<H} d*_t . phi (the H states where the agent acts, the
gradient of its dual). r* is in both models' span, so both objectives vanish at r = r*.

The gap, for both learners by the same code: their learned state reward r(s) goes through
`reference_occupancy`, and gap = max_f |sum_{t<H} (d_t - d*_t) . phi_f|; `gap_with_final` adds
t = H (imitation's own definition). Timing: per side, jirl (its first call, compile included,
reported apart; then the timed call) and the peer's MCEIRL.train (in a worker process of the peer
python, timed inside it: imports and building its dense P[s, a, s'] excluded), one after the other
in one run. imitation: Adam (lr --peer-lr), its linear reward net (weights and bias) from torch's
seeded initialisation, --peer-steps steps (its early stops disabled). jirl: L-BFGS from w = 0,
stopping when no step decreases g (at float32 round-off) or after --jirl-steps steps.

`--road N` adds jirl alone on jirl.irl.mdp.road_graph(N, N) (N = 316: 99,856 states, 8 actions,
a terminal goal; features terrain(local), distance(goal), action(diagonal), constant()), in the
same finite-horizon form and, with --road-discounted, in the discounted infinite-horizon form
(discount 0.975, warm-started); the gap there is jirl's own float32 one.

Prints one JSON line per problem.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
PEER_VENV = os.path.join(HERE, ".peer-venv")
PEER_PACKAGES = (
    "torch==2.13.0",
    "gymnasium~=0.29.1",
    "stable-baselines3~=2.2.1",
    "seals~=0.2.1",
    "scipy",
    "tqdm",
)
PEER_PACKAGE = "imitation==1.0.1"
MOVES_A2 = np.array([(-1, 0), (0, 1), (1, 0), (0, -1)])
TRUE_WEIGHTS = np.array([0.5, -1.0, -2.0, -3.0])  # road, mud, water, distance


# ------------------------------------------------------------------------------ the problem


def grid_problem(side: int, seed: int = 0) -> dict[str, np.ndarray]:
    """next_SAK [S, 4, 1], phi_SF [S, 4], init_S: the 4-move gridworld of the module docstring."""
    from jirl.irl import mdp as mdp_lib

    _, layout = mdp_lib.gridworld(
        side,
        side,
        goal=(side - 1, side - 1),
        terrain_names=("grass", "road", "mud", "water"),
        terrain_fractions=(0.55, 0.15, 0.2, 0.1),
        seed=seed,
    )
    rows, cols = np.divmod(np.arange(side * side), side)
    r, c = rows[:, None] + MOVES_A2[None, :, 0], cols[:, None] + MOVES_A2[None, :, 1]
    inside = (r >= 0) & (r < side) & (c >= 0) & (c < side)
    next_SA = np.where(inside, r * side + c, np.arange(side * side)[:, None])
    distance_S = (np.abs(rows - side // 3) + np.abs(cols - 2 * side // 3)) / side
    terrain_S = layout.terrain_S
    phi_SF = np.stack([terrain_S == 1, terrain_S == 2, terrain_S == 3, distance_S], -1).astype(np.float64)
    return {
        "next_SAK": next_SA[..., None].astype(np.int32),
        "prob_SAK": np.ones(next_SA.shape + (1,)),
        "terminal_S": np.zeros(side * side),
        "init_S": np.full(side * side, 1.0 / (side * side)),
        "phi_SF": phi_SF,
    }


def reference_occupancy(problem, reward_SA, horizon: int, discount: float = 1.0) -> np.ndarray:
    """d_0..d_H, [H + 1, S], float64: V_H = 0, Q_t = r + gamma E[V_{t+1}], V_t = logsumexp_a Q_t,
    pi_t = exp(Q_t - V_t); d_0 = init, d_{t+1}(s') = sum_{s,a} d_t(s) pi_t(a|s) P(s'|s, a) over
    non-terminal s (mass in a terminal state stays there and is not counted again)."""
    next_SAK, prob_SAK = problem["next_SAK"], problem["prob_SAK"]
    alive_S = 1.0 - problem["terminal_S"]
    num_states = len(alive_S)
    values = [np.zeros(num_states)]
    for _ in range(horizon):
        q_SA = reward_SA + discount * np.sum(prob_SAK * (values[-1] * alive_S)[next_SAK], -1)
        top_S = q_SA.max(-1)
        values.append((top_S + np.log(np.exp(q_SA - top_S[:, None]).sum(-1))) * alive_S)
    values = values[::-1]  # V_0 .. V_H
    occupancy = [problem["init_S"]]
    for t in range(horizon):
        q_SA = reward_SA + discount * np.sum(prob_SAK * (values[t + 1] * alive_S)[next_SAK], -1)
        policy_SA = np.exp(q_SA - q_SA.max(-1, keepdims=True))
        policy_SA /= policy_SA.sum(-1, keepdims=True)
        flow_SAK = (occupancy[-1] * alive_S)[:, None, None] * policy_SA[..., None] * prob_SAK
        occupancy.append(np.bincount(next_SAK.ravel(), flow_SAK.ravel(), minlength=num_states))
    return np.stack(occupancy)


def feature_gaps(problem, reward_S, expert_TS, horizon: int) -> dict[str, float]:
    """The same gap for every learner (module docstring), from its learned state reward."""
    reward_SA = np.repeat(np.asarray(reward_S, np.float64)[:, None], problem["next_SAK"].shape[1], 1)
    diff_TF = (reference_occupancy(problem, reward_SA, horizon) - expert_TS) @ problem["phi_SF"]
    return {
        "gap": float(np.abs(diff_TF[:horizon].sum(0)).max()),
        "gap_with_final": float(np.abs(diff_TF.sum(0)).max()),
    }


# ------------------------------------------------------------------------------ jirl


def jirl_fit(problem_arrays, features_SAF, expert_fe_F, init_S, *, horizon, discount, steps, warm_start=True):
    """Run jirl's L-BFGS twice (compile, then timed): weights and its per-step counts."""
    import jax
    import jax.numpy as jnp

    from jirl.irl import maxent
    from jirl.irl import mdp as mdp_lib

    mdp = mdp_lib.make_mdp(
        problem_arrays["next_SAK"],
        problem_arrays["prob_SAK"],
        terminal_S=problem_arrays["terminal_S"],
        init_S=problem_arrays["init_S"],
    )
    mdp = mdp.replace(discount=jnp.float32(discount))  # 1.0 is fine with a finite horizon
    problem = maxent.Problem(
        mdp, jnp.asarray(features_SAF, jnp.float32), jnp.asarray(expert_fe_F, jnp.float32),
        jnp.asarray(init_S, jnp.float32), jnp.float32(0.0),
    )  # fmt: skip
    run = lambda: jax.block_until_ready(
        maxent.run_steps(
            problem, 0.0, 0.0, steps=steps, optimizer="lbfgs", horizon=horizon, warm_start=warm_start
        )
    )
    start = time.perf_counter()
    run()
    first_s = time.perf_counter() - start
    start = time.perf_counter()
    carry, values, evaluations, sweeps = run()
    seconds = time.perf_counter() - start
    evaluations = np.asarray(evaluations)
    return {
        "weights_F": np.asarray(carry.weights_F, np.float64),
        "own_gap": float(jnp.max(jnp.abs(carry.evaluation.grad_F))),
        "seconds": seconds,
        "first_call_s": first_s,
        "steps": int(np.sum(evaluations > 0)),
        "evaluations": int(evaluations.sum()),
        "evaluations_per_step": evaluations[evaluations > 0].tolist(),
        "sweeps": int(np.asarray(sweeps).sum()),
        "final_objective": float(values[-1]),
    }


# ------------------------------------------------------------------------------ the peer


def peer_python(requested: str | None) -> str:
    """A python that imports imitation: `requested`, or benchmarks/.peer-venv (made if missing)."""
    if requested:
        return requested
    python = os.path.join(PEER_VENV, "bin", "python")
    check = [python, "-c", "import imitation.algorithms.mce_irl"]
    if os.path.exists(python) and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    print(f"installing the peer into {PEER_VENV} (once) ...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", PEER_VENV], check=True)
    pip = [python, "-m", "pip", "install", "-q"]
    subprocess.run(pip + list(PEER_PACKAGES), check=True)
    subprocess.run(pip + ["--no-deps", PEER_PACKAGE], check=True)
    subprocess.run(check, check=True)
    return python


def peer_worker(inputs_path: str, outputs_path: str) -> None:
    """In the peer python: imitation's MCEIRL on the saved problem; saves its state reward, seconds."""
    import torch
    from imitation.algorithms import mce_irl
    from imitation.rewards import reward_nets
    from seals import base_envs

    inputs = np.load(inputs_path)
    next_SA, phi_SF, horizon = inputs["next_SAK"][..., 0], inputs["phi_SF"], int(inputs["horizon"])
    num_states, num_actions = next_SA.shape
    transition_SAS = np.zeros((num_states, num_actions, num_states))
    np.put_along_axis(transition_SAS, next_SA[..., None], 1.0, axis=-1)
    env = base_envs.TabularModelPOMDP(
        transition_matrix=transition_SAS,
        observation_matrix=phi_SF.astype(np.float32),
        reward_matrix=np.zeros(num_states),
        horizon=horizon,
        initial_state_dist=inputs["init_S"],
    )
    torch.manual_seed(0)
    reward_net = reward_nets.BasicRewardNet(
        env.observation_space, env.action_space, hid_sizes=[], use_action=False, use_next_state=False
    )
    learner = mce_irl.MCEIRL(
        inputs["expert_occupancy_S"],
        env,
        reward_net,
        optimizer_kwargs={"lr": float(inputs["learning_rate"])},
        discount=1.0,
        linf_eps=0.0,
        grad_l2_eps=0.0,
        log_interval=None,
        rng=np.random.default_rng(0),
    )
    start = time.perf_counter()
    learner.train(max_iter=int(inputs["steps"]))
    seconds = time.perf_counter() - start
    with torch.no_grad():
        observations = torch.as_tensor(env.observation_matrix, dtype=reward_net.dtype)
        reward_S = mce_irl.squeeze_r(reward_net(observations, None, None, None)).numpy()
    np.savez(outputs_path, reward_S=reward_S.astype(np.float64), seconds=seconds)


def peer_fit(python: str, problem, expert_TS, *, horizon, steps, learning_rate) -> dict:
    """imitation's MCE IRL on `problem` in the peer python: its state reward and seconds."""
    with tempfile.TemporaryDirectory() as folder:
        inputs, outputs = os.path.join(folder, "inputs.npz"), os.path.join(folder, "outputs.npz")
        np.savez(
            inputs, next_SAK=problem["next_SAK"], phi_SF=problem["phi_SF"], init_S=problem["init_S"],
            expert_occupancy_S=expert_TS.sum(0), horizon=horizon, steps=steps, learning_rate=learning_rate,
        )  # fmt: skip
        subprocess.run([python, os.path.abspath(__file__), "--peer-worker", inputs, outputs], check=True)
        result = np.load(outputs)
        return {"reward_S": result["reward_S"], "seconds": float(result["seconds"])}


# ------------------------------------------------------------------------------ runs


def compare(side: int, args, python: str) -> dict:
    """One gridworld: jirl and the peer on the same expert, the same gap."""
    problem = grid_problem(side)
    phi_SF, horizon = problem["phi_SF"], args.horizon
    expert_TS = reference_occupancy(problem, np.repeat((phi_SF @ TRUE_WEIGHTS)[:, None], 4, 1), horizon)
    features_SAF = np.repeat(phi_SF[:, None], 4, 1)
    expert_fe_F = expert_TS[:horizon].sum(0) @ phi_SF
    jirl = jirl_fit(
        problem,
        features_SAF,
        expert_fe_F,
        problem["init_S"],
        horizon=horizon,
        discount=1.0,
        steps=args.jirl_steps,
    )
    peer = peer_fit(
        python, problem, expert_TS, horizon=horizon, steps=args.peer_steps, learning_rate=args.peer_lr
    )
    jirl_gaps = feature_gaps(problem, phi_SF @ jirl["weights_F"], expert_TS, horizon)
    peer_gaps = feature_gaps(problem, peer["reward_S"], expert_TS, horizon)
    return {
        "benchmark": "irl_peer",
        "states": side * side,
        "actions": 4,
        "features": phi_SF.shape[1],
        "horizon": horizon,
        "jirl_s": round(jirl["seconds"], 4),
        "jirl_first_call_s": round(jirl["first_call_s"], 2),
        "jirl_steps": jirl["steps"],
        "jirl_evaluations": jirl["evaluations"],
        "jirl_evaluations_per_step": jirl["evaluations_per_step"],
        "jirl_gap": jirl_gaps["gap"],
        "jirl_gap_with_final": jirl_gaps["gap_with_final"],
        "peer": "imitation.algorithms.mce_irl (Adam)",
        "peer_s": round(peer["seconds"], 3),
        "peer_steps": args.peer_steps,
        "peer_lr": args.peer_lr,
        "peer_gap": peer_gaps["gap"],
        "peer_gap_with_final": peer_gaps["gap_with_final"],
        "speedup": round(peer["seconds"] / jirl["seconds"], 1),
    }


def road(side: int, args, discounted: bool) -> dict:
    """jirl alone on the 10^5-state road graph: expert mu_E from jirl's own (float32) solve."""
    import jax.numpy as jnp

    from jirl.irl import maxent
    from jirl.irl import mdp as mdp_lib
    from jirl.irl.features import compile_features

    discount = 0.975 if discounted else 1.0
    horizon = None if discounted else args.horizon
    mdp, layout = mdp_lib.road_graph(side, side, goal=side * side - 1, seed=0)
    names = ("terrain(local)", "distance(goal)", "action(diagonal)", "constant()")
    features_SAF, _ = compile_features(names, mdp, layout)
    features_SAF = features_SAF / jnp.max(jnp.abs(features_SAF), axis=(0, 1))  # each column in [0, 1]
    mdp = mdp.replace(discount=jnp.float32(discount))
    true_F = jnp.asarray([-0.5, -3.0, -0.3, -1.0], jnp.float32)
    expert = maxent.evaluate(
        true_F, maxent.Problem(mdp, features_SAF, jnp.zeros(4), mdp.init_S, jnp.float32(0.0)),
        maxent.WarmStart(jnp.zeros(mdp.num_states), mdp.init_S), horizon,
    )  # fmt: skip
    arrays = {
        name: np.asarray(getattr(mdp, name)) for name in ("next_SAK", "prob_SAK", "terminal_S", "init_S")
    }
    jirl = jirl_fit(
        arrays,
        features_SAF,
        expert.model_fe_F,
        mdp.init_S,
        horizon=horizon,
        discount=discount,
        steps=args.jirl_steps,
    )
    expert_fe = np.asarray(expert.model_fe_F)
    return {
        "benchmark": "irl_peer",
        "world": f"road_graph {side}x{side}",
        "states": mdp.num_states,
        "actions": mdp.num_actions,
        "features": len(names),
        "form": "discounted 0.975, warm-started" if discounted else f"horizon {args.horizon}",
        "jirl_s": round(jirl["seconds"], 3),
        "jirl_first_call_s": round(jirl["first_call_s"], 2),
        "jirl_steps": jirl["steps"],
        "jirl_evaluations": jirl["evaluations"],
        "jirl_evaluations_per_step": jirl["evaluations_per_step"],
        "jirl_sweeps": jirl["sweeps"],
        "jirl_own_gap": jirl["own_gap"],
        "jirl_own_relative_gap": jirl["own_gap"] / float(np.abs(expert_fe).max()),
        "weights": np.round(jirl["weights_F"], 4).tolist(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sides", type=int, nargs="*", default=[12, 30, 50])
    parser.add_argument("--horizon", type=int, default=40)
    parser.add_argument("--jirl-steps", type=int, default=60)
    parser.add_argument("--peer-steps", type=int, default=400)
    parser.add_argument("--peer-lr", type=float, default=0.05)
    parser.add_argument("--peer-python", default=None)
    parser.add_argument("--road", type=int, default=0, help="road graph side (316: 10^5 states); 0: skip")
    parser.add_argument("--road-discounted", action="store_true")
    parser.add_argument("--peer-worker", nargs=2, metavar=("INPUTS", "OUTPUTS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer_worker:
        peer_worker(*args.peer_worker)
        return
    python = peer_python(args.peer_python) if args.sides else None
    for side in args.sides:
        print(json.dumps(compare(side, args, python)), flush=True)
    if args.road:
        print(json.dumps(road(args.road, args, discounted=False)), flush=True)
        if args.road_discounted:
            print(json.dumps(road(args.road, args, discounted=True)), flush=True)


if __name__ == "__main__":
    main()
