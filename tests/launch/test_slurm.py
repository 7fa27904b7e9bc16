"""launch/slurm.py: the exact batch script of a dry run, per-task values evaluated by each task, bad input."""

import json
import os
import shlex
import shutil
import stat
import subprocess
import sys
import types

import pytest
from launchers import ROOT, at_root_and_offline, load

PATH = os.path.join(ROOT, "launch", "slurm.py")


slurm = load("slurm")

BASE = ["--nodes=2", "--config=experiments/arith.py:iqlearn", "--workdir=runs/iq"]


@pytest.fixture(autouse=True)
def _at_root_and_offline(monkeypatch):
    at_root_and_offline(monkeypatch, slurm)


def _dry_run(capsys, *extra):
    rc = slurm.main([*BASE, "--dry-run", *extra])
    out, err = capsys.readouterr()
    assert rc == 0, err
    return out


def test_dry_run_prints_the_exact_script_then_the_sbatch_command(capsys):
    out = _dry_run(
        capsys, "--gpus-per-node=4", "--partition=gpu", "--time=1-00:00:00", "--config.task.name=my task"
    )
    assert out.splitlines() == [
        "#!/bin/bash",
        "#SBATCH --job-name=jirl",
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --time=1-00:00:00",
        "#SBATCH --partition=gpu",
        "#SBATCH --output=runs/slurm/%x-%j.out",
        "",
        "# One task per node; the first node of the allocation is the jax.distributed coordinator.",
        "set -euo pipefail",
        'export JIRL_COORDINATOR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)'
        ':$((SLURM_JOB_ID % 4096 + 61440))"',
        'echo "jirl: $SLURM_NTASKS processes, coordinator $JIRL_COORDINATOR"',
        "srun --kill-on-bad-exit=1 bash -c '.venv/bin/jirl train --config experiments/arith.py:iqlearn "
        "--workdir runs/iq --config.distributed.enabled=true "
        '--config.distributed.coordinator_address="$JIRL_COORDINATOR" '
        '--config.distributed.num_processes="$SLURM_NTASKS" --config.distributed.process_id="$SLURM_PROCID" '
        '--config.task.data_dir="${TMPDIR:-/tmp}/jirl-data-$SLURM_JOB_ID" "--config.task.name=my task"\'',
        "sbatch runs/slurm/jirl.sbatch",
    ]


