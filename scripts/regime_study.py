"""The paper's regime on `arith`: fine-tune one pretrained model on a small shifted set, every objective.

Usage:
  python scripts/regime_study.py [--sizes 1000,5000,1000-replica] [--runs runs/regime_study]
      [--out docs/results/regime.md] [--stage all]

1. The base: `jirl train` MLE-trains the `small` model on the broad `default` arith set (20,000
   problems, 1-3 operations) for --base_steps, and `jirl export` writes its weights into
   `--records`/base (4.9 MB), committed with the records: every fine-tune starts from that folder
   (`model.init_from`), in any checkout. Each record names its base (`base`, a hash of the weights),
   and the study adds no run from one base to a size whose records come from another (it reports
   that size's records as they are).
2. Fine-tunes on `experiments/arith_shifted.py` (harder problems in new phrasings) with N training
   examples, N in --sizes, for `STEPS[N]` steps each (long enough that MLE's validation NLL turns
   up), learning rate 2e-3, the same budget (steps, batch, tokens) for every variant; validation
   NLL and answer accuracy (100 prompts, greedy) every `EVERY[N]` steps (ten points a run): the
   learning curves.
3. Variants, in the order they run (a stage's choices need the stage before it):
   - stage 1, seeds 0-2: MLE; MLE + entropy bonus at ENTROPY_BONUSES; offline IQLearn at LAMBDAS
     with gamma 0.99 (gamma < 1 so that the extracted reward is not the log-likelihood plus V(s_0));
   - stage 2, seeds 0-2, at the best lambda (highest mean validation accuracy over the stage-1 seeds;
     never test): gamma 1.0, and stop_grad_next_value on at gamma 0.99 and 1.0; online IQLearn
     (alpha 0.1, sampling every 4 steps) at gamma 0.99 and 1.0; GAIL (pg_weight 0.03, its MLE term
     and KL penalty) from the same base;
   - stage 3: seeds 3 and 4 of MLE, the best entropy bonus and the best IQLearn;
   - at N = 5000 (4000 steps a run), the core comparison only, seeds 0-2: MLE, the entropy bonus
     and the two lambdas best on validation at N = 1000 (`core_variants`);
   - `--sizes 1000-replica`: stage 2 again at N = 1000, seeds 0-2, from the committed base, with its
     own MLE and IQLearn (the chosen lambda, gamma 0.99) to pair with (`replica_variants`): N = 1000's
     records fine-tune the study's first base, which was lost before stage 2 had three seeds.
   Stages 2 and 3 depend on stage 1 only and share one queue: stage 2 at seed 0, then stage 3, then
   stage 2 at seeds 1-2.
4. Evaluation of each final model: greedy answer accuracy on every validation and test prompt
   (per prompt, for the paired bootstrap against MLE); K samples at each of TEMPERATURES (more
   for MLE: its temperature sweep) on the first validation prompts: accuracy, majority vote,
   pass@k, Self-BLEU, distinct-2, mean token entropy; for IQLearn, Spearman of the extracted
   sequence reward with correctness (N samples per prompt at T=1). The sizes (K = 8, N = 4, 100
   prompts) are regime_report.py's SAMPLES, RERANK and SAMPLE_PROMPTS.

Each finished, evaluated run leaves a record, `--records/PART/VARIANT_sSEED.json` (PART: n1000,
n5000 or n1000_replica; a few KB: the per-prompt greedy correctness, the sample statistics, the
learning curves, the command and the commit), committed with the report: the tables and plots are
made from records alone, and a run with a record is never trained again, even in a fresh checkout
without its workdir. Workdirs (`--runs`) hold checkpoints, one per learning-curve point: a run
stopped part-way resumes from its newest (jirl's resume continues bitwise), its train seconds summed
over its attempts up to each one's last checkpoint (`train_seconds.json`). The report is rewritten
after every run. `--stage 1` stops after stage 1, and so on; `--report_only` writes the report of
the runs finished so far and trains nothing. Several copies may run side by side, each pinned to its
own cores (`taskset -c 0 python scripts/regime_study.py & taskset -c 1 ...`): each run is claimed by
one copy (RUN.lock holds its pid), the others take the next run or, at the end of a stage, wait for
it. On 2 cores, two copies pinned to one core each train about 1.3x the steps per hour of one copy
on both (1.65 against 1.3 steps a second, 16 x 256 tokens, measured 2026-12-01). `--stop_after S`: a
copy starts no new run after S seconds (how `scripts/regime_study_gpu.sh` runs several copies on one
GPU within a time limit). A record says what its run trained on (`train_devices`, from the run's
summary.json).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import regime_report  # noqa: E402

# Steps per training-set size: MLE's validation NLL turns up before the end. At N = 5000 a 2000-step
# pilot (MLE, seed 0, in the earlier runs of regime_1_1_0.md) still lowered it at the end (0.185 at
# step 1600, 0.175 at 2000), hence 4000.
STEPS = {1000: 1000, 5000: 4000}
EVERY = {1000: 100, 5000: 400}  # learning-curve points: ten a run (they cost more than the steps on CPU)
ENTROPY_BONUSES = (0.01, 0.03, 0.1)
LAMBDAS = (0.003, 0.01, 0.03, 0.1, 0.3)
TEMPERATURES = (0.5, 1.0)
MLE_TEMPERATURES = (0.3, 0.5, 0.7, 1.0, 1.3)

FIRST_SEEDS, MORE_SEEDS = (0, 1, 2), (3, 4)
Part = regime_report.Part
PARTS = {  # --sizes accepts these keys
    "1000": Part("n1000", 1000, "N = 1000", "N = 1000 training examples"),
    "5000": Part("n5000", 5000, "N = 5000", "N = 5000 training examples"),
    "1000-replica": Part(
        "n1000_replica",
        1000,
        "N = 1000, second base",
        "N = 1000 training examples: stage 2 from the second base",
    ),
}
FULL = PARTS["1000"]  # every stage runs here; N = 5000 runs the core comparison (`core_variants`)
BASE_WEIGHTS = "model.safetensors"  # in the base folder, with its config.json
FINE_TUNE = ["--config.train.learning_rate=2e-3", "--config.train.warmup_steps=20"]


def _run(command: list[str]) -> None:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"failed: {' '.join(command)}\n{result.stderr[-3000:]}")


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "_", name.lower()).strip("_")


def base_model(args) -> str:
    """The pretrained model every fine-tune starts from: `--records`/base, a Hugging Face folder
    (config.json, model.safetensors) committed with the records, so that any checkout fine-tunes the
    same weights. Without it, `jirl train` MLE-trains the base into `--runs`/base and `jirl export`
    writes its weights there, to be committed: XLA's numerics differ between machines and library
    builds, so the same command does not train the same base twice (regime_reading.md)."""
    folder = os.path.join(args.records, "base")
    if os.path.exists(os.path.join(folder, BASE_WEIGHTS)):
        return folder
    workdir = os.path.join(args.runs, "base")
    if not os.path.exists(os.path.join(workdir, "summary.json")):
        _run([sys.executable, "-m", "jirl.cli", "train", "--config=experiments/arith.py:mle",
              f"--workdir={workdir}", "--progress=false", f"--config.train.steps={args.base_steps}",
              "--config.eval.every=500", "--config.eval.answers_every=500", "--config.eval.num_examples=100",
              "--config.train.checkpoint_every=500"])  # fmt: skip
    _run([sys.executable, "-m", "jirl.cli", "export", f"--workdir={workdir}", f"--out={folder}"])
    print(f"the base's weights are in {folder}: commit them with the records", flush=True)
    return folder


def base_id(base: str) -> str:
    """Which base a run started from: the first 16 hex digits of the sha256 of its weights file."""
    with open(os.path.join(base, BASE_WEIGHTS), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


def same_base(args, part: Part, base: str) -> bool:
    """Whether every record of PART comes from BASE; if not, says so: a run from another base would
    not be comparable with them, so the study adds none there (a record without `base` comes from
    the study's first base, which is lost)."""
    folder = os.path.join(args.records, part.tag)
    names = sorted(n for n in os.listdir(folder) if n.endswith(".json")) if os.path.isdir(folder) else []
    bases = {regime_report.base_of(regime_report.load_record(os.path.join(folder, n))) for n in names}
    if bases <= {base_id(base)}:
        return True
    others = " and ".join(map(regime_report.describe_base, sorted(bases)))
    print(
        f"{part.label}: no new run; its records come from {others}, not from base {base_id(base)} "
        f"({base}), and a run from this base would not be comparable with them.",
        flush=True,
    )
    return False


def stage1_variants() -> dict[str, tuple[str, list[str]]]:
    """name -> (objective, overrides)."""
    variants = {"MLE": ("mle", [])}
    entropy = {f"MLE + entropy {b:g}": ("mle", [f"--config.loss.entropy_bonus={b}"]) for b in ENTROPY_BONUSES}
    iqlearn = {
        f"IQLearn lam={lam:g}": ("iqlearn", [f"--config.loss.lam={lam}", "--config.loss.gamma=0.99"])
        for lam in LAMBDAS
    }
    # Interleaved, middle strengths first, so that a partial stage covers both sweeps.
    middle_first = lambda sweep: sorted(sweep, key=lambda n: abs(list(sweep).index(n) - len(sweep) // 2))  # noqa: E731
    for pair in itertools.zip_longest(middle_first(iqlearn), middle_first(entropy)):
        variants.update({name: {**entropy, **iqlearn}[name] for name in pair if name})
    return variants


def stage2_variants(lam: float) -> dict[str, tuple[str, list[str]]]:
    iq = [f"--config.loss.lam={lam}"]
    online = ["--config.loss.alpha=0.1", "--config.online.sample_every=4", *iq]
    return {
        f"IQLearn lam={lam:g} gamma=1": ("iqlearn", [*iq, "--config.loss.gamma=1.0"]),
        f"IQLearn lam={lam:g} stop-grad": (
            "iqlearn", [*iq, "--config.loss.gamma=0.99", "--config.loss.stop_grad_next_value=True"]
        ),
        f"IQLearn lam={lam:g} gamma=1 stop-grad": (
            "iqlearn", [*iq, "--config.loss.gamma=1.0", "--config.loss.stop_grad_next_value=True"]
        ),
        f"online IQLearn lam={lam:g}": ("iqlearn", [*online, "--config.loss.gamma=0.99"]),
        f"online IQLearn lam={lam:g} gamma=1": ("iqlearn", [*online, "--config.loss.gamma=1.0"]),
        "GAIL": ("gail", ["--config.online.sample_every=4", "--config.loss.pg_weight=0.03"]),
    }  # fmt: skip


def run_dir(args, part: Part, name: str, seed: int) -> str:
    return os.path.join(args.runs, part.tag, f"{slug(name)}_s{seed}")


def record_path(args, part: Part, name: str, seed: int) -> str:
    """Where one finished run's measures are kept (committed; the workdir with its checkpoints is not)."""
    return os.path.join(args.records, part.tag, f"{slug(name)}_s{seed}.json")


def _study_process_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"regime_study" in f.read()
    except OSError:
        return False


def claim(workdir: str) -> bool:
    """True when this process may train WORKDIR: it created WORKDIR.lock, or the lock's owner is gone."""
    lock = workdir.rstrip("/") + ".lock"
    os.makedirs(os.path.dirname(lock), exist_ok=True)
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        with open(lock) as f:
            owner = f.read().strip()
        if owner.isdigit() and _study_process_alive(int(owner)):
            return False
        os.remove(lock)  # left by a study that was stopped
        return claim(workdir)
    with os.fdopen(fd, "w") as f:
        f.write(str(os.getpid()))
    return True


def fine_tune(part: Part, name: str, variant: tuple, seed: int, base: str, args) -> dict | None:
    """Trains (unless finished) and evaluates (unless evaluated) one variant at one seed; None while
    another copy of the study has it."""
    record = record_path(args, part, name, seed)
    if os.path.exists(record):
        return regime_report.load_record(record)
    workdir = run_dir(args, part, name, seed)
    if not claim(workdir):
        return None
    try:
        run = _train_and_evaluate(workdir, part, name, variant, seed, base)
        run.update(name=name, seed=seed, size=part.size, objective=variant[0], overrides=variant[1],
                   commit=_commit(), base=base_id(base))  # fmt: skip
        regime_report.save_record(record, run)
        return regime_report.load_record(record)
    finally:
        os.remove(workdir.rstrip("/") + ".lock")


def _commit() -> str:
    """The checkout's commit, with `+changes` when its tracked files differ from it."""
    git = lambda *a: subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout.strip()  # noqa: E731
    changed = git("status", "--porcelain", "--untracked-files=no")
    return git("rev-parse", "HEAD") + ("+changes" if changed else "")


def _newest_checkpoint(workdir: str) -> tuple[int, float] | None:
    """(step, write time) of the newest checkpoint in WORKDIR, None when it has none."""
    folder = os.path.join(workdir, "checkpoints")
    steps = [int(n) for n in os.listdir(folder) if n.isdigit()] if os.path.isdir(folder) else []
    return (max(steps), os.path.getmtime(os.path.join(folder, str(max(steps))))) if steps else None


def _begin_attempt(workdir: str) -> list[dict]:
    """Records an attempt at training WORKDIR (attempts.json); returns the earlier ones, each with
    the seconds from its start to the newest checkpoint it wrote (what the run keeps of it)."""
    path = os.path.join(workdir, "attempts.json")
    attempts = []
    if os.path.exists(path):
        with open(path) as f:
            attempts = json.load(f)
    newest = _newest_checkpoint(workdir)
    if attempts and newest is not None:
        attempts[-1].update(seconds=max(0.0, newest[1] - attempts[-1]["start"]), to_step=newest[0])
    earlier = [a for a in attempts if "seconds" in a]
    os.makedirs(workdir, exist_ok=True)
    with open(path, "w") as f:
        json.dump([*earlier, {"start": time.time()}], f)
    return earlier


def _train_and_evaluate(workdir: str, part: Part, name: str, variant: tuple, seed: int, base: str) -> dict:
    objective, overrides, size = *variant, part.size
    if not os.path.exists(os.path.join(workdir, "summary.json")):
        if _newest_checkpoint(workdir) is None:
            shutil.rmtree(workdir, ignore_errors=True)  # stopped before its first checkpoint: start again
        earlier, start = _begin_attempt(workdir), time.time()
        _run([sys.executable, "-m", "jirl.cli", "train", f"--config=experiments/arith_shifted.py:{objective}",
              f"--workdir={workdir}", "--progress=false", f"--config.task.config=shifted_{size}",
              f"--config.train.steps={STEPS[size]}", f"--config.train.seed={seed}",
              f"--config.eval.every={EVERY[size]}", f"--config.eval.answers_every={EVERY[size]}",
              "--config.eval.num_examples=100", "--config.eval.loss_batches=8",
              f"--config.train.checkpoint_every={EVERY[size]}", f"--config.model.init_from={base}",
              *FINE_TUNE, *overrides])  # fmt: skip
        with open(os.path.join(workdir, "summary.json")) as f:
            devices = json.load(f).get("devices", "1 x cpu")
        with open(os.path.join(workdir, "train_seconds.json"), "w") as f:
            json.dump({"train_seconds": sum(a["seconds"] for a in earlier) + time.time() - start,
                       "cores": len(os.sched_getaffinity(0)), "devices": devices,
                       "resumed_from_steps": [a["to_step"] for a in earlier]}, f)  # fmt: skip
    report_path = os.path.join(workdir, "study_eval.json")
    if not os.path.exists(report_path):
        start = time.time()
        family = "mle" if name == "MLE" else "iqlearn" if objective == "iqlearn" else "other"
        _run([sys.executable, os.path.abspath(__file__), "--evaluate", workdir, "--family", family,
              "--seed", str(seed)])  # fmt: skip
        print(f"{part.label}: {name} seed {seed}: evaluated in {time.time() - start:.0f} s", flush=True)
    return regime_report.read_workdir(workdir)


def evaluate_run(workdir: str, family: str, seed: int) -> None:
    """Every measure of one finished run, into WORKDIR/study_eval.json (in this process)."""
    from jirl.cli.evaluate import evaluate

    out = {}
    for split in ("validation", "test"):
        report = evaluate(workdir, split=split, temperatures=(), greedy=True, num_prompts=-1, seed=seed)
        out[f"greedy_{split}"] = report["greedy"]
    temperatures = MLE_TEMPERATURES if family == "mle" else TEMPERATURES
    prompts = regime_report.SAMPLE_PROMPTS
    report = evaluate(workdir, split="validation", samples=regime_report.SAMPLES, temperatures=temperatures,
                      num_prompts=prompts, seed=seed)  # fmt: skip
    out["by_temperature"] = report["by_temperature"]
    if family == "iqlearn":
        report = evaluate(workdir, split="validation", samples=1, temperatures=(1.0,),
                          num_prompts=prompts, rerank=regime_report.RERANK, seed=seed)  # fmt: skip
        out["rerank"] = report["rerank"]
    with open(os.path.join(workdir, "study_eval.json"), "w") as f:
        json.dump(out, f)


def stage1_runs(args) -> dict[str, list[dict]] | None:
    """The records of FULL's stage 1 (every variant, every first seed); None while it is not finished."""
    runs = {}
    for name in stage1_variants():
        records = [record_path(args, FULL, name, seed) for seed in FIRST_SEEDS]
        if not all(os.path.exists(r) for r in records):
            return None
        runs[name] = [regime_report.load_record(r) for r in records]
    return runs


def core_variants(args) -> dict[str, tuple[str, list[str]]] | None:
    """At N = 5000: MLE, the entropy bonus that was best and the two lambdas that were best on
    validation in FULL's stage 1 (every seed): what a size with 4x the steps and 5x the data can
    afford on two cores. None when FULL's stage 1 is not finished."""
    first, runs = stage1_variants(), stage1_runs(args)
    if runs is None:
        return None
    beta = regime_report.best(runs, [n for n in first if "entropy" in n])
    lambdas = [n for n in first if n.startswith("IQLearn")]
    by_validation = sorted(lambdas, key=lambda n: -regime_report.mean_validation_accuracy(runs[n]))
    return {n: first[n] for n in ("MLE", beta, *by_validation[:2])}


def replica_variants(args) -> dict[str, tuple[str, list[str]]] | None:
    """Stage 2 again, from the committed base, with its own references: MLE, IQLearn at the lambda
    FULL's stage 1 chose (gamma 0.99) and the six stage-2 variants at that lambda. FULL's stage 2
    fine-tuned the study's first base, which is lost, so no run can join it (regime_reading.md).
    None when FULL's stage 1 is not finished."""
    first, runs = stage1_variants(), stage1_runs(args)
    if runs is None:
        return None
    lam = regime_report.best(runs, [n for n in first if n.startswith("IQLearn")])
    return {"MLE": first["MLE"], lam: first[lam], **stage2_variants(regime_report.lam_of(lam))}


STARTED = time.time()


def out_of_time(args) -> bool:
    """Whether this copy has run for --stop_after seconds (0: no limit): it starts no new run then."""
    return bool(args.stop_after) and time.time() - STARTED > args.stop_after


def run_part(part: Part, base: str, args, results: dict) -> None:
    """The three stages of FULL, or the variants of another part at seeds 0-2; `results[part][name]`
    gathers the runs."""
    runs = results.setdefault(part, {})
    records_only = args.report_only or not same_base(args, part, base)

    def go(todo: list[tuple[int, str]], variants: dict) -> None:
        """Runs every (seed, name) of TODO; returns when all are finished, by this copy or another."""
        while todo:
            taken = []  # by another copy of the study
            for seed, name in todo:
                runs.setdefault(name, [])
                if any(r["seed"] == seed for r in runs[name]):
                    continue
                recorded = os.path.exists(record_path(args, part, name, seed))
                if records_only and not recorded:
                    continue
                if out_of_time(args) and not recorded:
                    regime_report.write(results, args)
                    sys.exit(f"--stop_after {args.stop_after:g} s reached: no new run started.")
                run = fine_tune(part, name, variants[name], seed, base, args)
                if run is None:
                    taken.append((seed, name))
                    continue
                runs[name].append(run)
                if not recorded:  # a new run: the page shows it now; loaded records wait for the end
                    regime_report.write(results, args)
            todo = taken
            if todo:
                time.sleep(30)  # the stage ends when the other copies' runs do

    seed_major = lambda names, seeds: [(seed, name) for seed in seeds for name in names]  # noqa: E731
    if part != FULL:
        variants = (replica_variants if part == PARTS["1000-replica"] else core_variants)(args)
        if variants is None and not args.report_only:
            sys.exit(f"{FULL.label}'s stage 1 is not finished; run --sizes 1000 first.")
        if variants is not None:
            go(seed_major(variants, FIRST_SEEDS), variants)
        return
    first = stage1_variants()
    go(seed_major(first, FIRST_SEEDS), first)
    if args.stage == "1":
        return
    if not all(len(runs.get(n, ())) == len(FIRST_SEEDS) for n in first):  # a report before stage 1 ends
        return
    lam = regime_report.best(runs, [n for n in first if n.startswith("IQLearn")])
    second = stage2_variants(regime_report.lam_of(lam))
    if args.stage == "2":
        go(seed_major(second, FIRST_SEEDS), second)
        return
    # Stages 2 and 3 both depend on stage 1 only: one queue, so that no copy waits at a stage's end.
    # Every variant at seed 0 first, then the extra seeds of the three compared most, then the rest.
    beta = regime_report.best(runs, [n for n in first if "entropy" in n])
    third = {n: first[n] for n in ("MLE", beta, lam)}
    queue = seed_major(second, FIRST_SEEDS[:1]) + seed_major(third, MORE_SEEDS)
    queue += seed_major(second, FIRST_SEEDS[1:])
    go(queue, {**second, **third})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,5000,1000-replica", help=f"parts: {', '.join(PARTS)}")
    parser.add_argument("--base_steps", type=int, default=2000)
    parser.add_argument("--runs", default="runs/regime_study", help="workdirs (checkpoints; not kept)")
    parser.add_argument("--records", default="docs/results/regime_runs", help="each finished run's measures")
    parser.add_argument("--out", default="docs/results/regime.md")
    parser.add_argument("--stage", default="all", choices=["1", "2", "all"])
    parser.add_argument("--report_only", action="store_true", help="write the report of finished runs")
    parser.add_argument("--stop_after", type=float, default=0, help="seconds; then start no new run")
    parser.add_argument("--evaluate", help=argparse.SUPPRESS)  # internal: evaluate one workdir
    parser.add_argument("--family", default="other", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    unknown = [key for key in args.sizes.split(",") if key not in PARTS]
    if unknown:
        parser.error(f"--sizes {','.join(unknown)}: not a part of this study; accepted: {', '.join(PARTS)}")
    parts = [PARTS[key] for key in args.sizes.split(",")]
    if args.evaluate:
        evaluate_run(args.evaluate, args.family, args.seed)
        return
    base = "" if args.report_only else base_model(args)  # a report needs records only
    results: dict = {}
    for part in parts:
        run_part(part, base, args, results)
    regime_report.write(results, args)


if __name__ == "__main__":
    main()
