"""Train on a SLURM GPU cluster: write a batch script that runs `jirl train` on every node, and `sbatch` it.

Usage, from the repository root (standard library only):

  python launch/slurm.py --nodes 2 --gpus-per-node 8 --partition gpu --time 04:00:00 \\
      --config experiments/arith.py:iqlearn --workdir runs/arith_iq_2x8 \\
      [--job-name jirl] [--venv .venv] [--port N] [--script PATH] [--output PATTERN] [--dry-run] \\
      [--config.KEY=VALUE ...]

`--dry-run` prints the batch script, then the sbatch command, and writes and runs nothing.

The cluster is assumed to share a filesystem between the login node and the compute nodes, holding
this checkout, the virtual environment `--venv` (default `.venv`, relative to the directory sbatch is
run from), and the workdir. Make the venv once, on that filesystem:

  python3.11 -m venv .venv && .venv/bin/pip install -e ".[cuda]"

The script starts one task per node (`srun`, `--ntasks-per-node=1`; each task sees all the GPUs of its
node). The coordinator is the first host of `$SLURM_JOB_NODELIST`; each task passes
`--config.distributed.enabled=true`, the coordinator address, `num_processes=$SLURM_NTASKS` and
`process_id=$SLURM_PROCID`, all evaluated by each task's own `bash -c '...'`, and any `--config.KEY=VALUE`
given here. Each node prepares the task's data on first start in a node-local directory
(`$TMPDIR/jirl-data-$SLURM_JOB_ID`, /tmp without TMPDIR) unless `--config.task.data_dir=...` is given.
Bad arguments are one line on stderr and exit status 2.
"""

import argparse
import os
import re
import shlex
import subprocess
import sys

PROG = "slurm"
SAFE_RE = re.compile(r"^[-\w@%+=:,./]+$", re.ASCII)  # what shlex.quote leaves unquoted
OVERRIDE_RE = re.compile(r"^--config\.[A-Za-z_][A-Za-z0-9_.]*=")
TIME_RE = re.compile(r"^([0-9]+-)?[0-9]+(:[0-9]{2}){0,2}$")
JOB_NAME_RE = re.compile(r"^[-\w.]+$", re.ASCII)


