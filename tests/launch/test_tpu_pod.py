"""launch/tpu_pod.py: the exact commands of a dry run, quoting, cleanup in every case, and bad input."""

import json
import os
import shlex
import shutil
import stat
import subprocess
import sys
import tomllib
import types

import pytest
from launchers import ROOT, at_root_and_offline, load

PATH = os.path.join(ROOT, "launch", "tpu_pod.py")
with open(os.path.join(ROOT, "pyproject.toml"), "rb") as _f:
    WHEEL = "jirl-{}-py3-none-any.whl".format(tomllib.load(_f)["project"]["version"])


tpu_pod = load("tpu_pod")

BASE = [
    "--name=my-tpu",
    "--zone=us-central2-b",
    "--accelerator-type=v4-32",
    "--config=experiments/arith.py:iqlearn",
    "--workdir=gs://bucket/runs/iq",
]


@pytest.fixture(autouse=True)
def _at_root_and_offline(monkeypatch):
    at_root_and_offline(monkeypatch, tpu_pod)


def _dry_run(capsys, *extra):
    rc = tpu_pod.main([*BASE, "--dry-run", *extra])
    out, err = capsys.readouterr()
    assert rc == 0, err
    return out.splitlines()


def test_dry_run_prints_the_exact_commands_in_order(capsys):
    lines = _dry_run(
        capsys, "--spot", "--project=my-proj", "--config.mesh.fsdp=4", "--config.task.name=my task"
    )
    where = "--zone us-central2-b --project my-proj"
    python = os.path.relpath(sys.executable)
    python = python if not python.startswith("..") else sys.executable
    assert lines == [
        f"{shlex.quote(python)} -m pip wheel --no-deps -w dist .",
        "gcloud compute tpus tpu-vm create my-tpu --zone us-central2-b --accelerator-type v4-32 "
        "--version tpu-ubuntu2204-base --spot --project my-proj",
        f"gcloud compute tpus tpu-vm describe my-tpu {where} '--format=value(state)'",
        f"gcloud compute tpus tpu-vm scp dist/{WHEEL} experiments/arith.py my-tpu: {where} --worker=all",
        f"gcloud compute tpus tpu-vm ssh my-tpu {where} --worker=all --command 'python3 -m pip install "
        "--user --quiet --upgrade uv && python3 -m uv venv --seed --python 3.11 jirl-venv && "
        f'jirl-venv/bin/python -m pip install --quiet "{WHEEL}[tpu]"\'',
        f"gcloud compute tpus tpu-vm ssh my-tpu {where} --worker=all --command 'set -o pipefail; "
        "PYTHONUNBUFFERED=1 jirl-venv/bin/jirl train --config arith.py:iqlearn --workdir gs://bucket/runs/iq "
        '--config.distributed.enabled=true --config.mesh.fsdp=4 "--config.task.name=my task" 2>&1 '
        '| sed -u "s/^/[$(hostname)] /"\'',
        f"gcloud compute tpus tpu-vm delete my-tpu {where} --quiet",
    ]


def test_every_scp_and_ssh_reaches_all_workers_and_every_gcloud_names_the_zone(capsys):
    lines = [shlex.split(line) for line in _dry_run(capsys)]
    gcloud = [argv for argv in lines if argv[0] == "gcloud"]
    assert [argv[4] for argv in gcloud] == ["create", "describe", "scp", "ssh", "ssh", "delete"]
    for argv in gcloud:
        assert argv[argv.index("--zone") + 1] == "us-central2-b"
        assert "--project" not in argv
        assert ("--worker=all" in argv) == (argv[4] in ("scp", "ssh"))


def test_spot_only_when_asked(capsys):
    assert "--spot" not in shlex.split(_dry_run(capsys)[1])
    assert shlex.split(_dry_run(capsys, "--spot")[1])[-1] == "--spot"


def test_keep_omits_the_delete(capsys):
    lines = _dry_run(capsys, "--keep")
    assert len(lines) == 6
    assert not any(" delete " in line for line in lines)
    assert shlex.split(lines[-1])[4] == "ssh"


def test_runtime_version_follows_the_generation_unless_given(capsys):
    def version(*extra):
        argv = shlex.split(_dry_run(capsys, *extra)[1])
        return argv[argv.index("--version") + 1]

    assert version() == "tpu-ubuntu2204-base"
    assert version("--accelerator-type=v5litepod-16") == "v2-alpha-tpuv5-lite"
    assert version("--accelerator-type=v6e-64") == "v2-alpha-tpuv6e"
    assert version("--accelerator-type=v5p-32") == "v2-alpha-tpuv5"
    assert version("--runtime-version=my-runtime") == "my-runtime"


