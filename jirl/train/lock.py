"""One run per workdir: a lock file naming the run that holds it.

WORKDIR/run.lock holds {"host", "pid", "started"} of the holder, written whole before it appears
(a temporary file hard-linked into place; on a file system without hard links, created exclusively
and then written), so that a second run never reads half of one. A second
run on the workdir stops at once (`WorkdirBusy`, exit 2) naming the holder; a lock whose process no
longer exists on this host is taken over with a warning. `jirl eval` and `jirl export` only read
and take no lock. On several hosts, process 0 takes it and every process learns the outcome.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from jirl.errors import WorkdirBusy, WriteFailed

LOCK_NAME = "run.lock"


def _alive(pid: int) -> bool:
    """Whether process `pid` runs on this host (not this process: a restarted container may reuse
    its holder's pid)."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class WorkdirLock:
    """`with WorkdirLock(workdir):` holds the workdir for the block (see the module docstring)."""

    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, LOCK_NAME)
        self.record = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        }
        self.held = False

    def __enter__(self) -> WorkdirLock:
        holder = None
        if jax.process_index() == 0:
            try:
                holder = self._acquire()
            except OSError as e:  # the workdir cannot be written: say where and why
                raise WriteFailed(f"taking the lock {self.path} failed: {e.strerror or e}.") from e
        if jax.process_count() > 1:  # every process stops if process 0 could not take it
            taken = multihost_utils.broadcast_one_to_all(np.int32(holder is None))
            if not int(taken) and holder is None:
                holder = {"host": "?", "pid": "?", "started": "?"}
        if holder is not None:
            raise WorkdirBusy(
                f"{os.path.dirname(self.path)} is in use by the run of process {holder.get('pid')} on "
                f"{holder.get('host')}, started {holder.get('started')}; wait for it to end, stop it, "
                f"or train in another --workdir (if that run is gone, delete its lock {self.path})."
            )
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.held and self._read() == self.record:
            os.remove(self.path)
        self.held = False

    def _acquire(self) -> dict[str, Any] | None:
        """None once this run holds the lock; else the record of the live run that does."""
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        for _ in range(2):
            if self._link():
                self.held = True
                return None
            holder = self._read()
            if holder is None:  # removed between the two calls: try again
                continue
            if not self._stale(holder):
                return holder
            print(
                f"jirl: warning: taking over {self.path} from process {holder.get('pid')} "
                f"(started {holder.get('started')}), which no longer runs on this host"
            )
            if self._read() == holder:  # not taken over by another run meanwhile
                try:
                    os.remove(self.path)
                except FileNotFoundError:
                    pass
        return self._read() or {"host": "?", "pid": "?", "started": "?"}

    def _stale(self, holder: dict[str, Any]) -> bool:
        try:
            pid = int(holder.get("pid"))
        except (TypeError, ValueError):
            return False
        return holder.get("host") == self.record["host"] and not _alive(pid)

    def _link(self) -> bool:
        """Writes the record whole, then links it into place; False when a lock exists."""
        temporary = f"{self.path}.{self.record['pid']}.tmp"
        with open(temporary, "w") as f:
            json.dump(self.record, f)
        try:
            os.link(temporary, self.path)
            return True
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links: create it exclusively instead
            return self._create()
        finally:
            os.remove(temporary)

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump(self.record, f)
        return True

    def _read(self) -> dict[str, Any] | None:
        """The holder's record; None when there is no lock. A lock that is not a record reads as
        held by an unknown run (its message says to delete the lock if no run uses the workdir)."""
        try:
            with open(self.path, "rb") as f:
                record = json.loads(f.read().decode("utf-8"))
        except FileNotFoundError:
            return None
        except (ValueError, UnicodeDecodeError):
            return {"host": "an unknown host", "pid": "?", "started": "at an unknown time"}
        return record if isinstance(record, dict) else {"host": "?", "pid": "?", "started": "?"}
