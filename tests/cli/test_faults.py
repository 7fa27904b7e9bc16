"""Nothing lost, by fault injection through the CLI: a run that diverges, a NaN batch mid-run, two runs
on one workdir, a full disk during a checkpoint, and a SIGKILL in the middle of a checkpoint write."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import jirl.data
from jirl import cli
from jirl.train import loop
from jirl.train.lock import LOCK_NAME
from jirl.train.metrics_writer import read_metrics
from jirl.train.workdir import load_trained

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARITH = os.path.join(ROOT, "experiments", "arith.py")
FAULTS = os.path.join(ROOT, "tests", "cli", "faults.py")
STEPS = 30


def _args(workdir, data_dir, *extra, steps=STEPS, checkpoint_every=10):
    return [
        "train", f"--config={ARITH}:iqlearn", f"--workdir={workdir}", "--progress=false",
        "--config.model.preset=tiny", "--config.task.config=tiny", f"--config.task.data_dir={data_dir}",
        "--config.task.seq_len=128", f"--config.train.steps={steps}", "--config.train.batch_size=4",
        "--config.train.log_every=5", f"--config.train.checkpoint_every={checkpoint_every}",
        "--config.eval.every=0", "--config.eval.num_examples=2", "--config.eval.max_new_tokens=4", *extra,
    ]  # fmt: skip


def _jirl(*args, fault=None, **popen):
    """The `jirl` command in a new process, with a fault from tests/cli/faults.py when given."""
    command = [sys.executable, FAULTS, *fault, "--", *args] if fault else [sys.executable, "-m", "jirl.cli"]
    command += [] if fault else list(args)
    return subprocess.Popen(command, cwd=ROOT, text=True, **popen)


def _run(*args, fault=None):
    process = _jirl(*args, fault=fault, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = process.communicate(timeout=600)
    return process.returncode, out, err


def _error_line(err):
    lines = [line for line in err.splitlines() if line.startswith("jirl: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _params(workdir):
    return jax.device_get(load_trained(str(workdir)).params)


def _assert_same(a, b):
    jax.tree.map(np.testing.assert_array_equal, a, b)


def _poison_batch(monkeypatch, number):
    """From now on the training pipeline's `number`-th batch holds a NaN in its loss mask; returns
    the real `make_batches`."""
    make_batches = jirl.data.make_batches

    class Poisoned:
        """The training batches, one with a NaN in its loss mask."""

        def __init__(self, batches):
            self.batches, self.count = batches, 0

        def __next__(self):
            batch = next(self.batches)
            self.count += 1
            if self.count == number:
                batch["loss_mask"] = batch["loss_mask"] * np.float32("nan")
            return batch

        def get_state(self):
            return self.batches.get_state()

        def set_state(self, state):
            self.batches.set_state(state)

    def poisoned(task, split, **kwargs):
        batches = make_batches(task, split, **kwargs)
        return Poisoned(batches) if split == "train" else batches

    monkeypatch.setattr(jirl.data, "make_batches", poisoned)
    return make_batches


@pytest.fixture(scope="module")
def straight_run(tiny_data_dir, tmp_path_factory):
    """The run the faulty ones must end equal to: 30 steps straight through."""
    workdir = tmp_path_factory.mktemp("straight") / "run"
    assert cli.main(_args(workdir, tiny_data_dir)) == 0
    return workdir


@pytest.fixture(scope="module")
def straight(straight_run):
    return _params(straight_run)


def test_a_diverging_run_stops_and_every_checkpoint_stays_finite(tiny_data_dir, tmp_path):
    workdir = tmp_path / "run"
    diverging = ("--config.train.learning_rate=10000.0", "--config.train.grad_clip=0.0")
    code, _, err = _run(*_args(workdir, tiny_data_dir, *diverging, steps=60, checkpoint_every=2))
    assert code == 3, err
    line = _error_line(err)
    assert "consecutive steps had non-finite gradients and were skipped" in line
    assert "(train.max_nonfinite_steps=10 stops a run)" in line
    steps = sorted(int(p) for p in os.listdir(workdir / "checkpoints"))
    assert steps and f"the newest checkpoint, step {steps[-1]}" in line, line
    assert not any(".orbax-checkpoint-tmp" in p for p in os.listdir(workdir / "checkpoints"))
    params = _params(workdir)
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(params))
    assert not (workdir / LOCK_NAME).exists()  # released on the way out
    assert read_metrics(str(workdir))[-1]["nonfinite_steps"] >= 1


def test_a_nan_batch_mid_run_is_skipped_as_if_its_update_never_happened(tiny_data_dir, tmp_path, monkeypatch):
    """Step 13's batch holds a NaN: that step changes nothing; the run goes on and ends equal to a run
    whose step 13 is not taken at all (the data still advance)."""
    make_batches = _poison_batch(monkeypatch, 13)
    assert cli.main(_args(tmp_path / "nan", tiny_data_dir)) == 0
    monkeypatch.setattr(jirl.data, "make_batches", make_batches)

    run_train_step = loop.run_train_step

    def without_step_13(run, graphdef, shardings):
        step = run_train_step(run, graphdef, shardings)

        def maybe(state, expert, policy=None):
            if int(state.step) == 12:  # the 13th step: no update at all
                return state.replace(step=state.step + 1), {}
            return step(state, expert, policy)

        return maybe

    monkeypatch.setattr(loop, "run_train_step", without_step_13)
    assert cli.main(_args(tmp_path / "skipped", tiny_data_dir)) == 0

    nan, skipped = load_trained(str(tmp_path / "nan")), load_trained(str(tmp_path / "skipped"))
    assert nan.step == skipped.step == STEPS
    _assert_same(jax.device_get(nan.params), jax.device_get(skipped.params))
    metrics = read_metrics(str(tmp_path / "nan"))
    assert metrics[-1]["nonfinite_steps"] == 1 and metrics[-1]["nonfinite_streak"] == 0
    assert np.isfinite(metrics[-1]["loss"])


def test_a_single_bad_batch_stops_a_run_that_allows_none(tiny_data_dir, tmp_path, monkeypatch, capsys):
    """train.max_nonfinite_steps=1: the one skipped step stops the run (exit 3), even when the steps
    after it are fine; the checkpoint before it is the newest."""
    _poison_batch(monkeypatch, 13)
    workdir = tmp_path / "run"
    assert cli.main(_args(workdir, tiny_data_dir, "--config.train.max_nonfinite_steps=1")) == 3
    line = capsys.readouterr().err.strip()
    assert line.startswith("jirl: error: steps 13-13: 1 consecutive steps had non-finite gradients"), line
    assert "the newest checkpoint, step 10" in line
    assert sorted(os.listdir(workdir / "checkpoints")) == ["10"]


def test_a_second_run_on_a_busy_workdir_stops_at_once(tiny_data_dir, tmp_path, capsys):
    workdir = tmp_path / "run"
    first = _jirl(*_args(workdir, tiny_data_dir, steps=100000), stdout=subprocess.DEVNULL,
                  stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.time() + 300
        while not (workdir / "checkpoints" / "10").is_dir() and time.time() < deadline:
            assert first.poll() is None, "the first run ended early"
            time.sleep(0.05)
        holder = json.loads((workdir / LOCK_NAME).read_text())
        assert holder["pid"] == first.pid and {"host", "started"} <= set(holder)
        assert cli.main(_args(workdir, tiny_data_dir)) == 2
        line = capsys.readouterr().err.strip()
        assert line.startswith(f"jirl: error: {workdir} is in use by the run of process {first.pid} on ")
        assert first.poll() is None  # the first run goes on
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=300)
    assert first.returncode == 0 and not (workdir / LOCK_NAME).exists()


def test_eval_and_export_read_a_workdir_a_run_holds(straight_run, tmp_path, capsys):
    (straight_run / LOCK_NAME).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))
    try:
        args = ["--samples=1", "--num_prompts=1", "--max_new_tokens=2"]
        assert cli.main(["eval", f"--workdir={straight_run}", *args]) == 0
        assert cli.main(["export", f"--workdir={straight_run}", f"--out={tmp_path / 'hf'}"]) == 0
    finally:
        (straight_run / LOCK_NAME).unlink()
    assert (tmp_path / "hf" / "model.safetensors").exists()


def test_a_lock_left_by_a_dead_process_is_taken_over(tiny_data_dir, tmp_path, capsys):
    workdir = tmp_path / "run"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    workdir.mkdir()
    stale = {"host": socket.gethostname(), "pid": gone.pid, "started": "2026-01-01T00:00:00+00:00"}
    (workdir / LOCK_NAME).write_text(json.dumps(stale))
    assert cli.main(_args(workdir, tiny_data_dir, steps=2)) == 0
    assert f"taking over {workdir / LOCK_NAME} from process {gone.pid}" in capsys.readouterr().out
    assert not (workdir / LOCK_NAME).exists()


def test_a_full_disk_stops_with_one_line_and_a_restart_resumes_exactly(tiny_data_dir, tmp_path, straight):
    """The checkpoint of step 20 fails with ENOSPC: one line, exit 4, step 10 left as it was and no
    partial directory; the same command then resumes from step 10 and ends equal to a straight run."""
    workdir = tmp_path / "run"
    code, _, err = _run(*_args(workdir, tiny_data_dir), fault=("enospc", "3"))
    assert code == 4, err
    line = _error_line(err)
    assert "writing a checkpoint failed: No space left on device" in line
    assert "the newest complete checkpoint (step 10) is as it was" in line
    assert os.listdir(workdir / "checkpoints") == ["10"]
    assert not (workdir / LOCK_NAME).exists()
    code, out, err = _run(*_args(workdir, tiny_data_dir))
    assert code == 0, err
    assert "resuming from the checkpoint at step 10" in out
    _assert_same(_params(workdir), straight)


def test_a_sigkill_during_a_checkpoint_write_is_survived(tiny_data_dir, tmp_path, straight):
    """Killed while writing the checkpoint of step 20: the partial directory and the stale lock are
    cleared at restart, which resumes from step 10 and ends equal to a straight run."""
    workdir, marker = tmp_path / "run", tmp_path / "writing"
    env = dict(os.environ, JIRL_FAULT_MARKER=str(marker))
    process = _jirl(*_args(workdir, tiny_data_dir), fault=("hang", "3"), stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL, env=env)  # fmt: skip
    deadline = time.time() + 300
    while not marker.exists() and time.time() < deadline:
        assert process.poll() is None, "the run ended before its checkpoint write"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    left = sorted(os.listdir(workdir / "checkpoints"))
    assert "10" in left and any(p.startswith("20.orbax-checkpoint-tmp") for p in left), left
    assert (workdir / LOCK_NAME).exists()
    code, out, err = _run(*_args(workdir, tiny_data_dir))
    assert code == 0, err
    assert "taking over" in out and "resuming from the checkpoint at step 10" in out
    assert sorted(os.listdir(workdir / "checkpoints")) == ["10", "20", "30"]
    _assert_same(_params(workdir), straight)
