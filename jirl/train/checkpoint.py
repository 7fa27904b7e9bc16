"""Orbax checkpoints of one run: train state, data-iterator state and config, saved together.

A checkpoint at step s holds everything needed to continue as if the run never stopped: the
state after s steps and the position of the data iterator after s batches.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from jirl.errors import ConfigError


def _all_processes(data_state: dict[str, Any]) -> list[dict[str, Any]]:
    """Every process's data-iterator state, in process order (each process reads its own slice)."""
    if jax.process_count() == 1:
        return [data_state]
    encoded = np.frombuffer(json.dumps(data_state).encode(), np.uint8)
    lengths = multihost_utils.process_allgather(np.array([encoded.size]))
    padded = np.zeros(int(np.max(lengths)), np.uint8)
    padded[: encoded.size] = encoded
    gathered = multihost_utils.process_allgather(padded)
    return [json.loads(bytes(row[: int(n)]).decode()) for row, n in zip(gathered, np.ravel(lengths))]


def _this_process(saved: dict[str, Any]) -> dict[str, Any] | None:
    """This process's data state from a checkpoint; None when another process count wrote it."""
    states = saved.get("processes", [saved])
    if len(states) != jax.process_count():
        return None
    return states[jax.process_index()]


class Checkpointer:
    """Async saves under WORKDIR/checkpoints, keeping the last `keep`; restores the newest readable one."""

    def __init__(self, workdir: str, *, keep: int):
        if keep < 1:
            raise ConfigError(f"checkpoint.keep={keep} must be at least 1.")
        self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, create=True, enable_async_checkpointing=True
            ),
        )

    def save(self, step: int, state: Any, data_state: dict[str, Any], config_json: str) -> None:
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data=ocp.args.JsonSave({"processes": _all_processes(data_state)}),
                config=ocp.args.JsonSave(json.loads(config_json)),
            ),
            force=True,
        )

    def restore_latest(self, abstract_state: Any) -> tuple[int, Any, dict[str, Any] | None] | None:
        """(step, state, data_state) of the newest checkpoint that reads back; None when there is none.

        The state is placed by the shardings of `abstract_state` (whatever mesh wrote it). The data
        state is this process's; None when the checkpoint was written by another number of processes.

        An unreadable checkpoint is skipped with a warning; when none reads back, a ValueError (a run
        must not start over on top of another run's checkpoints).
        """
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                restored = self.manager.restore(
                    step,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()
                    ),
                )
            except Exception as e:  # noqa: BLE001 - any unreadable checkpoint: fall back to the one before
                logging.warning(
                    "checkpoint %s/%d is unreadable (%s); trying the one before.",
                    self.directory,
                    step,
                    " ".join(str(e).split())[:200],
                )
                continue
            return step, restored.state, _this_process(restored.data)
        if self.manager.all_steps():
            self.close()
            raise ConfigError(
                f"no checkpoint in {self.directory} can be restored for this config (steps "
                f"{sorted(self.manager.all_steps())}); resume with the config that wrote them, or use a "
                "new --workdir. They were left untouched."
            )
        return None

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def abstract(tree: Any) -> Any:
    """Shapes, dtypes and shardings of `tree`, as a restore target."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
