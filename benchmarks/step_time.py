"""Train-step time of IQLearn against MLE: same model, same batch, alternated in one process.

    python benchmarks/step_time.py [--preset small] [--batch 16] [--seq 192] [--vocab 0] [--vocab_chunk N]
        [--response_budget F]
        [--repeats 30]

Prints one JSON line: both medians (seconds per step) and "ratio" = iqlearn / mle (target <= 1.03).
The optimizer is the one of experiments/arith.py; --vocab N overrides the preset's vocabulary, to
weigh the loss as real vocabularies do; --vocab_chunk and --response_budget as in the `loss` block.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from jirl import forward, host_memory, losses, models
from jirl.experiment import load_config
from jirl.optimizer import make_optimizer
from jirl.train import create_train_state, make_train_step

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=192)
    parser.add_argument("--vocab", type=int, default=0, help="override the vocabulary size (0: the preset's)")
    parser.add_argument("--vocab_chunk", type=int, default=forward.DEFAULT_VOCAB_CHUNK)
    parser.add_argument("--response_budget", type=float, default=forward.DEFAULT_RESPONSE_BUDGET)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    host_memory.reuse_freed_memory()  # as `jirl train` runs

    overrides = {"vocab_size": args.vocab} if args.vocab else {}
    cfg = models.get_config(args.preset, **overrides)
    train_cfg = load_config(os.path.join(ROOT, "experiments", "arith.py"), "mle").train
    tx, schedule = make_optimizer(train_cfg)
    rng = np.random.default_rng(0)
    tokens = rng.integers(3, cfg.vocab_size, (args.batch, args.seq + 1)).astype(np.int32)
    mask = (np.arange(args.seq)[None] >= args.seq // 3).astype(np.float32).repeat(args.batch, 0)
    batch = {
        "inputs": jnp.asarray(tokens[:, :-1]),
        "targets": jnp.asarray(tokens[:, 1:]),
        "loss_mask": jnp.asarray(mask),
    }

    head = forward.HeadOptions(args.vocab_chunk, args.response_budget)
    objectives = {"mle": losses.get("mle"), "iqlearn": losses.get("iqlearn", lam=0.1, gamma=1.0)}
    steps, states = {}, {}
    for name, loss_fn in objectives.items():
        graphdef, states[name] = create_train_state(cfg, tx, seed=0)
        steps[name] = make_train_step(graphdef, loss_fn, tx, schedule, head=head)

    def run(name: str) -> float:
        # Each step starts from the same initial state (a fresh copy, since the step donates it),
        # so both objectives compute on identical parameters and values.
        state = jax.block_until_ready(jax.tree.map(jnp.copy, states[name]))
        start = time.perf_counter()
        _, metrics = steps[name](state, batch)
        jax.block_until_ready(metrics["loss"])
        return time.perf_counter() - start

    for _ in range(args.warmup):
        for name in objectives:
            run(name)
    times: dict[str, list[float]] = {name: [] for name in objectives}
    for i in range(args.repeats):
        order = list(objectives) if i % 2 == 0 else list(objectives)[::-1]
        for name in order:
            times[name].append(run(name))
    medians = {name: statistics.median(t) for name, t in times.items()}
    print(
        json.dumps(
            {
                "benchmark": "step_time",
                "preset": args.preset,
                "vocab_size": cfg.vocab_size,
                "vocab_chunk": args.vocab_chunk,
                "response_budget": args.response_budget,
                "batch": args.batch,
                "seq": args.seq,
                "repeats": args.repeats,
                "backend": jax.default_backend(),
                "machine": platform.machine(),
                "mle_median_s": round(medians["mle"], 5),
                "iqlearn_median_s": round(medians["iqlearn"], 5),
                "ratio": round(medians["iqlearn"] / medians["mle"], 4),
                "tokens_per_sec_mle": round(args.batch * args.seq / medians["mle"], 1),
            }
        )
    )


if __name__ == "__main__":
    main()
