"""Tables and plots of `scripts/regime_study.py` from its finished runs' records (a small JSON file each)."""

from __future__ import annotations

import json
import os
import re
from typing import NamedTuple

import numpy as np

from jirl.evaluation import paired

CURVE_KEYS = ("eval_nll", "eval_answer_accuracy")
SAMPLES, SAMPLE_PROMPTS, RERANK = 8, 100, 4  # K per prompt, on the first prompts; N for the reward
FIRST_BASE = "first"  # the base of the records written before bases were kept


class Part(NamedTuple):
    """One section of the study: fine-tunes on SIZE examples, their records and workdirs in TAG."""

    tag: str  # records/TAG, runs/TAG, regime_TAG_*.png
    size: int
    label: str  # in plot titles
    heading: str


def read_workdir(workdir: str) -> dict:
    """One finished, evaluated run's measures from its workdir: the study evaluation, the learning
    curves, the final training loss and the training time (what a record keeps; no checkpoints)."""
    with open(os.path.join(workdir, "study_eval.json")) as f:
        run = json.load(f)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    run["curves"] = {key: [(r["step"], r[key]) for r in records if key in r] for key in CURVE_KEYS}
    losses = [r for r in records if "loss" in r]
    last = losses[-1] if losses else {}
    run["final_train"] = {k: v for k, v in last.items() if isinstance(v, (int, float))}
    seconds = os.path.join(workdir, "train_seconds.json")
    if os.path.exists(seconds):
        with open(seconds) as f:
            timing = json.load(f)
        run["train_seconds"], run["train_cores"] = timing["train_seconds"], timing.get("cores", 2)
        run["train_devices"] = timing.get("devices", "1 x cpu")
        if timing.get("resumed_from_steps"):  # stopped part-way and resumed from these checkpoints
            run["train_resumed_from_steps"] = timing["resumed_from_steps"]
    return run


def save_record(path: str, run: dict) -> None:
    """Writes one run's measures (`read_workdir` plus name, seed, size, command) atomically: the study's
    results live in these small files, which are committed, not in workdirs, which are not."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(run, f, separators=(",", ":"))
    os.replace(path + ".tmp", path)


def load_record(path: str) -> dict:
    with open(path) as f:
        run = json.load(f)
    run["curves"] = {k: [tuple(p) for p in v] for k, v in run["curves"].items()}
    return run


def base_of(run: dict) -> str:
    """The base a run fine-tuned: a hash of its weights (`regime_study.base_id`); records written
    before bases were kept come from the study's first base, whose weights were lost."""
    return run.get("base", FIRST_BASE)


def describe_base(base: str) -> str:
    return "the study's first base (trained 2026-12-01; not kept)" if base == FIRST_BASE else f"base {base}"


def greedy(run: dict, split: str) -> np.ndarray:
    return np.asarray(run[f"greedy_{split}"]["correct"], np.float64)


def mean_validation_accuracy(runs: list[dict]) -> float:
    return float(np.mean([greedy(r, "validation").mean() for r in runs]))


def best(runs: dict[str, list[dict]], names: list[str]) -> str:
    """The variant among `names` with the highest mean greedy validation accuracy (never test)."""
    return max(names, key=lambda n: mean_validation_accuracy(runs[n]))


def lam_of(name: str) -> float:
    return float(re.search(r"lam=([0-9.e-]+)", name).group(1))


def _mean_se(values, digits=3) -> str:
    values = np.asarray([v for v in values if v is not None], np.float64)
    if values.size == 0:
        return "n/a"
    if values.size == 1:
        return f"{values[0]:.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1) / np.sqrt(values.size):.{digits}f}"


def _difference(mle: list[dict], runs: list[dict], split: str, seeds: bool = False) -> str:
    """Paired bootstrap over prompts of (variant - MLE), per-prompt means over each side's seeds; with
    `seeds`, each side's seeds are resampled too (`paired.seeds_and_prompts_bootstrap`)."""
    if runs is mle:
        return "—"
    bootstrap = paired.seeds_and_prompts_bootstrap if seeds else paired.paired_bootstrap_seeds
    d = bootstrap([greedy(r, split) for r in mle], [greedy(r, split) for r in runs])
    return f"{d['mean_difference']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"