@pytest.mark.parametrize(
    "accelerator,hosts",
    [("v4-8", 1), ("v4-32", 4), ("v5p-8", 1), ("v5p-128", 16), ("v5litepod-1", 1), ("v5litepod-8", 1)]
    + [("v5litepod-16", 4), ("v6e-64", 16), ("v6e-256", 64), ("v3-32", 4), ("v2-8", 1)],
)
def test_hosts_of_a_slice(accelerator, hosts):
    assert tpu_pod.hosts_of(accelerator) == hosts


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("sed") is None, reason="needs bash and sed")
@pytest.mark.parametrize("exit_status", [0, 3])
def test_the_remote_train_command_passes_overrides_intact_and_keeps_the_exit_status(
    capsys, tmp_path, exit_status
):
    """The worker's shell gets exactly the overrides given here, and prefixes each line with the hostname."""
    odd = ["--config.task.name=my task", '--config.note=it\'s $HOME `x` "q" \\', "--config.mesh.data=-1"]
    lines = _dry_run(capsys, *odd)
    argv = shlex.split(lines[5])
    remote = argv[argv.index("--command") + 1]
    fake = tmp_path / "jirl-venv" / "bin" / "jirl"
    fake.parent.mkdir(parents=True)
    fake.write_text(
        f"#!{sys.executable}\nimport json, sys\n"
        f"print(json.dumps(sys.argv[1:]))\nprint('second line')\nsys.exit({exit_status})\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    result = subprocess.run(["bash", "-c", remote], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == exit_status, result.stderr
    hostname = subprocess.run(["hostname"], capture_output=True, text=True).stdout.strip()
    first, second = result.stdout.splitlines()
    assert first.startswith(f"[{hostname}] ") and second == f"[{hostname}] second line"
    assert json.loads(first[len(hostname) + 3 :]) == [
        "train",
        "--config",
        "arith.py:iqlearn",
        "--workdir",
        "gs://bucket/runs/iq",
        "--config.distributed.enabled=true",
        *odd,
    ]


def test_relative_workdir_is_fine_on_one_host_and_absolute_warns_on_many(capsys):
    rc = tpu_pod.main([*BASE, "--dry-run", "--accelerator-type=v4-8", "--workdir=runs/iq"])
    out, err = capsys.readouterr()
    assert rc == 0 and err == "" and "--workdir runs/iq" in out
    rc = tpu_pod.main([*BASE, "--dry-run", "--workdir=/mnt/shared/iq"])
    out, err = capsys.readouterr()
    assert rc == 0 and "warning" in err and "every worker" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--accelerator-type=v4-7"], "v4 sizes are multiples of 8"),
        (["--accelerator-type=v5litepod-12"], "'v5litepod-12' has no such size"),
        (["--accelerator-type=v5e-16"], "'v5e-16' is not a TPU type"),
        (["--accelerator-type=a100"], "'a100' is not a TPU type"),
        (["--name=My_TPU"], "--name 'My_TPU' is not a TPU name"),
        (["--workdir=runs/iq"], "local relative path, which each of the 4 workers"),
        (["--config=experiments/nope.py:iqlearn"], "'experiments/nope.py' does not exist"),
        (["--frobnicate"], "unrecognized argument '--frobnicate'"),
        (["--config.train.steps", "5"], "unrecognized argument '--config.train.steps'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, extra, message):
    rc = tpu_pod.main([*BASE, "--dry-run", *extra])
    out, err = capsys.readouterr()
    assert rc == 2
    assert out == ""
    assert len(err.splitlines()) == 1 and message in err, err


def test_missing_required_argument_is_one_line_and_exit_2(capsys):
    assert tpu_pod.main(["--zone=us-central2-b", "--dry-run"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and "required" in err


def test_as_a_script_bad_input_has_no_traceback():
    result = subprocess.run(
        [sys.executable, PATH, *BASE, "--accelerator-type=v9-8", "--dry-run"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stdout == "" and "Traceback" not in result.stderr
    assert result.stderr.startswith("tpu_pod: --accelerator-type 'v9-8' is not a TPU type")
    assert len(result.stderr.splitlines()) == 1


class _FakeGcloud:
    """Records the commands a real launch would run; `fail` maps a step's word to an exit status or
    KeyboardInterrupt."""

    def __init__(self, fail=None):
        self.calls, self.fail = [], fail or {}

    def _word(self, cmd):
        return cmd[4] if cmd[0] == "gcloud" else "build"

    def run(self, cmd, **kwargs):
        self.calls.append(cmd)
        outcome = self.fail.get(self._word(cmd), 0)
        if outcome is KeyboardInterrupt:
            raise KeyboardInterrupt
        return subprocess.CompletedProcess(cmd, outcome, stdout="READY\n", stderr="")

    def popen(self, cmd, **kwargs):
        assert kwargs.get("start_new_session") is True  # a second Ctrl-C must not cut the delete short
        self.calls.append(cmd)
        return self

    def wait(self):
        return 0

    def words(self):
        return [self._word(cmd) for cmd in self.calls]


@pytest.mark.parametrize(
    "fail,extra,words,rc",
    [
        ({}, [], ["build", "create", "describe", "scp", "ssh", "ssh", "delete"], 0),
        ({"build": 1}, [], ["build"], 1),
        (
            {"create": 1},
            [],
            ["build", "create"],
            1,
        ),  # a create that failed (or a taken name): nothing to delete
        ({"create": KeyboardInterrupt}, [], ["build", "create", "delete"], 130),
        ({"scp": 255}, [], ["build", "create", "describe", "scp", "delete"], 1),
        ({"ssh": 1}, [], ["build", "create", "describe", "scp", "ssh", "delete"], 1),
        ({"ssh": KeyboardInterrupt}, [], ["build", "create", "describe", "scp", "ssh", "delete"], 130),
        ({"ssh": 1}, ["--keep"], ["build", "create", "describe", "scp", "ssh"], 1),
        ({}, ["--keep"], ["build", "create", "describe", "scp", "ssh", "ssh"], 0),
    ],
)
def test_a_launch_deletes_the_slice_it_created_whatever_happens(monkeypatch, capsys, fail, extra, words, rc):
    fake = _FakeGcloud(fail)
    monkeypatch.setattr(tpu_pod, "subprocess", types.SimpleNamespace(run=fake.run, Popen=fake.popen))
    assert tpu_pod.main([*BASE, *extra]) == rc
    assert fake.words() == words
    if "--keep" in extra:
        assert "delete it with: gcloud compute tpus tpu-vm delete my-tpu" in capsys.readouterr().err
