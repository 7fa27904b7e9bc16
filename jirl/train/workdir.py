"""A run's working directory read back: its config, the `Run` that config builds, the newest params."""

from __future__ import annotations

import json
import os
from typing import Any, NamedTuple

from ml_collections import ConfigDict

from jirl import experiment
from jirl.errors import ConfigError
from jirl.experiment import Run
from jirl.train import adversarial
from jirl.train.checkpoint import Checkpointer
from jirl.train.state import sharded_state_target


class Trained(NamedTuple):
    """A trained model as its run left it: the Run, the model's graphdef, the params at `step`.

    A LoRA run's params are its base with the adapters merged in; `adapters` are the adapters alone
    (None for full fine-tuning)."""

    run: Run
    graphdef: Any
    params: Any
    step: int
    adapters: Any = None


def load_trained(workdir: str) -> Trained:
    """The run in `workdir` (its config.json) with the params of its newest readable checkpoint."""
    config_path = os.path.join(workdir, "config.json")
    checkpoints = os.path.join(workdir, "checkpoints")
    if not os.path.isfile(config_path) or not os.path.isdir(checkpoints) or not os.listdir(checkpoints):
        raise ConfigError(f"no checkpoint in {workdir}; evaluate the --workdir of a run that has trained.")
    with open(config_path) as f:
        config = experiment.upgrade(ConfigDict(json.load(f)))  # a run saved before keys moved, too
    run = experiment.build(config, training=False)
    lora_targets = None
    if run.lora is not None:  # the checkpoints hold the adapters; the base is read again
        from jirl.train import lora

        lora_targets = lora.targets(run)
        graphdef, target = lora_targets.graphdef, lora_targets.state
    elif run.discriminator is None:
        graphdef, target, _ = sharded_state_target(run.model, run.tx, run.mesh, run.rules)
    else:  # the policy is read back with the discriminator it trained beside
        graphdef, _, target, _ = adversarial.state_target(run)
    checkpointer = Checkpointer(workdir, keep=int(config.checkpoint.keep), read_only=True)
    try:
        restored = checkpointer.restore_latest(target)
    finally:
        checkpointer.close()
    if restored is None:
        raise ConfigError(f"no checkpoint in {workdir}; evaluate the --workdir of a run that has trained.")
    step, state, _ = restored
    if lora_targets is None:
        return Trained(run, graphdef, state.params, step)
    lora.check_fingerprint(_read_base(workdir, config, step), config, step)
    base = lora.load_base(run, lora_targets)
    merged = lora.merger(run, lora_targets, float32=True)(base, state.params)  # as a full run's params
    return Trained(run, graphdef, merged, step, state.params)


def _read_base(workdir: str, config: Any, step: int) -> Any:
    checkpointer = Checkpointer(workdir, keep=int(config.checkpoint.keep), read_only=True)
    try:
        return checkpointer.read_base(step)
    finally:
        checkpointer.close()
