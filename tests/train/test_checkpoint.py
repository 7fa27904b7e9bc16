"""The Checkpointer's handling of tensorstore's callbacks into a closed asyncio loop: held while it is
unknown whether a write failed, dropped after a failure, passed on otherwise."""

import asyncio
import shutil
import sys
import types

import jax
import numpy as np
import pytest

from jirl.train import checkpoint
from jirl.train.checkpoint import Checkpointer


def _unraisable(error):
    return types.SimpleNamespace(
        exc_type=type(error), exc_value=error, exc_traceback=error.__traceback__, err_msg=None, object=None
    )


def _closed_loop_error():
    """The error tensorstore's callback meets when orbax has closed the loop it would wake."""
    loop = asyncio.new_event_loop()
    loop.close()
    try:
        loop.call_soon_threadsafe(print)
    except RuntimeError as error:
        return _unraisable(error)
    raise AssertionError("a closed loop accepted a callback")


def _other_error():
    try:
        raise RuntimeError("something else")
    except RuntimeError as error:
        return _unraisable(error)


def test_the_closed_loop_error_is_recognised_and_nothing_else():
    assert checkpoint._is_closed_loop_callback(_closed_loop_error())
    assert not checkpoint._is_closed_loop_callback(_other_error())


def test_without_a_failure_closed_loop_errors_are_held_then_passed_on_at_close(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    checkpointer = Checkpointer(str(tmp_path), keep=1)
    closed, other = _closed_loop_error(), _other_error()
    sys.unraisablehook(closed)
    sys.unraisablehook(other)
    assert seen == [other]  # the other error at once, the closed-loop one held
    checkpointer.close()
    assert seen == [other, closed]
    later = _other_error()
    sys.unraisablehook(later)  # the hook stays, forwarding
    assert seen == [other, closed, later]


def test_checkpointers_closing_in_any_order_share_one_hook(tmp_path, monkeypatch):
    """A opens, B opens, A closes, B closes: one hook for the process; what was held while either
    was open is passed on when the last one closes, and nothing is held after."""
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    a = Checkpointer(str(tmp_path / "a"), keep=1)
    hook = sys.unraisablehook
    b = Checkpointer(str(tmp_path / "b"), keep=1)
    assert sys.unraisablehook is hook
    first = _closed_loop_error()
    sys.unraisablehook(first)
    a.close()
    assert seen == []  # B is still open: held
    b.close()
    assert seen == [first]
    second = _closed_loop_error()
    sys.unraisablehook(second)  # none open: held until the next close, or dropped after a failure
    Checkpointer(str(tmp_path / "c"), keep=1).close()
    assert seen == [first, second]
    assert hook.held == []


def test_after_a_failed_write_closed_loop_errors_are_dropped(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    checkpointer = Checkpointer(str(tmp_path), keep=1)
    sys.unraisablehook(_closed_loop_error())  # before the failure is known
    with pytest.raises(checkpoint.WriteFailed, match="No space left on device"):
        checkpointer._write_failed(OSError(28, "No space left on device", str(tmp_path)))
    sys.unraisablehook(_closed_loop_error())  # after
    other = _other_error()
    sys.unraisablehook(other)
    assert seen == [other]


def test_after_an_unreadable_checkpoint_closed_loop_errors_are_dropped(tmp_path, monkeypatch):
    """A restore that fails (here: a checkpoint whose files are gone) also leaves tensorstore's reads
    behind; the Checkpointer falls back to the checkpoint before, so those errors are dropped."""
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    state = {"w": np.arange(4.0, dtype=np.float32)}
    writer = Checkpointer(str(tmp_path), keep=2)
    writer.save(1, state, {}, "{}")
    writer.save(2, state, {}, "{}")
    writer.close()
    shutil.rmtree(tmp_path / "checkpoints" / "2" / "state")
    reader = Checkpointer(str(tmp_path), keep=2, read_only=True)
    step, restored, _ = reader.restore_latest(checkpoint.abstract(jax.device_put(state)))
    assert step == 1 and np.array_equal(restored["w"], state["w"])
    sys.unraisablehook(_closed_loop_error())
    reader.close()
    assert seen == []
