"""Tokens/s the input pipeline delivers against tokens/s the `small` model's train step consumes.

    python benchmarks/input_pipeline.py [--batches 200] [--steps 20] [--seq 192] [--batch 16]

Both are measured in one process on the arith task (packing on, worker_count 0) and counted as
non-padding tokens. Prints one JSON line with both rates and "ratio" = pipeline / train step
(target >= 5: the pipeline is never the bottleneck).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from jirl import data, losses, models
from jirl.experiment import load_config
from jirl.optimizer import make_optimizer
from jirl.train import create_train_state, make_train_step

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seq", type=int, default=192)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--data-dir", default=os.path.join(tempfile.gettempdir(), "jirl_bench_data"))
    args = parser.parse_args()

    task, tokenizer = data.get_task("arith"), data.ByteTokenizer()
    task.prepare(args.data_dir)

    def batches():
        return data.make_batches(
            task,
            "train",
            data_dir=args.data_dir,
            tokenizer=tokenizer,
            seq_len=args.seq,
            batch_size=args.batch,
            seed=0,
        )

    iterator = batches()
    next(iterator)  # open files, first shuffle
    start, tokens = time.perf_counter(), 0
    for _ in range(args.batches):
        tokens += int(np.sum(next(iterator)["segment_ids"] > 0))
    pipeline_rate = tokens / (time.perf_counter() - start)

    config = load_config(os.path.join(ROOT, "experiments", "arith.py"), "iqlearn")
    tx, schedule = make_optimizer(config.train)
    model_cfg = models.get_config("small", scan_layers=False)
    graphdef, state = create_train_state(model_cfg, tx, seed=0)
    step = make_train_step(graphdef, losses.get("iqlearn", lam=0.1), tx, schedule)
    iterator = batches()
    device_batches = []
    for _ in range(args.steps + 2):
        batch = next(iterator)
        data.pop_stats(batch)  # statistics rows stay on the host, as in the train loop
        device_batches.append({k: jnp.asarray(v) for k, v in batch.items()})
    for batch in device_batches[:2]:  # compile, warm up
        state, metrics = step(state, batch)
    jax.block_until_ready(metrics["loss"])
    rates = []
    for batch in device_batches[2:]:
        start = time.perf_counter()
        state, metrics = step(state, batch)
        jax.block_until_ready(metrics["loss"])
        rates.append(float(jnp.sum(batch["segment_ids"] > 0)) / (time.perf_counter() - start))
    train_rate = statistics.median(rates)
    print(json.dumps({
        "benchmark": "input_pipeline", "seq": args.seq, "batch": args.batch, "batches": args.batches,
        "pipeline_tokens_per_sec": round(pipeline_rate), "train_step_tokens_per_sec": round(train_rate),
        "ratio": round(pipeline_rate / train_rate, 2), "backend": jax.default_backend(),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
