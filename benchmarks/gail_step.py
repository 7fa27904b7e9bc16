"""Step time of GAIL against MLE and online IQLearn: same model, same expert batch, sampling included,
alternated in one process.

    python benchmarks/gail_step.py [--preset small] [--batch 16] [--seq 192] [--max_new_tokens 96]
        [--repeats 10] [--data_dir data]

Each repeat runs, for each objective, one training iteration as `jirl train` does with
online.sample_every = 1: the policy's samples for the batch's prompts (online IQLearn: one per
example; GAIL: K = loss.samples_per_prompt for each of the first n / K prompts, and their
log-probabilities), then the step. Every iteration starts from the same initial parameters. Prints
one JSON line: the median seconds of sampling, step and both, per objective, and the ratios of GAIL's
total to the others'.
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

from jirl import data, experiment, host_memory, sharding
from jirl.train import adversarial, online
from jirl.train.state import create_sharded_train_state, sharded_state_target
from jirl.train.step import run_train_step

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OBJECTIVES = ("mle", "iqlearn_online", "gail")


def _config(objective: str, args: argparse.Namespace):
    config = experiment.load_config(os.path.join(ROOT, "experiments", "arith.py"), objective)
    config.model.preset = args.preset
    config.task.update(seq_len=args.seq, data_dir=args.data_dir)
    config.train.batch_size = args.batch
    config.online.update(sample_every=1, max_new_tokens=args.max_new_tokens)
    return config


def _iteration(run):
    """(initial state, step, sampler or None) of one objective, as the training loop builds them."""
    _, state, shardings = create_sharded_train_state(run.model, run.tx, 0, run.mesh, run.rules)
    if run.online is not None:
        sampler_options = dict(every=1, max_new_tokens=run.online.max_new_tokens, temperature=1.0, seed=0)
    if run.discriminator is None:
        graphdef, _, _ = sharded_state_target(run.model, run.tx, run.mesh, run.rules)
        step = run_train_step(run, graphdef, shardings)
        sampler = None
        if run.online is not None:
            sampler = online.PolicySampler(graphdef, run.tokenizer, **sampler_options)
        return state, step, sampler
    graphdef, disc_graphdef, _, shardings = adversarial.state_target(run)
    state = adversarial.initial_state(run, state, shardings, 0)
    step = adversarial.make_adversarial_step(graphdef, disc_graphdef, run, shardings)
    sampler = online.PolicySampler(
        graphdef,
        run.tokenizer,
        samples_per_prompt=int(run.objective.options["samples_per_prompt"]),
        sample_logp=adversarial.make_sample_logp(graphdef, float(run.online.temperature)),
        **sampler_options,
    )
    return state, step, sampler


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
    host_memory.reuse_freed_memory()  # as `jirl train` runs

    runs, parts = {}, {}
    for name in OBJECTIVES:
        runs[name] = experiment.build(_config(name, args), prepare=True)
        parts[name] = _iteration(runs[name])
    run = runs["mle"]
    batches = data.make_batches(run.task, "train", data_dir=run.data_dir, tokenizer=run.tokenizer,
                                seq_len=args.seq, batch_size=args.batch, seed=0)  # fmt: skip
    expert = {k: v for k, v in next(batches).items() if not k.startswith("_")}
    data.pop_stats(expert)

    def iterate(name: str) -> tuple[float, float]:
        initial, step, sampler = parts[name]
        state = jax.block_until_ready(jax.tree.map(jnp.copy, initial))  # the step donates it
        run = runs[name]
        start = time.perf_counter()
        policy = None
        if sampler is not None:
            sampler._last = None  # sample every iteration
            policy, _ = sampler(state.params, expert, 1)
            policy = sharding.shard_batch(policy, run.mesh, run.rules)
        sampled = time.perf_counter()
        _, metrics = step(state, sharding.shard_batch(expert, run.mesh, run.rules), policy)
        jax.block_until_ready(metrics["loss"])
        end = time.perf_counter()
        return sampled - start, end - sampled

    for _ in range(args.warmup):
        for name in OBJECTIVES:
            iterate(name)
    times = {name: {"sample": [], "step": [], "total": []} for name in OBJECTIVES}
    for i in range(args.repeats):
        for name in OBJECTIVES if i % 2 == 0 else OBJECTIVES[::-1]:
            sample_s, step_s = iterate(name)
            times[name]["sample"].append(sample_s)
            times[name]["step"].append(step_s)
            times[name]["total"].append(sample_s + step_s)
    medians = {name: {k: round(statistics.median(v), 4) for k, v in t.items()} for name, t in times.items()}
    print(
        json.dumps(
            {
                "benchmark": "gail_step",
                "preset": args.preset,
                "batch": args.batch,
                "seq": args.seq,
                "max_new_tokens": args.max_new_tokens,
                "samples_per_prompt": int(runs["gail"].objective.options["samples_per_prompt"]),
                "discriminator": runs["gail"].objective.options["discriminator"],
                "repeats": args.repeats,
                "backend": jax.default_backend(),
                "machine": platform.machine(),
                "median_s": medians,
                "ratio_gail_to_mle": round(medians["gail"]["total"] / medians["mle"]["total"], 3),
                "ratio_gail_to_iqlearn_online": round(
                    medians["gail"]["total"] / medians["iqlearn_online"]["total"], 3
                ),
                "step_ratio_gail_to_iqlearn_online": round(
                    medians["gail"]["step"] / medians["iqlearn_online"]["step"], 3
                ),
            }
        )
    )


if __name__ == "__main__":
    main()