def _curve_end(run: dict, key: str) -> float:
    return run["curves"][key][-1][1]


def _curve_min(run: dict, key: str) -> tuple[int, float]:
    step, value = min(run["curves"][key], key=lambda x: x[1])
    return step, value


def _row_at(run: dict, temperature: float) -> dict | None:
    return next((r for r in run["by_temperature"] if abs(r["temperature"] - temperature) < 1e-9), None)


def _seconds(runs: list[dict]) -> str:
    """Mean training wall time per machine, of the runs that recorded it (a run paused mid-way
    records none; on the CPU, a run pinned to 1 core of 2 shared the machine with another run; on a
    GPU, several copies of the study shared it)."""
    by_machine: dict[str, list[float]] = {}
    for r in runs:
        if r.get("train_seconds"):
            devices, cores = r.get("train_devices", "1 x cpu"), r["train_cores"]
            on_cpu = devices.endswith(" cpu")
            machine = f"{cores} core{'s' * (cores > 1)}" if on_cpu else devices.split(" x ")[-1]
            by_machine.setdefault(machine, []).append(r["train_seconds"])
    parts = [f"{np.mean(s):.0f} ({m})" for m, s in sorted(by_machine.items(), reverse=True)]
    return "; ".join(parts) or "n/a"


def headline_table(runs: dict[str, list[dict]]) -> list[str]:
    lines = [
        "| variant | seeds | val acc. | test acc. | test − MLE [95% CI] | same, seeds resampled | val − MLE "
        "[95% CI] | val NLL end | val NLL min (step) | train s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    mle = runs.get("MLE")
    for name, rs in runs.items():
        if not rs:
            continue
        mins = [_curve_min(r, "eval_nll") for r in rs]
        cells = [
            name,
            str(len(rs)),
            _mean_se([greedy(r, "validation").mean() for r in rs]),
            _mean_se([greedy(r, "test").mean() for r in rs]),
            _difference(mle, rs, "test") if mle else "n/a",
            _difference(mle, rs, "test", seeds=True) if mle else "n/a",
            _difference(mle, rs, "validation") if mle else "n/a",
            _mean_se([_curve_end(r, "eval_nll") for r in rs]),
            f"{np.mean([m[1] for m in mins]):.3f} ({int(np.median([m[0] for m in mins]))})",
            _seconds(rs),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def sample_point(runs: list[dict], temperature: float) -> tuple[float, float]:
    """(Self-BLEU, sample accuracy) at TEMPERATURE, means over the runs (seeds) that sampled it."""
    rows = [x for x in (_row_at(r, temperature) for r in runs) if x is not None]
    mean = lambda key: float(np.mean([x[key] for x in rows]))  # noqa: E731
    return mean("self_bleu"), mean("answer_accuracy")


def temperature_curve(mle: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """MLE's quality-diversity curve: (Self-BLEU, sample accuracy) at each sampled temperature, means
    over seeds, in increasing Self-BLEU."""
    temps = [row["temperature"] for row in mle[0]["by_temperature"]]
    bleu, accuracy = map(np.asarray, zip(*sorted(sample_point(mle, t) for t in temps)))
    return bleu, accuracy


def above_curve(curve: tuple[np.ndarray, np.ndarray], self_bleu: float, accuracy: float) -> str:
    """accuracy - MLE's accuracy at the same Self-BLEU, linear between MLE's temperatures; n/a
    outside the curve (no extrapolation)."""
    bleu, acc = curve
    if not bleu[0] <= self_bleu <= bleu[-1]:
        return "n/a"
    return f"{accuracy - np.interp(self_bleu, bleu, acc):+.3f}"


def sampling_table(runs: dict[str, list[dict]], temperatures) -> list[str]:
    """Sample statistics at each temperature; `vs MLE's T curve`: the variant's mean sample accuracy
    minus MLE's at the same mean Self-BLEU (`above_curve`), where the variant has MLE to compare to."""
    keys = ("answer_accuracy", "majority_vote", "pass_at_k", "self_bleu", "distinct_2", "mean_token_entropy")
    head = ("acc.", "maj@8", "pass@8", "Self-BLEU", "distinct-2", "entropy", "vs MLE's T curve")
    curve = temperature_curve(runs["MLE"]) if runs.get("MLE") else None
    lines = [
        "| variant | T | " + " | ".join(head) + " |",
        "| --- | --- | " + " | ".join("---" for _ in head) + " |",
    ]
    for name, rs in runs.items():
        for t in temperatures:
            rows = [_row_at(r, t) for r in rs]
            rows = [x for x in rows if x is not None]
            if not rows:
                continue
            cells = []
            for key in keys:
                if key == "pass_at_k":
                    cells.append(_mean_se([x["pass_at_k"][max(x["pass_at_k"], key=int)] for x in rows]))
                else:
                    cells.append(_mean_se([x[key] for x in rows], 2 if key == "self_bleu" else 3))
            if curve is None or name == "MLE":
                cells.append("—")
            else:
                cells.append(above_curve(curve, *sample_point(rs, t)))
            lines.append(f"| {name} | {t:g} | " + " | ".join(cells) + " |")
    return lines


def reward_table(runs: dict[str, list[dict]]) -> list[str]:
    lines = [
        "| variant | Spearman(R, correct), samples | Spearman, across prompts | Spearman(log-lik, correct) "
        "| best-of-4 by R | by log-lik | random |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, rs in runs.items():
        rr = [r["rerank"] for r in rs if "rerank" in r]
        if not rr:
            continue
        cells = [
            _mean_se([x["spearman_reward_metric"] for x in rr]),
            _mean_se([x.get("spearman_reward_metric_across_prompts") for x in rr]),
            _mean_se([x["spearman_loglik_metric"] for x in rr]),
        ] + [_mean_se([x["best_of_n"][k] for x in rr]) for k in ("reward", "log_likelihood", "random")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _style(name: str, names: list[str]) -> dict:
    """Line style of a variant: MLE black; the entropy bonus in oranges and offline IQLearn's lambda
    sweep in blues (darker = stronger); stage-2 variants dashed, online IQLearn dotted, GAIL red."""
    import matplotlib

    def shade(cmap: str, pattern: str) -> tuple:
        sweep = sorted(
            (n for n in names if re.fullmatch(pattern, n)), key=lambda n: float(re.split("[ =]", n)[-1])
        )
        return matplotlib.colormaps[cmap](0.35 + 0.6 * sweep.index(name) / max(len(sweep) - 1, 1))

    if name == "MLE":
        return dict(color="black", lw=2.2, ls="-")
    if re.fullmatch(r"MLE \+ entropy [0-9.e-]+", name):
        return dict(color=shade("Oranges", r"MLE \+ entropy [0-9.e-]+"), lw=1.2, ls="-")
    if re.fullmatch(r"IQLearn lam=[0-9.e-]+", name):
        return dict(color=shade("Blues", r"IQLearn lam=[0-9.e-]+"), lw=1.2, ls="-")
    if name == "GAIL":
        return dict(color="tab:red", lw=1.4, ls="-.")
    others = [
        n
        for n in names
        if n.startswith(("IQLearn", "online")) and not re.fullmatch(r"IQLearn lam=[0-9.e-]+", n)
    ]
    color = matplotlib.colormaps["tab10"](2 + others.index(name) % 8)
    return dict(color=color, lw=1.3, ls=":" if name.startswith("online") else "--")


def plot_curves(runs: dict[str, list[dict]], path: str, title: str) -> str:
    """Validation NLL and answer accuracy against steps, the mean over seeds of each variant."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    names = [n for n, rs in runs.items() if rs]
    for name in names:
        rs = runs[name]
        for ax, key in zip(axes, CURVE_KEYS):
            steps = [s for s, _ in rs[0]["curves"][key]]
            values = np.mean([[v for _, v in r["curves"][key]][: len(steps)] for r in rs], axis=0)
            ax.plot(steps, values, label=f"{name} ({len(rs)})", **_style(name, names))
    axes[0].set_ylabel("validation NLL per response token")
    axes[1].set_ylabel("validation answer accuracy (100 prompts, greedy)")
    for ax in axes:
        ax.set_xlabel("fine-tuning step")
        ax.grid(alpha=0.3)
    fig.legend(*axes[0].get_legend_handles_labels(), fontsize=7, loc="center right", title="variant (seeds)")
    fig.suptitle(title + ", mean over seeds")
    fig.tight_layout(rect=(0, 0, 0.78, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_quality_diversity(runs: dict[str, list[dict]], path: str, title: str) -> str:
    """Sample accuracy against Self-BLEU: MLE across temperatures, MLE + entropy across strengths and
    IQLearn across lambda (each at T = 1.0 and 0.5)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.8))

    if runs.get("MLE"):
        temps = [row["temperature"] for row in runs["MLE"][0]["by_temperature"]]
        xs, ys = zip(*(sample_point(runs["MLE"], t) for t in temps))
        ax.plot(xs, ys, "o-", color="black", label="MLE across T")
        for x, y, t in zip(xs, ys, temps):
            ax.annotate(f"T={t:g}", (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7)
    sweeps = (  # stage-1 names only: the sweep over one strength, nothing else changed
        (r"MLE \+ entropy [0-9.e-]+", "beta", "MLE + entropy", "s-", "tab:orange"),
        (r"IQLearn lam=[0-9.e-]+", "lambda", "IQLearn", "^-", "tab:blue"),
    )
    for pattern, knob, label, marker, color in sweeps:
        names = [n for n in runs if re.fullmatch(pattern, n) and runs[n]]
        names.sort(key=lambda n: float(n.split()[-1].split("=")[-1]))  # along the strength
        for t, alpha in ((1.0, 1.0), (0.5, 0.5)):
            pts = [sample_point(runs[n], t) for n in names]
            if not pts:
                continue
            xs, ys = zip(*pts)
            ax.plot(xs, ys, marker, color=color, alpha=alpha, label=f"{label} across {knob}, T={t:g}")
            for x, y, n in zip(xs, ys, names):
                value = n.split()[-1].split("=")[-1]
                ax.annotate(
                    value, (x, y), textcoords="offset points", xytext=(3, -8), fontsize=6, color=color
                )
    ax.set_xlabel("Self-BLEU across 8 samples (lower = more diverse)")
    ax.set_ylabel("answer accuracy of samples")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_reward_correlation(runs: dict[str, list[dict]], path: str, title: str) -> str | None:
    """Spearman of the extracted reward with correctness against lambda (offline IQLearn, gamma 0.99)."""
    names = [
        n for n in runs if re.fullmatch(r"IQLearn lam=[0-9.e-]+", n) and any("rerank" in r for r in runs[n])
    ]
    if not names:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    lams = [lam_of(n) for n in names]
    for key, label in (
        ("spearman_reward_metric", "over samples"),
        ("spearman_reward_metric_across_prompts", "across prompts"),
    ):
        means = [np.nanmean([r["rerank"].get(key) or np.nan for r in runs[n]]) for n in names]
        ax.plot(lams, means, "o-", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("lambda (TD regulariser)")
    ax.set_ylabel("Spearman(extracted reward R, correct)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def ordered(runs: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """The variants in reading order: MLE, the entropy bonus and offline IQLearn along their strengths,
    IQLearn's stage-2 variants, online IQLearn, GAIL."""

    def key(name: str) -> tuple:
        number = re.search(r"(?:lam=|entropy )([0-9.e-]+)", name)
        offline = re.fullmatch(r"IQLearn lam=[0-9.e-]+", name)
        group = (
            0 if name == "MLE" else 1 if "entropy" in name else 2 if offline
            else 3 if name.startswith("IQLearn") else 4 if name.startswith("online") else 5
        )  # fmt: skip
        return group, float(number.group(1)) if number else 0.0, name

    return {name: runs[name] for name in sorted(runs, key=key)}


def write(results: dict[Part, dict[str, list[dict]]], args) -> None:
    out_dir = os.path.dirname(args.out)
    lines = [
        "# arith in the paper's regime: fine-tuning a pretrained model on a small shifted set",
        "",
        f"Written by `python scripts/regime_study.py --sizes {args.sizes}` (the method is in that script's "
        "docstring). Mean ± standard error over seeds. Accuracy: the `#### N` answer graded as GSM8K. "
        "`test − MLE`: the paired bootstrap 95% interval over prompts (10,000 resamples) of the "
        "difference in greedy accuracy, each prompt's correctness averaged over a variant's seeds; "
        "`same, seeds resampled`: the two-level bootstrap that also resamples each side's seeds "
        "(`jirl.evaluation.paired.seeds_and_prompts_bootstrap`), so its interval holds the spread "
        "between training seeds too. "
        "`train s`: wall time of the fine-tune on a machine shared with other work (tests; runs marked "
        "`1 core` had a second copy of the study on the other core; runs marked with a GPU's name ran "
        "there, several at once, by `scripts/regime_study_gpu.sh`), a rough cost only; each update's "
        "cost measured side by side is `benchmarks/online_cost.py`'s.",
    ]
    for part, runs in results.items():
        runs = ordered({n: rs for n, rs in runs.items() if rs})
        if not runs:
            continue
        tag, name = part.tag, part.label
        lines += [
            "",
            f"## {part.heading}",
            "",
            "### Greedy accuracy (all 500 validation and 500 test prompts)",
            "",
        ]
        bases = sorted({base_of(r) for rs in runs.values() for r in rs})
        lines += [f"Every run here fine-tunes {' or '.join(map(describe_base, bases))}.", ""]
        lines += headline_table(runs)
        curves = plot_curves(
            runs, os.path.join(out_dir, f"regime_{tag}_curves.png"), f"{name}: learning curves"
        )
        lines += ["", f"![learning curves]({os.path.basename(curves)})", ""]
        lines += [f"### Samples: K = {SAMPLES} per prompt, first {SAMPLE_PROMPTS} validation prompts", ""]
        lines += [
            "`vs MLE's T curve`: the variant's sample accuracy minus MLE's at the same Self-BLEU, read "
            "off MLE's curve across temperatures (linear between its five; n/a outside them). Each "
            "side's standard error over seeds (the `acc.` column) applies to it; it has no interval.",
            "",
        ]
        lines += sampling_table(runs, (0.5, 1.0))
        if runs.get("MLE"):
            lines += ["", "MLE across temperatures:", ""]
            lines += sampling_table({"MLE": runs["MLE"]}, (0.3, 0.7, 1.3))
        qd = plot_quality_diversity(
            runs,
            os.path.join(out_dir, f"regime_{tag}_quality_diversity.png"),
            f"{name}: quality against diversity",
        )
        lines += ["", f"![quality against diversity]({os.path.basename(qd)})", ""]
        where = f"{RERANK} samples per prompt at T = 1, {SAMPLE_PROMPTS} prompts"
        lines += [f"### The extracted reward (IQLearn; {where})", ""]
        lines += reward_table(runs)
        rc = plot_reward_correlation(
            runs,
            os.path.join(out_dir, f"regime_{tag}_reward_correlation.png"),
            f"{name}: extracted reward vs correctness",
        )
        if rc:
            lines += ["", f"![reward correlation]({os.path.basename(rc)})", ""]
    notes = os.path.join(out_dir, "regime_reading.md")
    if os.path.exists(notes):
        with open(notes) as f:
            lines += ["", f.read().strip(), ""]
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