def test_a_dry_run_writes_nothing(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    _dry_run(capsys, f"--config={os.path.join(ROOT, 'experiments', 'arith.py')}")
    assert list(tmp_path.iterdir()) == []


def test_per_task_values_sit_inside_the_single_quotes_of_bash_c(capsys):
    srun = [line for line in _dry_run(capsys).splitlines() if line.startswith("srun ")]
    assert len(srun) == 1
    argv = shlex.split(srun[0])  # what the batch shell hands srun: the $ are not expanded
    assert argv[:3] == ["srun", "--kill-on-bad-exit=1", "bash"] and argv[3] == "-c" and len(argv) == 5
    assert '--config.distributed.process_id="$SLURM_PROCID"' in argv[4]
    assert '--config.distributed.num_processes="$SLURM_NTASKS"' in argv[4]


def test_options_and_a_given_data_dir(capsys):
    out = _dry_run(
        capsys,
        "--job-name=iq-2x8",
        "--account=proj",
        "--port=12345",
        "--venv=/shared/envs/jirl",
        "--script=/shared/jobs/iq.sbatch",
        "--output=/shared/logs/%j.out",
        "--config.task.data_dir=/shared/data",
    )
    lines = out.splitlines()
    assert "#SBATCH --job-name=iq-2x8" in lines and "#SBATCH --account=proj" in lines
    assert "#SBATCH --output=/shared/logs/%j.out" in lines
    assert not any(line.startswith("#SBATCH --partition") for line in lines)
    assert lines[-1] == "sbatch /shared/jobs/iq.sbatch"
    assert ':12345"' in out and "jirl-data" not in out
    task = shlex.split([line for line in lines if line.startswith("srun ")][0])[4]
    assert task.startswith("/shared/envs/jirl/bin/jirl train ") and task.endswith(
        " --config.task.data_dir=/shared/data"
    )


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_the_script_gives_each_task_its_own_process_id(capsys, tmp_path):
    """Runs the script with stand-ins for scontrol, srun (two tasks) and jirl: each task sees its own id."""
    odd = ["--config.task.name=my task", '--config.note=it\'s $HOME `x` "q" \\']
    script = tmp_path / "job.sbatch"
    script.write_text(_dry_run(capsys, "--venv=venv", *odd).rsplit("sbatch ", 1)[0])
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fakes = {
        "scontrol": 'test "$1 $2 $3" = "show hostnames node[07-08]" && printf "node07\\nnode08\\n"',
        "srun": 'for i in 0 1; do SLURM_PROCID=$i "${@:2}" || exit $?; done',  # runs "bash -c ..." per task
    }
    for name, body in fakes.items():
        (bin_dir / name).write_text(f"#!/bin/bash\n{body}\n")
    jirl = tmp_path / "venv" / "bin" / "jirl"
    jirl.parent.mkdir(parents=True)
    jirl.write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        "open(f'task{os.environ[\"SLURM_PROCID\"]}.json', 'w').write(json.dumps(sys.argv[1:]))\n"
    )
    for path in [*bin_dir.iterdir(), jirl]:
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "SLURM_JOB_NODELIST": "node[07-08]",
        "SLURM_NTASKS": "2",
        "SLURM_JOB_ID": "5000",
        "TMPDIR": "/scratch",
    }
    result = subprocess.run(
        ["bash", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "jirl: 2 processes, coordinator node07:62344\n"  # 5000 % 4096 + 61440
    for task in (0, 1):
        assert json.loads((tmp_path / f"task{task}.json").read_text()) == [
            "train",
            "--config",
            "experiments/arith.py:iqlearn",
            "--workdir",
            "runs/iq",
            "--config.distributed.enabled=true",
            "--config.distributed.coordinator_address=node07:62344",
            "--config.distributed.num_processes=2",
            f"--config.distributed.process_id={task}",
            "--config.task.data_dir=/scratch/jirl-data-5000",
            *odd,
        ]


def test_a_real_submit_writes_the_script_and_runs_sbatch(monkeypatch, capsys, tmp_path):
    (tmp_path / "venv" / "bin").mkdir(parents=True)
    (tmp_path / "venv" / "bin" / "jirl").write_text("")
    config = os.path.join(ROOT, "experiments", "arith.py")
    args = [f"--config={config}:mle", "--nodes=3", "--venv=venv", "--workdir=runs/mle"]
    expected = _dry_run(capsys, *args).splitlines()
    calls = []
    monkeypatch.setattr(
        slurm,
        "subprocess",
        types.SimpleNamespace(run=lambda cmd: calls.append(cmd) or types.SimpleNamespace(returncode=0)),
    )
    monkeypatch.chdir(tmp_path)
    assert slurm.main([*BASE, *args]) == 0
    assert calls == [["sbatch", "runs/slurm/jirl.sbatch"]]
    assert (tmp_path / "runs" / "slurm" / "jirl.sbatch").read_text().splitlines() == expected[:-1]


def test_a_real_submit_without_the_venv_says_how_to_make_it(capsys):
    assert slurm.main([*BASE, "--venv=no-such-venv"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1
    assert "--venv 'no-such-venv' has no bin/jirl" in err and 'pip install -e ".[cuda]"' in err


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--nodes=0"], "'0' is not a positive integer"),
        (["--gpus-per-node=many"], "'many' is not a positive integer"),
        (["--time=four hours"], "--time 'four hours' is not a SLURM time"),
        (["--job-name=my job"], "--job-name 'my job' may hold only"),
        (["--port=70000"], "--port 70000 is not a TCP port"),
        (["--config=experiments/nope.py"], "'experiments/nope.py' does not exist"),
        (["--frobnicate"], "unrecognized argument '--frobnicate'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, extra, message):
    rc = slurm.main([*BASE, "--dry-run", *extra])
    out, err = capsys.readouterr()
    assert rc == 2
    assert out == ""
    assert len(err.splitlines()) == 1 and message in err, err


def test_as_a_script_bad_input_has_no_traceback():
    result = subprocess.run(
        [sys.executable, PATH, "--config=experiments/arith.py", "--workdir=w", "--dry-run"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stdout == "" and "Traceback" not in result.stderr
    assert result.stderr == "slurm: the following arguments are required: --nodes\n"
