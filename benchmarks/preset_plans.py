"""The README's preset table: each shape-only preset's IQLearn step planned for TPU slices.

    python benchmarks/preset_plans.py [--presets llama3_8b,gpt2_124m] [--topologies v5e:4x4,v5p:2x2x4]
        [--vocab_chunk 4096] [--out plans.jsonl]

Runs `jirl plan` once per (preset, topology), each in its own process (an 8B compile holds a few
GiB), with the README's settings: scan_layers, full remat, bfloat16, batch 64 on an fsdp-only mesh,
and length 2048 for the decoders, 1024 for GPT-2 and 512 for T5. Prints one JSON line per plan (the
plan's own, with `jax` and `libtpu` versions added; appended to --out when given, and the plans
already there are not made again), then the table in markdown: total GiB per device and the fits /
does-not-fit verdict against the chip's HBM. The plans are XLA's memory analysis of the compiled
step for the slice, not runs on chips. About 2-5 minutes per plan on two CPU cores.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIB = 1024**3
PRESETS = (
    "llama3_8b", "gemma2_2b", "qwen2_7b", "qwen3_0_6b", "qwen3_8b", "llama3_2_1b", "gemma3_1b",
    "gemma3_4b", "gpt2_124m", "t5_base", "t5_large", "t5_xl",
)  # fmt: skip
TOPOLOGIES = ("v5e:4x4", "v5p:2x2x4")
SLICE_NAMES = {"v5e:4x4": "v5e-16 (16 GiB)", "v5p:2x2x4": "v5p-32 (95 GiB)"}


def seq_len(preset: str) -> int:
    return 512 if preset.startswith("t5") else 1024 if preset.startswith("gpt2") else 2048


def plan(preset: str, topology: str, vocab_chunk: int) -> dict:
    """The JSON line of `jirl plan` for one preset on one slice."""
    experiment = os.path.join(ROOT, "experiments", "arith.py")
    command = [
        sys.executable, "-m", "jirl.cli", "plan", f"--config={experiment}:iqlearn",
        f"--topology={topology}", f"--config.model.preset={preset}", "--config.model.scan_layers=True",
        "--config.model.remat=full", "--config.model.dtype=bfloat16", "--config.train.batch_size=64",
        "--config.mesh.data=1", "--config.mesh.fsdp=-1", f"--config.task.seq_len={seq_len(preset)}",
        f"--config.loss.vocab_chunk={vocab_chunk}",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"model": preset, "topology": topology, "error": (done.stderr or done.stdout).strip()[-400:]}
    return json.loads(lines[-1])


def versions() -> dict[str, str]:
    found = {}
    for name in ("jax", "jaxlib", "libtpu"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def table(plans: list[dict], topologies: list[str]) -> list[str]:
    lines = ["| preset | " + " | ".join(SLICE_NAMES.get(t, t) for t in topologies) + " |"]
    lines.append("| --- |" + " --- |" * len(topologies))
    for preset in dict.fromkeys(p["model"] for p in plans):
        cells = []
        for topology in topologies:
            found = [p for p in plans if p["model"] == preset and p["topology"] == topology]
            if not found or "error" in found[0]:
                cells.append("not planned" if not found else "failed")
                continue
            p = found[0]
            verdict = "fits" if p["fits"] else "does NOT fit"
            cells.append(f"{p['total_bytes'] / GIB:.2f} GiB, {verdict}")
        lines.append(f"| {preset} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--presets", default=",".join(PRESETS))
    parser.add_argument("--topologies", default=",".join(TOPOLOGIES))
    parser.add_argument("--vocab_chunk", type=int, default=4096, help="loss.vocab_chunk (0: full logits)")
    parser.add_argument("--out", default="", help="append each plan's JSON line to this file")
    args = parser.parse_args()
    topologies = args.topologies.split(",")
    done = {}  # plans already in --out (same preset, slice and chunking) are read, not planned again
    if args.out and os.path.isfile(args.out):
        with open(args.out) as f:
            for line in f:
                p = json.loads(line)
                if "error" not in p:
                    done[(p["model"], p["topology"], p["vocab_chunk"])] = p
    plans = []
    for preset in args.presets.split(","):
        for topology in topologies:
            if (preset, topology, args.vocab_chunk) in done:
                plans.append(done[(preset, topology, args.vocab_chunk)])
                continue
            result = dict(plan(preset, topology, args.vocab_chunk), **versions())
            plans.append(result)
            print(json.dumps(result), flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps(result) + "\n")
    print("\n".join(table(plans, topologies)))


if __name__ == "__main__":
    main()
