"""Two processes on 127.0.0.1 (CPU collectives) train in lockstep, as one process on the same global batch."""

import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

from jirl import distributed

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SCRIPT = os.path.join(HERE, "multihost_check.py")
ARITH = os.path.join(ROOT, "experiments", "arith.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_together(commands: list[list[str]]) -> list[str]:
    """Starts every command at once (the processes of one run) and returns their stdout once all exit 0."""
    procs = [
        subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for command in commands
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-2000:]
    return [out for out, _ in outputs]


def _last_json(text: str) -> dict:
    return json.loads([line for line in text.splitlines() if line.startswith("{")][-1])


def test_two_processes_train_like_one():
    """Online IQLearn, each process sampling the prompts of its own rows (its expert terms are the
    offline step's; `jirl train` on two processes offline: test_jirl_train_on_two_processes_...)."""
    extra = ["online"]
    port = _free_port()
    outputs = _run_together(
        [[sys.executable, SCRIPT, "worker", str(port), str(i), "2", *extra] for i in range(2)]
    )
    results = [_last_json(out) for out in outputs]
    reference = subprocess.run(
        [sys.executable, SCRIPT, "reference", *extra], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert reference.returncode == 0, reference.stderr[-2000:]
    single = _last_json(reference.stdout)

    assert [r["process"] for r in results] == [0, 1]
    assert all(r["processes"] == 2 and r["devices"] == 2 for r in results)
    assert results[0]["losses"] == results[1]["losses"]  # lockstep: the same replicated values
    assert results[0]["param_abs_sum"] == results[1]["param_abs_sum"]
    assert single["processes"] == 1 and single["devices"] == 1
    np.testing.assert_allclose(results[0]["losses"], single["losses"], rtol=1e-5)
    np.testing.assert_allclose(results[0]["param_abs_sum"], single["param_abs_sum"], rtol=1e-5)
    assert results[0]["losses"][0] != results[0]["losses"][-1]  # it trained
    # the same responses were sampled: as many policy tokens at every step
    assert results[0]["policy_tokens"] == single["policy_tokens"]
    assert all(n > 0 for n in single["policy_tokens"])


def test_when_to_join(monkeypatch):
    monkeypatch.delenv("TPU_WORKER_HOSTNAMES", raising=False)
    assert not distributed.wants_initialize({})
    assert not distributed.wants_initialize({"enabled": "auto"})
    assert distributed.wants_initialize({"enabled": "auto", "coordinator_address": "10.0.0.1:1234"})
    assert distributed.wants_initialize({"enabled": True})
    assert not distributed.wants_initialize({"enabled": "false", "coordinator_address": "10.0.0.1:1234"})
    monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "t1v-n-0,t1v-n-1")
    assert distributed.wants_initialize({"enabled": "auto"})
    monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "localhost")
    assert not distributed.wants_initialize({"enabled": "auto"})


def test_bad_distributed_settings():
    with pytest.raises(
        ValueError, match="distributed.enabled='maybe' is not accepted; use auto, true or false"
    ):
        distributed.wants_initialize({"enabled": "maybe"})
    with pytest.raises(ValueError, match=r"distributed.process_id=2 must be in \[0, 2\)"):
        distributed.initialize({"enabled": True, "num_processes": 2, "process_id": 2})


def _train_two_processes(workdir, data_dir):
    port = _free_port()
    common = [
        sys.executable, "-m", "jirl.cli", "train", f"--config={ARITH}:iqlearn",
        f"--workdir={workdir}", "--progress=false", "--config.model.preset=tiny", "--config.task.config=tiny",
        f"--config.task.data_dir={data_dir}", "--config.task.seq_len=128", "--config.train.steps=6",
        "--config.train.batch_size=4", "--config.train.log_every=1", "--config.train.checkpoint_every=3",
        "--config.eval.every=3", "--config.eval.loss_batches=1", "--config.eval.num_examples=4",
        "--config.eval.max_new_tokens=8", f"--config.distributed.coordinator_address=127.0.0.1:{port}",
        "--config.distributed.num_processes=2", "--config.distributed.timeout_s=120",
    ]  # fmt: skip
    return _run_together([[*common, f"--config.distributed.process_id={i}"] for i in range(2)])


def test_jirl_train_on_two_processes_resumes_exactly(tiny_data_dir, tmp_path):
    """`jirl train` on 2 processes: one metrics file, per-process data positions in the checkpoint, and a
    restart from step 3 reproduces steps 4-6 bit for bit."""
    from jirl.train.metrics_writer import read_metrics

    workdir = tmp_path / "run"
    outputs = _train_two_processes(workdir, tiny_data_dir)
    assert "answer accuracy" in outputs[0] and "answer accuracy" not in outputs[1]  # process 0 reports
    first = read_metrics(str(workdir))
    assert [r["step"] for r in first] == [1, 2, 3, 4, 5, 6]
    saved = json.loads((workdir / "checkpoints" / "6" / "data" / "metadata").read_text())
    assert len(saved["processes"]) == 2  # each process's data position
    shutil.rmtree(workdir / "checkpoints" / "6")
    outputs = _train_two_processes(workdir, tiny_data_dir)
    assert "resuming from the checkpoint at step 3" in outputs[0]
    again = read_metrics(str(workdir))
    strip = lambda rs: [{k: v for k, v in r.items() if k != "tokens_per_sec"} for r in rs]  # noqa: E731
    assert strip(again) == strip(first)
