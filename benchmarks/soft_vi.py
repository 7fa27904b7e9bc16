"""Seconds per soft Bellman sweep: jitted JAX against plain NumPy, on a 10^5-state sparse MDP.

    python benchmarks/soft_vi.py [--rows 316] [--cols 316] [--sweeps 50] [--repeats 3] [--dtype float32]

The MDP is a road-network-like graph (jirl.irl.mdp.road_graph: 316 x 316 = 99,856 junctions,
8 actions, slippery moves so each (s, a) has 3 successors). One sweep is the same arithmetic in
both: Q = r + gamma * sum_k P_k V[next_k] (V = 0 at the goal), V = logsumexp_a Q. A is
`--sweeps` sweeps inside one jitted `fori_loop`; B is a NumPy loop over the same sweeps, in the
same dtype. Both must agree. Compile and one warm-up run are excluded; A and B alternate; prints
one JSON line with the median seconds per sweep, the speedup (numpy / jax), and how many sweeps
soft value iteration takes to converge (tol 1e-6 relative) and its wall time in JAX.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from jirl.irl import mdp as mdp_lib
from jirl.irl import soft_vi


@functools.partial(jax.jit, static_argnames=("sweeps",))
def jax_sweeps(mdp: mdp_lib.MDP, reward_SA: jax.Array, value_S: jax.Array, *, sweeps: int) -> jax.Array:
    def sweep(_, value_S):
        q_SA = soft_vi.q_values(mdp, reward_SA, value_S)
        return jax.nn.logsumexp(q_SA, axis=-1) * (1.0 - mdp.terminal_S)

    return jax.lax.fori_loop(0, sweeps, sweep, value_S)


def numpy_sweeps(next_SAK, prob_SAK, reward_SA, alive_S, gamma, value_S, sweeps):
    for _ in range(sweeps):
        q_SA = reward_SA + gamma * np.sum(prob_SAK * (value_S * alive_S)[next_SAK], axis=-1)
        m_S = q_SA.max(-1)
        value_S = (m_S + np.log(np.exp(q_SA - m_S[:, None]).sum(-1))) * alive_S
    return value_S


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=316)
    parser.add_argument("--cols", type=int, default=316)
    parser.add_argument("--sweeps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default="float32", choices=["float32"])
    args = parser.parse_args()

    mdp, layout = mdp_lib.road_graph(args.rows, args.cols, move_probs=(0.8, 0.1, 0.1), discount=0.99, seed=0)
    # Cost per move: 0.5 on a highway junction, 1 on a local one, plus 0.3 for a diagonal road.
    cost_S = np.where(layout.terrain_S == 0, 0.5, 1.0)
    reward_SA = -(cost_S[:, None] + 0.3 * (np.arange(8) % 2 == 1)[None]).astype(np.float32)
    dtype = np.dtype(args.dtype)
    next_SAK, prob_SAK = np.asarray(mdp.next_SAK), np.asarray(mdp.prob_SAK).astype(dtype)
    alive_S, gamma = (1.0 - np.asarray(mdp.terminal_S)).astype(dtype), dtype.type(float(mdp.discount))
    reward_jax = jnp.asarray(reward_SA)
    zeros = np.zeros(mdp.num_states, dtype)

    def run_jax():
        return np.asarray(
            jax.block_until_ready(jax_sweeps(mdp, reward_jax, jnp.asarray(zeros), sweeps=args.sweeps))
        )

    def run_numpy():
        return numpy_sweeps(next_SAK, prob_SAK, reward_SA, alive_S, gamma, zeros, args.sweeps)

    runs = {"jax": run_jax, "numpy": run_numpy}
    first = {name: fn() for name, fn in runs.items()}  # compile, warm up
    max_rel = float(np.max(np.abs(first["jax"] - first["numpy"]) / np.maximum(1.0, np.abs(first["numpy"]))))
    if max_rel > 1e-4:
        raise SystemExit(f"JAX and NumPy sweeps disagree: max relative difference {max_rel:.2e}.")
    times: dict[str, list[float]] = {name: [] for name in runs}
    for i in range(args.repeats):
        for name in list(runs) if i % 2 == 0 else list(runs)[::-1]:
            start = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - start)
    per_sweep = {name: statistics.median(t) / args.sweeps for name, t in times.items()}

    solve = lambda: jax.block_until_ready(soft_vi.soft_value_iteration(mdp, reward_jax))
    solution = solve()  # compile
    start = time.perf_counter()
    solution = solve()
    converge_s = time.perf_counter() - start
    print(
        json.dumps(
            {
                "benchmark": "soft_vi",
                "states": mdp.num_states,
                "actions": mdp.num_actions,
                "successors": int(mdp.next_SAK.shape[-1]),
                "dtype": args.dtype,
                "sweeps": args.sweeps,
                "repeats": args.repeats,
                "backend": jax.default_backend(),
                "machine": platform.machine(),
                "jax_s_per_sweep": round(per_sweep["jax"], 6),
                "numpy_s_per_sweep": round(per_sweep["numpy"], 6),
                "speedup": round(per_sweep["numpy"] / per_sweep["jax"], 2),
                "max_rel_diff": max_rel,
                "converged_sweeps": int(solution.iterations),
                "converged_residual": float(solution.residual),
                "jax_converge_s": round(converge_s, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
