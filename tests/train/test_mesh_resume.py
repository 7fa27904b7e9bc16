"""A checkpoint written on one mesh resumes on another device count; bad mesh settings fail in one line."""

import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from configs import ARITH, ROOT, load_arith

from jirl import models
from jirl.optimizer import make_optimizer
from jirl.train import create_train_state
from jirl.train.checkpoint import Checkpointer, abstract
from jirl.train.metrics_writer import read_metrics


def _train(workdir, data_dir, devices, *overrides):
    xla_flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}"
    env = dict(os.environ, XLA_FLAGS=xla_flags, JAX_PLATFORMS="cpu")
    command = [
        sys.executable, "-m", "jirl.cli", "train", f"--config={ARITH}:mle", f"--workdir={workdir}",
        "--progress=false", "--config.model.preset=tiny", "--config.task.config=tiny",
        f"--config.task.data_dir={data_dir}", "--config.task.seq_len=128", "--config.train.steps=6",
        "--config.train.batch_size=4", "--config.train.log_every=1", "--config.train.checkpoint_every=3",
        "--config.train.learning_rate=1e-3", "--config.eval.every=0", "--config.eval.num_examples=2",
        "--config.eval.max_new_tokens=4", *overrides,
    ]  # fmt: skip
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def _state_at(workdir, step):
    tx, _ = make_optimizer(load_arith("mle").train)
    _, template = create_train_state(models.get_config("tiny"), tx, seed=0)
    checkpointer = Checkpointer(str(workdir), keep=3)
    args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract(template)))
    restored = checkpointer.manager.restore(step, args=args)
    checkpointer.close()
    return restored.state


def test_checkpoint_of_a_4_device_fsdp_mesh_resumes_on_one_device(tiny_data_dir, tmp_path):
    """Steps 1-3 on fsdp=4 (4 devices), then 4-6 on 1 device, equal a straight fsdp=4 run (float32)."""
    workdir = tmp_path / "run"
    first = _train(workdir, tiny_data_dir, 4, "--config.mesh.data=1", "--config.mesh.fsdp=4")
    assert first.returncode == 0, first.stderr
    straight = {r["step"]: r for r in read_metrics(str(workdir))}
    straight_final = _state_at(workdir, 6)
    shutil.rmtree(workdir / "checkpoints" / "6")  # as if the run had stopped after step 3
    again = _train(workdir, tiny_data_dir, 1)
    assert again.returncode == 0, again.stderr
    assert "resuming from the checkpoint at step 3" in again.stdout
    resumed = {r["step"]: r for r in read_metrics(str(workdir))}
    assert sorted(resumed) == [1, 2, 3, 4, 5, 6]
    for step in (4, 5, 6):
        np.testing.assert_allclose(resumed[step]["loss"], straight[step]["loss"], rtol=1e-5)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
        straight_final.params,
        _state_at(workdir, 6).params,
    )


@pytest.mark.parametrize(
    "devices, overrides, message",
    [
        (4, ["--config.mesh.data=3"], "mesh data=3 x fsdp=1 x tensor=1 = 3 devices, but 4 are available"),
        (
            4,
            ["--config.mesh.data=1", "--config.mesh.fsdp=4", "--config.train.batch_size=6"],
            "train.batch_size=6 is not divisible by the data-parallel size data*fsdp=4",
        ),
        (1, ["--config.train.microbatches=3"], "train.batch_size=4 is not divisible by train.microbatches=3"),
        (1, ["--config.mesh.pipeline=2"], "pipeline"),
    ],
)
def test_bad_mesh_is_one_line_and_exit_2(tiny_data_dir, tmp_path, devices, overrides, message):
    result = _train(tmp_path / "run", tiny_data_dir, devices, *overrides)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("jirl: error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()
