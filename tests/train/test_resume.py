"""Exact resume: a run killed with SIGKILL and started again equals a straight run, bit for bit."""

import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
from configs import ARITH, ROOT

from jirl import models
from jirl.optimizer import make_optimizer
from jirl.train import create_train_state
from jirl.train.checkpoint import Checkpointer, abstract
from jirl.train.metrics_writer import read_metrics

STEPS = 150


def _command(workdir, data_dir):
    return [
        sys.executable, "-m", "jirl.cli", "train", f"--config={ARITH}:iqlearn", f"--workdir={workdir}",
        "--progress=false", "--config.model.preset=tiny", "--config.task.config=tiny",
        f"--config.task.data_dir={data_dir}", "--config.task.seq_len=128", f"--config.train.steps={STEPS}",
        "--config.train.batch_size=4", "--config.train.log_every=1", "--config.train.checkpoint_every=50",
        "--config.eval.every=0", "--config.eval.num_examples=2", "--config.eval.max_new_tokens=4",
    ]  # fmt: skip


def _final_state(workdir, config):
    tx, _ = make_optimizer(config.train)
    _, template = create_train_state(models.get_config("tiny"), tx, seed=0)
    checkpointer = Checkpointer(str(workdir), keep=3)
    step, state, _ = checkpointer.restore_latest(abstract(template))
    checkpointer.close()
    return step, state


def _losses(workdir):
    return [{k: v for k, v in r.items() if k != "tokens_per_sec"} for r in read_metrics(str(workdir))]


def test_sigkill_then_restart_continues_bitwise(tiny_data_dir, tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run(_command(straight, tiny_data_dir), check=True, cwd=ROOT, capture_output=True, timeout=600)

    process = subprocess.Popen(
        _command(killed, tiny_data_dir), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 300
    while not os.path.isdir(killed / "checkpoints" / "100") and time.time() < deadline:
        assert process.poll() is None, "the run ended before it could be killed"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    logged = len(read_metrics(str(killed)))
    assert 100 <= logged < STEPS, logged  # killed in the middle
    restart = subprocess.run(
        _command(killed, tiny_data_dir), cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert restart.returncode == 0, restart.stderr
    assert "resuming from the checkpoint at step" in restart.stdout

    assert _losses(killed) == _losses(straight)  # every step's loss and metrics, bitwise
    from configs import load_arith

    config = load_arith()
    (step_a, a), (step_b, b) = _final_state(straight, config), _final_state(killed, config)
    assert step_a == step_b == STEPS
    jax.tree.map(np.testing.assert_array_equal, a, b)


def test_sigterm_saves_at_the_step_boundary_and_exits_0(tiny_data_dir, tmp_path):
    workdir = tmp_path / "run"
    process = subprocess.Popen(
        _command(workdir, tiny_data_dir),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    deadline = time.time() + 300
    while not os.path.isdir(workdir / "checkpoints" / "50") and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=300)
    assert process.returncode == 0
    assert "stopped by signal after step" in out
    stopped = int(out.split("stopped by signal after step ")[1].split(";")[0])
    assert 50 <= stopped < STEPS
    assert os.path.isdir(workdir / "checkpoints" / str(stopped))
    assert read_metrics(str(workdir))[-1]["step"] == stopped


def test_an_unreadable_latest_checkpoint_falls_back_to_the_one_before(tmp_path):
    from configs import load_arith

    config = load_arith()
    tx, _ = make_optimizer(config.train)
    _, state = create_train_state(models.get_config("tiny"), tx, seed=0)
    checkpointer = Checkpointer(str(tmp_path), keep=3)
    for step in (1, 2):
        checkpointer.save(step, state.replace(step=state.step + step), {"at": step}, config.to_json())
    checkpointer.close()
    for root, _, files in os.walk(tmp_path / "checkpoints" / "2" / "state"):
        for name in files:
            with open(os.path.join(root, name), "wb") as f:
                f.write(b"garbage")
    checkpointer = Checkpointer(str(tmp_path), keep=3)
    step, restored, data_state = checkpointer.restore_latest(abstract(state))
    checkpointer.close()
    assert step == 1 and data_state == {"at": 1} and int(restored.step) == 1


def test_checkpoints_of_another_config_are_refused_and_left_untouched(tiny_data_dir, tmp_path, capsys):
    from jirl import cli

    args = _command(tmp_path, tiny_data_dir)[3:]
    args = [a.replace(f"steps={STEPS}", "steps=4").replace("every=50", "every=2") for a in args]
    assert cli.main(args) == 0
    before = sorted((p.name, p.stat().st_mtime_ns) for p in (tmp_path / "checkpoints").iterdir())
    config_before = (tmp_path / "config.json").read_text()
    assert cli.main(args + ["--config.model.preset=small"]) == 2
    assert "can be restored for this config" in capsys.readouterr().err
    assert sorted((p.name, p.stat().st_mtime_ns) for p in (tmp_path / "checkpoints").iterdir()) == before
    assert (tmp_path / "config.json").read_text() == config_before