class UsageError(Exception):
    """Bad arguments: reported as one line on stderr, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def dq(arg: str) -> str:
    """`arg` quoted for a POSIX shell with double quotes (when it needs quoting), so that it nests in the
    single quotes of `bash -c '...'` without escaped single quotes."""
    if SAFE_RE.match(arg):
        return arg
    return '"' + re.sub(r'([\\"$`])', r"\\\1", arg) + '"'


def dq_join(args: list[str]) -> str:
    return " ".join(dq(a) for a in args)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a positive integer")
    return int(text)


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = _Parser(
        prog="launch/slurm.py",
        allow_abbrev=False,
        description="Write a SLURM batch script that runs `jirl train` on every node, and sbatch it.",
        epilog="Any --config.KEY=VALUE is passed through to `jirl train` on every node.",
    )
    parser.add_argument("--nodes", type=_positive, required=True, help="Number of nodes (one task each).")
    parser.add_argument("--gpus-per-node", type=_positive, default=8, help="GPUs per node (default 8).")
    parser.add_argument("--time", default="04:00:00", help="Time limit, [D-]HH:MM:SS (default 04:00:00).")
    parser.add_argument("--partition", help="SLURM partition; default: the cluster's default one.")
    parser.add_argument("--account", help="SLURM account to charge, where the cluster asks for one.")
    parser.add_argument("--job-name", default="jirl", help="Job name (default jirl).")
    parser.add_argument("--output", help="Log file pattern (default runs/slurm/%%x-%%j.out).")
    parser.add_argument(
        "--script", help="Where to write the batch script (default runs/slurm/JOB_NAME.sbatch)."
    )
    parser.add_argument("--venv", default=".venv", help="Virtual environment on the shared filesystem.")
    parser.add_argument(
        "--port", type=_positive, help="Coordinator port (default: 61440 + job id mod 4096, as JAX does)."
    )
    parser.add_argument("--config", required=True, help="Experiment, e.g. experiments/arith.py:iqlearn.")
    parser.add_argument("--workdir", required=True, help="Output directory on the shared filesystem.")
    parser.add_argument("--dry-run", action="store_true", help="Print the script and sbatch command only.")
    args, rest = parser.parse_known_args(argv)
    for arg in rest:
        if not OVERRIDE_RE.match(arg):
            raise UsageError(
                f"unrecognized argument '{arg}'; only --config.KEY=VALUE overrides pass through."
            )
    if not TIME_RE.match(args.time):
        raise UsageError(
            f"--time '{args.time}' is not a SLURM time; use [D-]HH:MM:SS, e.g. 04:00:00 or 1-00:00:00."
        )
    if not JOB_NAME_RE.match(args.job_name):
        raise UsageError(f"--job-name '{args.job_name}' may hold only letters, digits, '-', '_' and '.'.")
    if args.port is not None and args.port > 65535:
        raise UsageError(f"--port {args.port} is not a TCP port; accepted: 1 to 65535.")
    config_file = args.config.partition(":")[0]
    if not os.path.isfile(config_file):
        raise UsageError(f"--config file '{config_file}' does not exist.")
    args.output = args.output or "runs/slurm/%x-%j.out"
    args.script = args.script or f"runs/slurm/{args.job_name}.sbatch"
    return args, rest


def batch_script(args: argparse.Namespace, overrides: list[str]) -> str:
    """The text of the SLURM batch script."""
    sbatch = {
        "job-name": args.job_name,
        "nodes": str(args.nodes),
        "ntasks-per-node": "1",
        "gpus-per-node": str(args.gpus_per_node),
        "time": args.time,
        "partition": args.partition,
        "account": args.account,
        "output": args.output,
    }
    port = str(args.port) if args.port else "$((SLURM_JOB_ID % 4096 + 61440))"
    fixed = [
        f"{args.venv}/bin/jirl",
        "train",
        "--config",
        args.config,
        "--workdir",
        args.workdir,
        "--config.distributed.enabled=true",
    ]
    # Evaluated by each task's bash, so that every task gets its own $SLURM_PROCID.
    per_task = [
        '--config.distributed.coordinator_address="$JIRL_COORDINATOR"',
        '--config.distributed.num_processes="$SLURM_NTASKS"',
        '--config.distributed.process_id="$SLURM_PROCID"',
    ]
    if not any(o.startswith("--config.task.data_dir=") for o in overrides):
        per_task.append('--config.task.data_dir="${TMPDIR:-/tmp}/jirl-data-$SLURM_JOB_ID"')
    task = " ".join([dq_join(fixed), *per_task, *(dq(o) for o in overrides)])
    lines = [
        "#!/bin/bash",
        *(f"#SBATCH --{key}={value}" for key, value in sbatch.items() if value is not None),
        "",
        "# One task per node; the first node of the allocation is the jax.distributed coordinator.",
        "set -euo pipefail",
        f'export JIRL_COORDINATOR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1):{port}"',
        'echo "jirl: $SLURM_NTASKS processes, coordinator $JIRL_COORDINATOR"',
        f"srun --kill-on-bad-exit=1 bash -c {shlex.quote(task)}",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args, overrides = parse_args(argv)
        if not args.dry_run and not os.path.isfile(os.path.join(args.venv, "bin", "jirl")):
            raise UsageError(
                f"--venv '{args.venv}' has no bin/jirl; make it on the shared filesystem first: "
                f'python3.11 -m venv {args.venv} && {args.venv}/bin/pip install -e ".[cuda]"'
            )
    except UsageError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2
    script = batch_script(args, overrides)
    submit = ["sbatch", args.script]
    if args.dry_run:
        print(script, end="")
        print(shlex.join(submit))
        return 0
    os.makedirs(os.path.dirname(args.script) or ".", exist_ok=True)
    output_dir = os.path.dirname(args.output)
    if output_dir and "%" not in output_dir:
        os.makedirs(output_dir, exist_ok=True)  # SLURM does not create the log's folder
    with open(args.script, "w") as f:
        f.write(script)
    print(f"{PROG}: wrote {args.script}; {shlex.join(submit)}", file=sys.stderr, flush=True)
    try:
        return subprocess.run(submit).returncode
    except FileNotFoundError:
        print(f"{PROG}: sbatch is not on PATH; run this on the cluster's login node.", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
