"""Orbax checkpoints of one run: train state, data-iterator state and config, saved together.

A checkpoint at step s holds everything needed to continue as if the run never stopped: the
state after s steps, the position of the data iterator after s batches, and for an online objective
the policy batch in use (sampled at or before step s, and reused until the next sampling when
`online.sample_every` > 1).

A checkpoint is written in a temporary directory and renamed into place when complete, so a write
that fails (no space, no permission) or a process killed mid-write leaves only that temporary
directory. A failed write is noticed at the next `check`, save or close, which removes it and raises
`WriteFailed` (one line naming the path and the cause; orbax's own traceback from its writer thread,
and tensorstore's from the writes still under way, are kept off the console); a training run's
Checkpointer removes any left behind when it starts. A reader's (`read_only=True`: `jirl eval`,
`jirl export`) removes nothing, so it may read a workdir while a run writes there. The newest
complete checkpoint is never touched by any of them.
"""

from __future__ import annotations

import atexit
import glob
import json
import logging as std_logging
import os
import shutil
import sys
import time
import traceback
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from jirl.errors import ConfigError, WriteFailed

TEMPORARY = "*.orbax-checkpoint-tmp*"  # where orbax writes a checkpoint before renaming it into place


def _remove_temporaries(directory: str, settle_s: float = 1.0) -> None:
    """Removes the temporary directories of unfinished checkpoints, again until none has come back
    for `settle_s` seconds (tensorstore may still be writing one from its own threads), at most 10 s."""
    deadline = time.monotonic() + 10.0
    while True:
        for path in glob.glob(os.path.join(directory, TEMPORARY)):
            shutil.rmtree(path, ignore_errors=True)
        quiet_until = time.monotonic() + settle_s
        while time.monotonic() < quiet_until and not glob.glob(os.path.join(directory, TEMPORARY)):
            time.sleep(0.05)
        if not glob.glob(os.path.join(directory, TEMPORARY)) or time.monotonic() > deadline:
            return


