"""Train on a Cloud TPU slice: create it, install jirl on every worker, run `jirl train` on all, delete it.

Usage, from the repository root (standard library only; needs the Google Cloud CLI, `gcloud`):

  python launch/tpu_pod.py --name NAME --zone ZONE --accelerator-type TYPE \\
      --config experiments/arith.py:iqlearn --workdir gs://BUCKET/DIR \\
      [--spot] [--keep] [--project PROJECT] [--runtime-version RUNTIME] [--dry-run] \\
      [--config.KEY=VALUE ...]

Steps, each one command (`--dry-run` prints them, one per line, shell-quoted, and runs nothing):

  1. build the jirl wheel locally (`pip wheel --no-deps -w dist .`); there is no index release to install;
  2. `gcloud compute tpus tpu-vm create` the slice (`--spot` for Spot capacity), then poll `describe`
     until its state is READY;
  3. `scp --worker=all` the wheel and the experiment file to the home directory of every worker (the
     experiment file travels alone: it may import jirl and its dependencies, not files beside it);
  4. `ssh --worker=all`: a Python 3.11 virtual environment `~/jirl-venv` (uv fetches that Python, since
     TPU VM images ship an older one), and pip installs `jirl[tpu]` into it from the wheel;
  5. `ssh --worker=all`: the same `jirl train ... --config.distributed.enabled=true` on every worker
     (`jax.distributed.initialize()` finds the slice by itself), with any `--config.KEY=VALUE` given here
     passed through; every output line is prefixed with the worker's hostname (`...-w-0` is worker 0,
     the one to read);
  6. `gcloud compute tpus tpu-vm delete` the slice, also after a failure or Ctrl-C, unless `--keep`.

The workdir must be storage every worker reaches (a gs:// bucket, or a filesystem mounted on every
worker); a relative path on a multi-worker slice is refused. The task's data (`config.task.data_dir`,
relative to the home directory) is prepared by each worker on its own disk when training starts.
Bad arguments are one line on stderr and exit status 2.
"""

import argparse
import os
import re
import shlex
import subprocess
import sys
import time
import tomllib

PROG = "tpu_pod"
DIST = "dist"
REMOTE_VENV = "jirl-venv"

# Accelerator type -> (default runtime version, how the number counts, hosts for that number).
# v2/v3/v4/v5p count TensorCores, 8 per host (v4-8 and v5p-8 are one host); v5e (v5litepod) and v6e
# count chips: up to 8 on one host, 4 per host in multi-host slices.
GENERATIONS = {
    "v2": "tpu-ubuntu2204-base",
    "v3": "tpu-ubuntu2204-base",
    "v4": "tpu-ubuntu2204-base",
    "v5p": "v2-alpha-tpuv5",
    "v5litepod": "v2-alpha-tpuv5-lite",
    "v6e": "v2-alpha-tpuv6e",
}
CHIP_COUNTED = {"v5litepod": (1, 4, 8, 16, 32, 64, 128, 256), "v6e": (1, 4, 8, 16, 32, 64, 128, 256)}
ACCELERATOR_RE = re.compile(r"^(v2|v3|v4|v5p|v5litepod|v6e)-([1-9][0-9]*)$")
NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
SAFE_RE = re.compile(r"^[-\w@%+=:,./]+$", re.ASCII)  # what shlex.quote leaves unquoted
OVERRIDE_RE = re.compile(r"^--config\.[A-Za-z_][A-Za-z0-9_.]*=")


