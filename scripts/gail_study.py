"""GAIL next to MLE and online IQLearn on `arith`, three seeds, all fine-tuned from one MLE model.

Usage:
  python scripts/gail_study.py [--base_steps 400] [--steps 200] [--seeds 0,1,2] [--runs DIR]
      [--out docs/results/gail.md]

As in the paper, the adversarial baseline starts from an MLE checkpoint: `jirl train` MLE-trains the
`small` model for --base_steps (seed 0), `jirl export` writes it as a Hugging Face folder, and every
variant starts from it (`model.init_from`) for --steps more at learning rate 1e-3: MLE continued,
online IQLearn (alpha 0.1) and GAIL (its defaults: AIRL reward, pg_weight 1, mle_weight 1, kl 0.1,
K = 4 samples per prompt, a `tiny` discriminator; then with pg_weight 0.03, and with pg_weight 0.03
and a copy of the policy as the discriminator), the online ones sampling every 4 steps. `jirl eval`
then samples K=4 responses for 100 validation prompts at T = 0.5 and 1.0. Finished runs are
reused, so the script can be stopped and started again. Writes the table (mean ± standard error
over seeds, and the range across seeds) and a quality-diversity plot to --out and next to it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from arith_study import TEMPERATURES, _run, mean_se, plot_study  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE_METRICS = ("answer_accuracy", "self_bleu", "distinct_2")  # per temperature, in the table's order
FINE_TUNE = ["--config.train.learning_rate=1e-3", "--config.train.warmup_steps=20"]
VARIANTS = {  # name -> (objective, extra overrides)
    "MLE (continued)": ("mle", []),
    "online IQLearn alpha=0.1": ("iqlearn_online", ["--config.online.sample_every=4"]),
    "GAIL": ("gail", ["--config.online.sample_every=4"]),
    # L_PG sums over a response's tokens (about 32 here): 0.03 puts it on the other terms' per-token scale.
    "GAIL pg_weight=0.03": ("gail", ["--config.online.sample_every=4", "--config.loss.pg_weight=0.03"]),
    "GAIL pg_weight=0.03, D=policy copy": (
        "gail",
        [
            "--config.online.sample_every=4",
            "--config.loss.pg_weight=0.03",
            "--config.loss.discriminator=policy",
        ],
    ),
}


def _train(objective: str, workdir: str, steps: int, seed: int, extra: list[str]) -> float:
    start = time.time()
    _run([sys.executable, "-m", "jirl.cli", "train", f"--config=experiments/arith.py:{objective}",
          f"--workdir={workdir}", "--progress=false", f"--config.train.steps={steps}",
          f"--config.train.seed={seed}", "--config.eval.every=0", "--config.eval.num_examples=100",
          "--config.train.checkpoint_every=0", *extra])  # fmt: skip
    return time.time() - start


def _evaluate(workdir: str, seed: int) -> dict:
    report_path = os.path.join(workdir, "eval_validation.json")
    if not os.path.exists(report_path):
        _run([sys.executable, "-m", "jirl.cli", "eval", f"--workdir={workdir}", "--samples=4",
              f"--temperature={','.join(str(t) for t in TEMPERATURES)}", "--num_prompts=100",
              f"--seed={seed}"])  # fmt: skip
    with open(report_path) as f:
        report = json.load(f)
    with open(os.path.join(workdir, "summary.json")) as f:
        report["greedy_accuracy"] = json.load(f)["answer_accuracy"]
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        report["metrics"] = [json.loads(line) for line in f]
    return report


def base_model(args) -> tuple[str, dict]:
    """The MLE model every variant starts from, as a Hugging Face folder, and its evaluation."""
    workdir = os.path.join(args.runs, "base_mle")
    folder = os.path.join(workdir, "hf")
    if not os.path.exists(os.path.join(workdir, "summary.json")):
        _train("mle", workdir, args.base_steps, 0, [])
    if not os.path.exists(os.path.join(folder, "config.json")):
        _run([sys.executable, "-m", "jirl.cli", "export", f"--workdir={workdir}", f"--out={folder}"])
    return folder, _evaluate(workdir, 0)


def fine_tune(name: str, seed: int, base: str, args) -> dict:
    objective, overrides = VARIANTS[name]
    slug = re.sub(r"[^a-z0-9.]+", "_", name.lower()).strip("_")
    workdir = os.path.join(args.runs, f"{slug}_s{seed}")
    seconds = None
    if not os.path.exists(os.path.join(workdir, "summary.json")):
        extra = [f"--config.model.init_from={base}", *FINE_TUNE, *overrides]
        seconds = _train(objective, workdir, args.steps, seed, extra)
    report = _evaluate(workdir, seed)
    timing = os.path.join(workdir, "train_seconds.json")
    if seconds is not None:
        with open(timing, "w") as f:
            json.dump({"train_seconds": seconds}, f)
    if os.path.exists(timing):
        with open(timing) as f:
            report["train_seconds"] = json.load(f)["train_seconds"]
    print(f"{name} seed {seed}: greedy accuracy {report['greedy_accuracy']:.3f}", flush=True)
    return report


def _last_window(report: dict) -> dict:
    """The last logged training window of a run (its metrics.jsonl record with a loss)."""
    return [m for m in report["metrics"] if "nll" in m][-1]


def _mean_se(values: list[float]) -> str:
    """Mean ± standard error over seeds; the value alone for one run."""
    return f"{values[0]:.3f}" if len(values) == 1 else mean_se(values)


def spread(values: list[float]) -> str:
    return f"{min(values):.3f}-{max(values):.3f}" if values else "n/a"


def write_report(base: dict, results: dict[str, list[dict]], args) -> None:
    flags = f"--base_steps {args.base_steps} --steps {args.steps} --seeds {args.seeds}"
    command = f"python scripts/gail_study.py {flags}"
    lines = [
        "# arith: GAIL next to MLE and online IQLearn",
        "",
        f"Written by `{command}`. The `small` model (1.2M parameters) MLE-trained for "
        f"{args.base_steps} steps (seed 0), then each variant for {args.steps} more steps from it (batch 16, "
        "learning rate 1e-3, warm-up 20), seeds as listed; evaluation on 100 validation problems, K=4 "
        "samples each at each temperature. Mean ± standard error over seeds, and the range across seeds "
        "(stability). Accuracy is the fraction of samples whose `#### N` answer is right; Self-BLEU "
        "(0-100) compares the K samples of a prompt with each other (lower = more diverse).",
        "",
        "| variant | seeds | greedy acc. | range | "
        + " | ".join(f"acc. T={t} | Self-BLEU T={t} | distinct-2 T={t}" for t in TEMPERATURES)
        + " | train s |",
        "| --- | --- | --- | --- | " + " | ".join("--- | --- | ---" for _ in TEMPERATURES) + " | --- |",
    ]
    rows = {"start (MLE base)": [base], **results}
    for name, reports in rows.items():
        greedy = [r["greedy_accuracy"] for r in reports]
        cells = [name, str(len(reports)), _mean_se(greedy), spread(greedy)]
        for i, _ in enumerate(TEMPERATURES):
            by_t = [r["by_temperature"][i] for r in reports]
            cells += [
                _mean_se([x[key] for x in by_t]) for key in ("answer_accuracy", "self_bleu", "distinct_2")
            ]
        seconds = [r["train_seconds"] for r in reports if r.get("train_seconds")]
        cells.append(f"{np.mean(seconds):.0f}" if seconds else "n/a")
        lines.append("| " + " | ".join(cells) + " |")
    gail = {name: reports for name, reports in results.items() if name.startswith("GAIL")}
    if gail:
        lines += [
            "",
            "GAIL's training, the last logged window (20 steps) of each run: discriminator accuracy on "
            "expert and policy tokens, the per-token AIRL reward's mean and spread, the KL to the start "
            "(nats per policy token), the policy's entropy, the expert NLL (the start's is "
            f"{_last_window(base)['nll']:.3f} at its last window), and the largest logged gradient norm of "
            "the run (a 20-step mean, before clipping at 1).",
            "",
            "| variant | seed | disc. acc. expert | disc. acc. policy | reward mean | reward std | KL "
            "| policy entropy | expert NLL | max grad norm |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        keys = ("disc_expert_accuracy", "disc_policy_accuracy", "reward_mean", "reward_std", "kl",
                "policy_entropy", "nll")  # fmt: skip
        for name, reports in gail.items():
            for seed, report in zip(args.seeds.split(","), reports):
                logged = [m for m in report["metrics"] if "disc_loss" in m]
                cells = [f"{logged[-1][k]:.3f}" for k in keys] + [
                    f"{max(m['grad_norm'] for m in logged):.1f}"
                ]
                lines.append(f"| {name} | {seed} | " + " | ".join(cells) + " |")
    title = "arith validation, from one MLE model, mean over seeds"
    plot = plot_study(rows, os.path.join(os.path.dirname(args.out), "gail_quality_diversity.png"), title)
    lines += ["", f"![quality against diversity]({os.path.basename(plot)})", ""]
    notes = os.path.join(os.path.dirname(args.out), "gail_reading.md")
    if os.path.exists(notes):
        with open(notes) as f:
            lines += ["", f.read().strip(), ""]
    with open(args.out, "w") as f:
        f.write("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base_steps", type=int, default=400)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--runs", default="runs/gail_study")
    parser.add_argument("--out", default="docs/results/gail.md")
    args = parser.parse_args()
    base_folder, base = base_model(args)
    results: dict[str, list[dict]] = {}
    for seed in (int(s) for s in args.seeds.split(",")):  # seed-major: a partial study covers every variant
        for name in VARIANTS:
            results.setdefault(name, []).append(fine_tune(name, seed, base_folder, args))
            write_report(base, results, args)


if __name__ == "__main__":
    main()
