"""Policy batches built on the host against built on the devices, side by side in one process.

    python benchmarks/policy_batch.py [--preset small] [--batch 16] [--seq 192] [--max_new_tokens 96]
        [--repeats 10] [--warmup 2]

One unpacked arith expert batch (one example per row, `task.pack=False`: the layout the device path
takes) and the same params; each repetition samples a policy batch at a new step with each path,
alternated (host, device, then device, host, ...): the host path reads the prompts from host
arrays, decodes, brings the tokens back and packs them first-fit in Python, then puts the batch on
the devices (`jirl.train.online.pack`); the device path does it all in jitted code from the expert
batch on the devices (`jirl.train.device_policy`), reading back one scalar. Both draw the same
tokens (row keys by example number; checked). Prints one JSON line: the median seconds of each
path and `ratio` = host / device.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import jax
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from jirl import data, experiment, models, sharding  # noqa: E402
from jirl.train import online  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=192)
    parser.add_argument("--max_new_tokens", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--data_dir", default=os.path.join(ROOT, "data"))
    args = parser.parse_args()

    config = experiment.load_config(os.path.join(ROOT, "experiments", "arith.py"), "iqlearn_online")
    config.task.update(data_dir=args.data_dir, seq_len=args.seq, pack=False)
    config.model.preset = args.preset
    config.train.batch_size = args.batch
    run = experiment.build(config, prepare=True)
    batches = data.make_batches(run.task, "train", data_dir=run.data_dir, tokenizer=run.tokenizer,
                                seq_len=args.seq, batch_size=args.batch, pack=False, seed=0)  # fmt: skip
    expert = next(batches)
    data.pop_stats(expert)
    expert_global = sharding.shard_batch(expert, run.mesh, run.rules)
    graphdef, params = models.split(models.create(run.model, seed=0))
    options = dict(every=1, max_new_tokens=args.max_new_tokens, temperature=1.0, seed=0, mesh=run.mesh,
                   rules=run.rules)  # fmt: skip
    samplers = {
        "host": online.PolicySampler(graphdef, run.tokenizer, **options),
        "device": online.PolicySampler(graphdef, run.tokenizer, on_device=True, **options),
    }

    def sample(name: str, step: int) -> tuple[float, dict]:
        start = time.perf_counter()
        policy, stats = samplers[name](params, expert, step, expert_global)
        jax.block_until_ready(policy)
        return time.perf_counter() - start, stats

    times: dict[str, list[float]] = {"host": [], "device": []}
    tokens = []
    for i in range(args.warmup + args.repeats):
        order = ("host", "device") if i % 2 == 0 else ("device", "host")
        stats = {}
        for name in order:
            seconds, stats[name] = sample(name, step=i + 1)
            if i >= args.warmup:
                times[name].append(seconds)
        if stats["host"]["sample_tokens"] != stats["device"]["sample_tokens"]:
            raise SystemExit(f"the two paths drew different responses at step {i + 1}: {stats}")
        tokens.append(stats["host"]["sample_tokens"])
    host, device = statistics.median(times["host"]), statistics.median(times["device"])
    print(
        json.dumps(
            dict(
                benchmark="policy_batch", preset=args.preset, batch=args.batch, seq=args.seq,
                max_new_tokens=args.max_new_tokens, repeats=args.repeats, platform=platform.machine(),
                backend=jax.default_backend(), devices=jax.device_count(), jax_version=jax.__version__,
                host_median_s=round(host, 4), device_median_s=round(device, 4), ratio=round(host / device, 3),
                sampled_tokens_median=float(np.median(tokens)),
            )
        )
    )  # fmt: skip


if __name__ == "__main__":
    main()