def os_error(error: BaseException | None) -> OSError | None:
    """The OSError behind `error` (itself, or along its causes and contexts); None when there is none."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


class _QuietWriteErrors(std_logging.Filter):
    """Drops orbax's log records of a failed write (a traceback per writer thread, and after the
    failure those of the threads it leaves behind); the Checkpointer reports the failure as one line."""

    def __init__(self):
        super().__init__()
        self.failed = False

    def filter(self, record: std_logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        from_orbax = "orbax" in (record.pathname or "")
        return not (from_orbax and error is not None and (self.failed or os_error(error) is not None))


def _is_closed_loop_callback(unraisable: Any) -> bool:
    """Whether an unraisable error is tensorstore calling back into an asyncio loop that orbax has
    already closed: what the writes of a failed checkpoint do when they end after its save gave up."""
    error = unraisable.exc_value
    if not (isinstance(error, RuntimeError) and str(error) == "Event loop is closed"):
        return False
    frames = traceback.extract_tb(unraisable.exc_traceback)
    return any(frame.name == "call_soon_threadsafe" for frame in frames)


class _ClosedLoopCallbacks:
    """The process's `sys.unraisablehook` for tensorstore's closed-loop errors: orbax closes its
    asyncio loop when a save or restore ends on an error, and each tensorstore write or read still
    under way then prints a traceback. While Checkpointers are open they are held; once an operation
    has failed (`expect`) they are dropped from then on, since the Checkpointer reports the failure
    itself; when the last open Checkpointer closes without one, those held are passed on. Every other
    unraisable error goes to the hook it replaced, at once. One per process (`_closed_loop_hook`), so
    Checkpointers may open and close in any order."""

    def __init__(self, previous: Any):
        self.previous = previous
        self.held: list[Any] = []
        self.open = 0
        self.expected = False

    def __call__(self, unraisable: Any) -> None:
        if not _is_closed_loop_callback(unraisable):
            self.previous(unraisable)
        elif not self.expected:
            self.held.append(unraisable)

    def opened(self) -> None:
        self.open += 1

    def expect(self) -> None:
        """An operation failed: the callbacks it leaves, held or still to come, are dropped."""
        self.expected = True
        self.held.clear()

    def closed(self) -> None:
        """A Checkpointer closed; with none left open, what was held is passed on."""
        self.open = max(self.open - 1, 0)
        if self.open == 0:
            held, self.held = self.held, []
            for unraisable in held:
                self.previous(unraisable)


def _closed_loop_hook() -> _ClosedLoopCallbacks:
    """The process's closed-loop hook, installed over the current `sys.unraisablehook` when absent."""
    if not isinstance(sys.unraisablehook, _ClosedLoopCallbacks):
        sys.unraisablehook = _ClosedLoopCallbacks(sys.unraisablehook)
    return sys.unraisablehook


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

    def __init__(self, workdir: str, *, keep: int, read_only: bool = False):
        if keep < 1:
            raise ConfigError(f"checkpoint.keep={keep} must be at least 1.")
        self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep,
                create=not read_only,
                enable_async_checkpointing=True,
                cleanup_tmp_directories=not read_only,
                read_only=read_only,
            ),
        )
        self._quiet = _QuietWriteErrors()
        std_logging.getLogger("absl").addFilter(self._quiet)
        self._closed_loop = _closed_loop_hook()
        self._closed_loop.opened()
        self._failed = False

    def save(
        self,
        step: int,
        state: Any,
        data_state: dict[str, Any],
        config_json: str,
        policy: Any = None,
        base: dict[str, Any] | None = None,
    ) -> None:
        """Starts writing the checkpoint of `step` (asynchronously); a failed earlier write raises here.
        `policy`: the policy batch in use (global arrays), for an online objective; `base`: a LoRA
        run's base fingerprint (its state holds the adapters only; `jirl.train.lora`)."""
        items = dict(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave({"processes": _all_processes(data_state)}),
            config=ocp.args.JsonSave(json.loads(config_json)),
        )
        if policy is not None:
            items["policy"] = ocp.args.StandardSave(policy)
        if base is not None:
            items["base"] = ocp.args.JsonSave(base)
        args = ocp.args.Composite(**items)
        try:
            self.manager.check_for_errors()
            self.manager.save(step, args=args, force=True)
        except Exception as e:  # noqa: BLE001 - an OSError behind it is the user's to fix; else re-raised
            self._write_failed(e)

    def check(self) -> None:
        """Raises `WriteFailed` when a write started earlier has failed (without waiting for one
        still under way)."""
        try:
            self.manager.check_for_errors()
            if not self.manager.is_saving_in_progress():
                self.manager.wait_until_finished()  # where a finished write's error surfaces
        except Exception as e:  # noqa: BLE001 - as in save
            self._write_failed(e)

    def newest_step(self) -> int | None:
        """The step of the newest complete checkpoint (after the writes under way have ended)."""
        try:
            self.manager.wait_until_finished()
        except Exception as e:  # noqa: BLE001 - as in save
            self._write_failed(e)
        self.manager.reload()
        return self.manager.latest_step()

    def _write_failed(self, error: Exception) -> None:
        cause = os_error(error)
        if cause is None:
            raise error
        self._failed = self._quiet.failed = True  # the filter stays: orbax's threads may log more
        self._closed_loop.expect()  # the hook stays too, for the callbacks still to come
        for _ in range(3):  # the other items' writes of that checkpoint: let them end before removing it
            try:
                self.manager.wait_until_finished()
                break
            except Exception:  # noqa: BLE001 - each wait may raise what one more item met
                continue
        try:
            self.manager.close()
        except Exception:  # noqa: BLE001 - a manager whose write failed may not close cleanly
            pass
        _remove_temporaries(self.directory)
        atexit.register(_remove_temporaries, self.directory, settle_s=0.0)  # what is written after this
        steps = sorted(int(p) for p in os.listdir(self.directory) if p.isdigit())
        newest = f"step {max(steps)}" if steps else "none yet"
        raise WriteFailed(
            f"writing a checkpoint failed: {cause.strerror or cause} ({cause.filename or self.directory}); "
            f"its partial directory was removed and the newest complete checkpoint ({newest}) is as it "
            "was: free space or fix permissions, then run the same command again to resume from it."
        ) from error

    def restore_latest(self, abstract_state: Any) -> tuple[int, Any, dict[str, Any] | None] | None:
        """(step, state, data_state) of the newest checkpoint that reads back; None when there is none.

        The state is placed by the shardings of `abstract_state` (whatever mesh wrote it). The data
        state is this process's; None when the checkpoint was written by another number of processes.

        An unreadable checkpoint is skipped with a warning; when none reads back, a ConfigError (a run
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
                self._closed_loop.expect()
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

    def read_base(self, step: int) -> dict[str, Any] | None:
        """The base fingerprint saved with a LoRA run's checkpoint of `step`; None when it has none."""
        if not os.path.isdir(os.path.join(self.directory, str(step), "base")):
            return None
        return self.manager.restore(step, args=ocp.args.Composite(base=ocp.args.JsonRestore())).base

    def restore_policy(self, step: int, abstract_policy: Any) -> Any | None:
        """The policy batch saved with the checkpoint of `step`, placed as `abstract_policy` says; None
        when that checkpoint holds none (an offline run's, or one written before policy batches were)."""
        if not os.path.isdir(os.path.join(self.directory, str(step), "policy")):
            return None
        restored = self.manager.restore(
            step, args=ocp.args.Composite(policy=ocp.args.StandardRestore(abstract_policy))
        )
        return restored.policy

    def close(self) -> None:
        """Waits for the writes under way; a failed one raises `WriteFailed` (after a first, nothing)."""
        try:
            if not self._failed:
                self.manager.wait_until_finished()
                self.manager.check_for_errors()
        except Exception as e:  # noqa: BLE001 - as in save
            self._write_failed(e)
        finally:
            if not self._failed:  # after a failure the manager is closed and the filter stays
                std_logging.getLogger("absl").removeFilter(self._quiet)
                self.manager.close()
                self._closed_loop.closed()


def abstract(tree: Any) -> Any:
    """Shapes, dtypes and shardings of `tree`, as a restore target."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
