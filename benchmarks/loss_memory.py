"""The train step's memory and time with full logits against vocabulary chunks, for growing vocabularies.

    python benchmarks/loss_memory.py [--vocabs 259,32768,131072,256000] [--batch 8] [--seq 1024]
        [--vocab_chunk 4096] [--response_budget 0.5] [--prompt_fraction 0.75] [--objective iqlearn]
        [--time_vocabs 259,32768] [--repeats 10]

One JSON line per vocabulary size V, for three heads of the same step: `full` (loss.vocab_chunk=0),
`chunked` (chunks of about --vocab_chunk entries, every position: response_budget=1) and `gathered`
(chunks, and each row's response positions gathered into --response_budget x T slots). Each has the
compiled step's temporaries (XLA's memory analysis, as `jirl plan` reads it) and their ratio to
full; for the sizes in --time_vocabs also median step times, the three alternated in one process,
and their ratio to full. Rows are one example each, the first --prompt_fraction of it prompt (the
prompt-heavy case gathering is for). The model is `tiny` (width 32, 2 layers) with the vocabulary and
length overridden, so that the output layer dominates as it does at scale.
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
from flax import nnx

from jirl import forward, losses, models
from jirl.experiment import load_config
from jirl.optimizer import make_optimizer
from jirl.train import create_train_state, make_train_step

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIB = 1024**3


def _batch(vocab: int, b: int, t: int, prompt_fraction: float) -> dict[str, jax.Array]:
    """Random tokens, one example per row: the first `prompt_fraction` of each row is prompt (mask 0)."""
    rng = np.random.default_rng(0)
    tokens = rng.integers(3, vocab, (b, t + 1)).astype(np.int32)
    mask = (np.arange(t)[None] >= int(t * prompt_fraction)).astype(np.float32).repeat(b, 0)
    return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "loss_mask": mask}


def _median_times(steps: dict, state, batch, repeats: int) -> dict[str, float]:
    """Median seconds per step of each compiled step, alternated, each from a fresh copy of `state`."""

    def run(step) -> float:
        fresh = jax.block_until_ready(jax.tree.map(jnp.copy, state))
        start = time.perf_counter()
        jax.block_until_ready(step(fresh, batch)[1]["loss"])
        return time.perf_counter() - start

    for step in steps.values():  # warm up
        run(step)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(repeats):
        for name in list(steps)[:: 1 if i % 2 == 0 else -1]:
            times[name].append(run(steps[name]))
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocabs", default="259,32768,131072,256000")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--vocab_chunk", type=int, default=forward.DEFAULT_VOCAB_CHUNK)
    parser.add_argument("--objective", default="iqlearn", choices=["iqlearn", "mle"])
    parser.add_argument("--response_budget", type=float, default=forward.DEFAULT_RESPONSE_BUDGET)
    parser.add_argument("--prompt_fraction", type=float, default=0.75)
    parser.add_argument("--time_vocabs", default="259,32768", help="the sizes to time as well ('' for none)")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()

    train_cfg = load_config(os.path.join(ROOT, "experiments", "arith.py"), "mle").train
    tx, schedule = make_optimizer(train_cfg)
    objective = losses.get(args.objective, **({"lam": 0.1} if args.objective == "iqlearn" else {}))
    timed = {int(v) for v in args.time_vocabs.split(",") if v}
    for vocab in (int(v) for v in args.vocabs.split(",")):
        cfg = models.get_config("tiny", vocab_size=vocab, max_len=args.seq, scan_layers=False)
        batch = _batch(vocab, args.batch, args.seq, args.prompt_fraction)
        if vocab in timed:
            graphdef, state = create_train_state(cfg, tx, seed=0)
            target = state
        else:  # memory only: compile for abstract arrays, allocate nothing
            graphdef, _ = models.split(nnx.eval_shape(lambda: models.create(cfg, seed=0)))
            state, target = None, jax.eval_shape(lambda: create_train_state(cfg, tx, seed=0)[1])
        row = {
            "benchmark": "loss_memory",
            "objective": args.objective,
            "vocab_size": vocab,
            "batch": args.batch,
            "seq": args.seq,
            "vocab_chunk": args.vocab_chunk,
            "response_budget": args.response_budget,
            "prompt_fraction": args.prompt_fraction,
        }
        heads = {
            "full": forward.HeadOptions(0, 1.0),
            "chunked": forward.HeadOptions(args.vocab_chunk, 1.0),
            "gathered": forward.HeadOptions(args.vocab_chunk, args.response_budget),
        }
        steps = {}
        for name, head in heads.items():
            step = make_train_step(graphdef, objective, tx, schedule, head=head)
            steps[name] = step.lower(target, batch).compile()
            row[f"temp_gib_{name}"] = round(steps[name].memory_analysis().temp_size_in_bytes / GIB, 4)
        for name in ("chunked", "gathered"):
            row[f"temp_ratio_{name}"] = round(row[f"temp_gib_{name}"] / row["temp_gib_full"], 4)
        if state is not None:
            medians = _median_times(steps, state, {k: jnp.asarray(v) for k, v in batch.items()}, args.repeats)
            row.update({f"time_s_{name}": round(t, 4) for name, t in medians.items()})
            for name in ("chunked", "gathered"):
                row[f"time_ratio_{name}"] = round(medians[name] / medians["full"], 4)
            row["repeats"] = args.repeats
        row.update(backend=jax.default_backend(), machine=platform.machine())
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
