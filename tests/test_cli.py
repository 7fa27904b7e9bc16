"""The CLI: bad input is one line on stderr and exit 2; a tiny run goes end to end."""

import json
import os
import subprocess
import sys

import pytest

from jirl import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARITH = os.path.join(ROOT, "experiments", "arith.py")


def _run(*args):
    return subprocess.run(
        [sys.executable, "-m", "jirl.cli", *args], capture_output=True, text=True, cwd=ROOT, timeout=300
    )


@pytest.mark.parametrize(
    "args,message",
    [
        (["fly"], "unknown command 'fly'; accepted: ['train']"),
        (["train", f"--config={ARITH}:iqlearn", "--workdir=w", "--config.train.stepz=3"], "stepz"),
        (["train", f"--config={ARITH}:ppo", "--workdir=w"], "unknown objective 'ppo'"),
        (
            ["train", f"--config={ARITH}", "--workdir=w", "--config.model.preset=huge"],
            "unknown model preset 'huge'",
        ),
        (["train", f"--config={ARITH}", "--workdir=w", "--config.loss.name=ppo"], "unknown loss 'ppo'"),
        (["train", f"--config={ARITH}", "--workdir=w", "--config.task.name=imagenet"], "imagenet"),
        (["train", f"--config={ARITH}"], "--workdir is required"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path):
    args = [a.replace("--workdir=w", f"--workdir={tmp_path / 'w'}") for a in args]
    result = _run(*args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("jirl: error:")]
    assert len(error_lines) == 1 and message in error_lines[0], result.stderr
    assert not (tmp_path / "w").exists()  # nothing written for a config that does not validate


def test_train_end_to_end_in_process(tiny_data_dir, tmp_path, capsys):
    workdir = tmp_path / "run"
    code = cli.main(
        [
            "train",
            f"--config={ARITH}:mle",
            f"--workdir={workdir}",
            "--progress=false",
            "--config.model.preset=tiny",
            "--config.task.config=tiny",
            f"--config.task.data_dir={tiny_data_dir}",
            "--config.task.seq_len=128",
            "--config.train.steps=4",
            "--config.train.batch_size=2",
            "--config.train.log_every=2",
            "--config.eval.every=0",
            "--config.eval.num_examples=2",
            "--config.eval.max_new_tokens=4",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "validation answer accuracy:" in out and str(workdir) in out
    with open(workdir / "summary.json") as f:
        assert json.load(f)["steps"] == 4
