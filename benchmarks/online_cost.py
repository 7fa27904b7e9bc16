"""The cost table of the IQLearn paper (Wulfmeier et al. 2024, Table 1): the time of an MLE update, an
offline IQLearn update, an online IQLearn update and the sampling of its policy batch, per preset.

    python benchmarks/online_cost.py [--presets tiny,small] [--batch 16] [--seq 192] [--max_new_tokens 96]
        [--repeats 10] [--warmup 2] [--data_dir data]

On the arith task (experiments/arith.py, its optimizer, one expert batch of --batch x --seq packed
examples), each preset's model and each variant built as `jirl train` builds them:

  mle_update_s       the MLE train step;
  iqlearn_update_s   the offline IQLearn train step (lam 0.1, gamma 0.99);
  online_update_s    the online IQLearn train step (alpha 0.1, lam 0.1, gamma 0.99) given a policy
                     batch sampled once beforehand;
  sampling_s         one sampling of a policy batch for the expert batch: the online `PolicySampler`
                     (sample_every = 1, temperature 1, up to --max_new_tokens new tokens per prompt,
                     one response per expert example, packed into the batch's shape and put on the
                     devices), called at a new step number each time so that it samples afresh.

Every update starts from the same initial parameters (a copy: the step donates its state); the four
variants alternate in one process (forward, then reversed), compile and --warmup rounds are excluded,
`jax.block_until_ready` waits for every result. Prints one JSON line per preset: the medians,
online_step_s = sampling_s + online_update_s, the ratios online_over_offline = online_step_s /
iqlearn_update_s and iqlearn_over_mle = iqlearn_update_s / mle_update_s, the tokens sampled per
batch (median; EOS included, the prompts' padding rows not) and the sampling's tokens/s.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp

from jirl import data, experiment, host_memory, sharding
from jirl.train import online
from jirl.train.state import create_sharded_train_state, sharded_state_target
from jirl.train.step import run_train_step

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAM, GAMMA, ALPHA = 0.1, 0.99, 0.1
OBJECTIVES = ("mle", "iqlearn", "iqlearn_online")  # experiment.OBJECTIVES names
VARIANTS = ("mle_update_s", "iqlearn_update_s", "online_update_s", "sampling_s")


def _config(objective: str, preset: str, args: argparse.Namespace):
    config = experiment.load_config(os.path.join(ROOT, "experiments", "arith.py"), objective)
    config.model.preset = preset
    config.task.update(seq_len=args.seq, data_dir=args.data_dir)
    config.train.batch_size = args.batch
    config.online.update(sample_every=1, max_new_tokens=args.max_new_tokens)
    if objective != "mle":
        config.loss.update(lam=LAM, gamma=GAMMA, alpha=ALPHA if objective == "iqlearn_online" else 0.0)
    return config


def measure(preset: str, args: argparse.Namespace) -> dict:
    runs = {name: experiment.build(_config(name, preset, args), prepare=True) for name in OBJECTIVES}
    initial, graphdefs, steps = {}, {}, {}
    for name, run in runs.items():
        _, initial[name], shardings = create_sharded_train_state(run.model, run.tx, 0, run.mesh, run.rules)
        graphdefs[name], _, _ = sharded_state_target(run.model, run.tx, run.mesh, run.rules)
        steps[name] = run_train_step(run, graphdefs[name], shardings)
    run = runs["iqlearn_online"]
    sampler = online.PolicySampler(
        graphdefs["iqlearn_online"],
        run.tokenizer,
        every=1,
        max_new_tokens=run.online.max_new_tokens,
        temperature=float(run.online.temperature),
        seed=0,
    )
    batches = data.make_batches(run.task, "train", data_dir=run.data_dir, tokenizer=run.tokenizer,
                                seq_len=args.seq, batch_size=args.batch, seed=0)  # fmt: skip
    expert = {k: v for k, v in next(batches).items() if not k.startswith("_")}
    data.pop_stats(expert)
    expert_on_devices = jax.block_until_ready(sharding.shard_batch(expert, run.mesh, run.rules))
    step_numbers = itertools.count(1)
    sampled: dict[str, list[float]] = {"tokens": [], "dropped": []}

    def sample() -> dict:
        policy, stats = sampler(initial["iqlearn_online"].params, expert, next(step_numbers))
        sampled["tokens"].append(stats["sample_tokens"])
        sampled["dropped"].append(stats["policy_examples_dropped"])
        return jax.block_until_ready(sharding.shard_batch(policy, run.mesh, run.rules))

    policy = sample()  # the online update's policy batch; compiles the decoding

    def update(name: str, policy_batch: dict | None = None) -> float:
        state = jax.block_until_ready(jax.tree.map(jnp.copy, initial[name]))  # the step donates it
        start = time.perf_counter()
        jax.block_until_ready(steps[name](state, expert_on_devices, policy_batch))
        return time.perf_counter() - start

    def sampling() -> float:
        start = time.perf_counter()
        sample()
        return time.perf_counter() - start

    variants = {
        "mle_update_s": lambda: update("mle"),
        "iqlearn_update_s": lambda: update("iqlearn"),
        "online_update_s": lambda: update("iqlearn_online", policy),
        "sampling_s": sampling,
    }
    for _ in range(1 + args.warmup):  # compile, then warm up
        for fn in variants.values():
            fn()
    for values in sampled.values():
        values.clear()
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for i in range(args.repeats):
        for name in VARIANTS if i % 2 == 0 else VARIANTS[::-1]:
            times[name].append(variants[name]())
    med = {name: statistics.median(t) for name, t in times.items()}
    online_step = med["sampling_s"] + med["online_update_s"]
    rates = [n / t for n, t in zip(sampled["tokens"], times["sampling_s"])]
    device = jax.devices()[0]
    return {
        "benchmark": "online_cost",
        "preset": preset,
        "params": sum(x.size for x in jax.tree.leaves(initial["mle"].params)),
        "batch": args.batch,
        "seq": args.seq,
        "max_new_tokens": args.max_new_tokens,
        "lam": LAM,
        "gamma": GAMMA,
        "alpha": ALPHA,
        "temperature": float(run.online.temperature),
        "repeats": args.repeats,
        "warmup": args.warmup,
        "platform": jax.default_backend(),
        "device_kind": device.device_kind,
        "devices": jax.device_count(),
        "jax_version": jax.__version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        **{name: round(m, 4) for name, m in med.items()},
        "online_step_s": round(online_step, 4),
        "online_over_offline": round(online_step / med["iqlearn_update_s"], 3),
        "iqlearn_over_mle": round(med["iqlearn_update_s"] / med["mle_update_s"], 3),
        "expert_examples": len(online.prompts_of(expert)),
        "sampled_tokens": statistics.median(sampled["tokens"]),
        "sampling_tokens_per_s": round(statistics.median(rates), 1),
        "policy_examples_dropped": statistics.median(sampled["dropped"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="tiny,small", help="comma-separated model presets")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=192)
    parser.add_argument("--max_new_tokens", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--data_dir", default=os.path.join(ROOT, "data"))
    args = parser.parse_args()
    host_memory.reuse_freed_memory_if_cpu()  # as `jirl train` runs
    for preset in args.presets.split(","):
        print(json.dumps(measure(preset, args)), flush=True)


if __name__ == "__main__":
    main()