class UsageError(Exception):
    """Bad arguments: reported as one line on stderr, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def hosts_of(accelerator_type: str) -> int:
    """Number of TPU VM workers (hosts) of a slice, e.g. v4-32 -> 4, v5litepod-16 -> 4, v6e-8 -> 1."""
    m = ACCELERATOR_RE.match(accelerator_type)
    accepted = "like v4-8, v5p-32, v5litepod-16 or v6e-64 (v2, v3, v4, v5p, v5litepod or v6e, then a size)"
    if not m:
        raise UsageError(f"--accelerator-type '{accelerator_type}' is not a TPU type; accepted: {accepted}.")
    generation, n = m.group(1), int(m.group(2))
    if generation in CHIP_COUNTED:
        if n not in CHIP_COUNTED[generation]:
            sizes = ", ".join(map(str, CHIP_COUNTED[generation]))
            raise UsageError(
                f"--accelerator-type '{accelerator_type}' has no such size; {generation} sizes: {sizes}."
            )
        return 1 if n <= 8 else n // 4
    if n % 8:
        raise UsageError(
            f"--accelerator-type '{accelerator_type}' has no such size; {generation} sizes are multiples of 8"
        )
    return n // 8


def wheel_name() -> str:
    """The file name `pip wheel .` gives this (pure Python) project, read from pyproject.toml."""
    if not os.path.isfile("pyproject.toml"):
        raise UsageError("run this from the repository root (there is no pyproject.toml here).")
    with open("pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    name = re.sub(r"[-_.]+", "_", project["name"]).lower()
    return f"{name}-{project['version']}-py3-none-any.whl"


def dq(arg: str) -> str:
    """`arg` quoted for a POSIX shell with double quotes (when it needs quoting), so that the remote
    command nests in the single quotes of the printed gcloud line without escaped single quotes."""
    if SAFE_RE.match(arg):
        return arg
    return '"' + re.sub(r'([\\"$`])', r"\\\1", arg) + '"'


def dq_join(args: list[str]) -> str:
    return " ".join(dq(a) for a in args)


def _python() -> str:
    """This interpreter, as a path relative to the working directory when it lies inside it."""
    rel = os.path.relpath(sys.executable)
    return rel if not rel.startswith("..") else sys.executable


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = _Parser(
        prog="launch/tpu_pod.py",
        allow_abbrev=False,
        description="Create a Cloud TPU slice, install jirl on every worker, train on all, delete the slice.",
        epilog="Any --config.KEY=VALUE is passed through to `jirl train` on every worker.",
    )
    parser.add_argument("--name", required=True, help="TPU name (lowercase letters, digits, hyphens).")
    parser.add_argument("--zone", required=True, help="e.g. us-central2-b.")
    parser.add_argument("--accelerator-type", required=True, help="e.g. v4-8, v5p-32, v5litepod-16, v6e-64.")
    parser.add_argument("--runtime-version", help="TPU VM software version; default: the type's usual one.")
    parser.add_argument("--project", help="Google Cloud project; default: gcloud's configured one.")
    parser.add_argument("--spot", action="store_true", help="Create the slice on Spot capacity.")
    parser.add_argument("--keep", action="store_true", help="Do not delete the slice at the end.")
    parser.add_argument("--config", required=True, help="Experiment, e.g. experiments/arith.py:iqlearn.")
    parser.add_argument("--workdir", required=True, help="Output directory every worker reaches (gs://...).")
    parser.add_argument(
        "--python", default="3.11", help="Python version of the workers' venv (default 3.11)."
    )
    parser.add_argument("--ready-timeout", type=int, default=1800, help="Seconds to wait for READY.")
    parser.add_argument("--dry-run", action="store_true", help="Print the commands instead of running them.")
    args, rest = parser.parse_known_args(argv)
    for arg in rest:
        if not OVERRIDE_RE.match(arg):
            raise UsageError(
                f"unrecognized argument '{arg}'; only --config.KEY=VALUE overrides pass through."
            )
    if not NAME_RE.match(args.name):
        raise UsageError(
            f"--name '{args.name}' is not a TPU name; use lowercase letters, digits and hyphens, "
            "starting with a letter, at most 63 characters."
        )
    args.hosts = hosts_of(args.accelerator_type)
    if args.runtime_version is None:
        args.runtime_version = GENERATIONS[args.accelerator_type.rsplit("-", 1)[0]]
    config_file = args.config.partition(":")[0]
    if not os.path.isfile(config_file):
        raise UsageError(f"--config file '{config_file}' does not exist.")
    remote = "://" in args.workdir
    if args.hosts > 1 and not remote and not os.path.isabs(args.workdir):
        raise UsageError(
            f"--workdir '{args.workdir}' is a local relative path, which each of the {args.hosts} workers of "
            f"{args.accelerator_type} would write apart; give one they all reach, such as gs://BUCKET/DIR."
        )
    if args.hosts > 1 and not remote:
        print(
            f"{PROG}: warning: --workdir '{args.workdir}' must be a filesystem mounted on every worker.",
            file=sys.stderr,
        )
    return args, rest


def commands(args: argparse.Namespace, overrides: list[str]) -> list[tuple[str, list[str]]]:
    """The (step, argv) pairs of a launch, in order; the last, `delete`, is left out of a --keep run."""
    wheel = wheel_name()
    project = ["--project", args.project] if args.project else []
    where = ["--zone", args.zone, *project]
    tpu_vm = ["gcloud", "compute", "tpus", "tpu-vm"]
    config_file, _, config_arg = args.config.partition(":")
    remote_config = os.path.basename(config_file) + (f":{config_arg}" if config_arg else "")

    install = " && ".join(
        [
            "python3 -m pip install --user --quiet --upgrade uv",
            dq_join(["python3", "-m", "uv", "venv", "--seed", "--python", args.python, REMOTE_VENV]),
            dq_join([f"{REMOTE_VENV}/bin/python", "-m", "pip", "install", "--quiet", f"{wheel}[tpu]"]),
        ]
    )
    train = dq_join(
        [
            f"{REMOTE_VENV}/bin/jirl",
            "train",
            "--config",
            remote_config,
            "--workdir",
            args.workdir,
            "--config.distributed.enabled=true",
            *overrides,
        ]
    )
    # Run by the workers' login shell (bash): the exit status is jirl's, each line starts with the hostname.
    run = f'set -o pipefail; PYTHONUNBUFFERED=1 {train} 2>&1 | sed -u "s/^/[$(hostname)] /"'

    steps = [
        ("build", [_python(), "-m", "pip", "wheel", "--no-deps", "-w", DIST, "."]),
        (
            "create",
            [
                *tpu_vm,
                "create",
                args.name,
                "--zone",
                args.zone,
                "--accelerator-type",
                args.accelerator_type,
                "--version",
                args.runtime_version,
                *(["--spot"] if args.spot else []),
                *project,
            ],
        ),
        ("wait", [*tpu_vm, "describe", args.name, *where, "--format=value(state)"]),
        ("copy", [*tpu_vm, "scp", f"{DIST}/{wheel}", config_file, f"{args.name}:", *where, "--worker=all"]),
        ("install", [*tpu_vm, "ssh", args.name, *where, "--worker=all", "--command", install]),
        ("train", [*tpu_vm, "ssh", args.name, *where, "--worker=all", "--command", run]),
        ("delete", [*tpu_vm, "delete", args.name, *where, "--quiet"]),
    ]
    return steps


class StepFailed(Exception):
    pass


def _wait_ready(cmd: list[str], timeout: int) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = subprocess.run(cmd, capture_output=True, text=True)
        state = result.stdout.strip()
        if result.returncode == 0 and state == "READY":
            return
        if state in ("PREEMPTED", "TERMINATED", "STOPPED"):
            raise StepFailed(f"the TPU is {state} instead of READY")
        if time.monotonic() > deadline:
            raise StepFailed(
                f"the TPU was not READY after {timeout} s (state: {state or result.stderr.strip()})"
            )
        time.sleep(10)


def _run(step: str, cmd: list[str]) -> None:
    print(f"{PROG}: {step}: {shlex.join(cmd)}", file=sys.stderr, flush=True)
    rc = subprocess.run(cmd).returncode
    if rc:
        raise StepFailed(f"step '{step}' failed with exit status {rc}")


def _delete(cmd: list[str]) -> None:
    """Runs the delete in its own session, so that a second Ctrl-C does not cut it short."""
    print(f"{PROG}: delete: {shlex.join(cmd)}", file=sys.stderr, flush=True)
    process = subprocess.Popen(cmd, start_new_session=True)
    while True:
        try:
            process.wait()
            return
        except KeyboardInterrupt:
            print(f"{PROG}: still deleting the TPU; wait for it to finish.", file=sys.stderr, flush=True)


def launch(args: argparse.Namespace, steps: list[tuple[str, list[str]]]) -> int:
    """Runs the steps; deletes the slice once its creation has started, whatever happens, unless --keep."""
    by_step = dict(steps)
    created = False
    try:
        _run("build", by_step["build"])
        try:
            _run("create", by_step["create"])
        except KeyboardInterrupt:
            created = True  # the create operation goes on without us: delete what it makes
            raise
        created = True
        _wait_ready(by_step["wait"], args.ready_timeout)
        for step in ("copy", "install", "train"):
            _run(step, by_step[step])
        return 0
    except StepFailed as e:
        print(f"{PROG}: {e}.", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted.", file=sys.stderr)
        return 130
    finally:
        if created and not args.keep:
            _delete(by_step["delete"])
        elif created:
            hint = shlex.join(by_step["delete"])
            print(f"{PROG}: kept the TPU '{args.name}'; delete it with: {hint}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args, overrides = parse_args(argv)
        steps = commands(args, overrides)
    except UsageError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        for step, cmd in steps:
            if not (step == "delete" and args.keep):
                print(shlex.join(cmd))
        return 0
    try:
        return launch(args, steps)
    except FileNotFoundError as e:
        print(f"{PROG}: {e.filename} is not installed or not on PATH.", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
