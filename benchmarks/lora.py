"""LoRA against full fine-tuning: trainable parameters and optimizer-state bytes of a preset (shapes only,
nothing allocated), and the train step's time on a small model, alternated in one process.

    python benchmarks/lora.py [--count_preset qwen3_0_6b] [--preset small] [--rank 16]
        [--targets q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj] [--batch 16] [--seq 192]
        [--rounds 5] [--steps 5] [--warmup 2] [--data_dir data]

Counts: `jax.eval_shape` of the full train state and of the LoRA one (adapters and their optimizer
state; the base is not trained), for `--count_preset`. Timing: the offline IQLearn step of `jirl
train` on `--preset` with the `arith` batch, full fine-tuning and LoRA (alpha = 2 x rank, base in
float32) each compiled and warmed up, then `--rounds` rounds, each running `--steps` steps of one and
then the other (the order swapped every round); the step time of a round is its wall time over its
steps. Prints one JSON line: the counts, the median step seconds and the median of the per-round
ratios LoRA / full.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time

import jax

from jirl import data, experiment, host_memory, models, sharding
from jirl.train import lora as lora_run
from jirl.train.state import create_sharded_train_state, create_train_state, sharded_state_target
from jirl.train.step import run_train_step

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALL_TARGETS = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"


def _config(preset: str, args: argparse.Namespace, rank: int):
    config = experiment.load_config(os.path.join(ROOT, "experiments", "arith.py"), "iqlearn")
    config.model.preset = preset
    config.task.update(seq_len=args.seq, data_dir=args.data_dir)
    config.train.batch_size = args.batch
    if rank:
        config.model.lora.update(rank=rank, targets=tuple(args.targets.split(",")))
    return config


def _size(tree) -> int:
    return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


def _bytes(tree) -> int:
    return sum(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(tree))


def counts(preset: str, args: argparse.Namespace) -> dict:
    """Trainable parameters and optimizer-state bytes, full and LoRA, from shapes alone."""
    full_run = experiment.build(_config(preset, args, 0), tokenize=False, training=False)
    lora = experiment.build(_config(preset, args, args.rank), tokenize=False, training=False)
    full = jax.eval_shape(lambda: create_train_state(full_run.model, full_run.tx, 0)[1])
    adapted = jax.eval_shape(lambda: lora_run.fresh_state(lora.model, lora.lora, lora.tx, 0))
    return {
        "preset": preset,
        "num_params": full_run.model.num_params(),
        "full": {"trainable_params": _size(full.params), "optimizer_bytes": _bytes(full.opt_state)},
        "lora": {
            "trainable_params": _size(adapted.params),
            "optimizer_bytes": _bytes(adapted.opt_state),
            "frozen_base_bytes_bfloat16": 2 * full_run.model.num_params(),
        },
    }


def _parts(run):
    """(state, step) as the training loop builds them: full fine-tuning or LoRA over a base from the seed."""
    if run.lora is None:
        graphdef, _, _ = sharded_state_target(run.model, run.tx, run.mesh, run.rules)
        _, state, shardings = create_sharded_train_state(run.model, run.tx, 0, run.mesh, run.rules)
        return state, run_train_step(run, graphdef, shardings)
    t = lora_run.targets(run)
    step = run_train_step(run, t.graphdef, t.shardings, t.base_shardings).with_base(
        lora_run.load_base(run, t)
    )
    return lora_run.initial_state(run, t), step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count_preset", default="qwen3_0_6b")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--targets", default=ALL_TARGETS)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=192)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--data_dir", default=os.path.join(ROOT, "data"))
    args = parser.parse_args()
    host_memory.reuse_freed_memory()  # as `jirl train` runs
    report = {"benchmark": "lora", "rank": args.rank, "targets": args.targets.split(",")}
    report["counts"] = counts(args.count_preset, args)

    runs = {"full": experiment.build(_config(args.preset, args, 0), prepare=True)}
    runs["lora"] = experiment.build(_config(args.preset, args, args.rank), prepare=True)
    run = runs["full"]
    batches = data.make_batches(run.task, "train", data_dir=run.data_dir, tokenizer=run.tokenizer,
                                seq_len=args.seq, batch_size=args.batch, seed=0)  # fmt: skip
    expert = {k: v for k, v in next(batches).items() if not k.startswith("_")}
    data.pop_stats(expert)
    expert = sharding.shard_batch(expert, run.mesh, run.rules)
    states, steps = {}, {}
    for name, r in runs.items():
        states[name], steps[name] = _parts(r)

    def timed(name: str, n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            states[name], metrics = steps[name](states[name], expert)
        jax.block_until_ready(metrics["loss"])
        return (time.perf_counter() - start) / n

    for name in runs:
        timed(name, args.warmup)
    seconds = {name: [] for name in runs}
    for i in range(args.rounds):
        for name in ("full", "lora") if i % 2 == 0 else ("lora", "full"):
            seconds[name].append(timed(name, args.steps))
    ratios = [lo / fu for lo, fu in zip(seconds["lora"], seconds["full"])]
    report["step_time"] = {
        "preset": args.preset,
        "num_params": runs["full"].model.num_params(),
        "trainable_params_lora": models.lora.num_adapter_params(runs["lora"].model, runs["lora"].lora),
        "batch": args.batch,
        "seq": args.seq,
        "rounds": args.rounds,
        "steps_per_round": args.steps,
        "median_step_s": {name: round(statistics.median(s), 4) for name, s in seconds.items()},
        "round_ratios_lora_to_full": [round(r, 3) for r in ratios],
        "median_ratio_lora_to_full": round(statistics.median(ratios), 3),
    }
    report.update(backend=jax.default_backend(), machine=platform.machine(), cpus=os.cpu_count())
    print(json.dumps(report))


if __name__ == "__main__":
    main()
