"""Metrics to `WORKDIR/metrics.jsonl` (one JSON object per logged step) and TensorBoard events.

A write that fails (no space, no permission) raises `WriteFailed`: one line naming the file and the
cause; the checkpoints are not touched by it.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any, Mapping

import numpy as np

from jirl.errors import WriteFailed


def write_failed(error: OSError, path: str) -> WriteFailed:
    return WriteFailed(
        f"writing {error.filename or path} failed: {error.strerror or error}; the checkpoints are as "
        "they were: free space or fix permissions, then run the same command again to resume from "
        "the newest."
    )


def write_text(path: str, text: str) -> None:
    """Writes a whole file; a failure is `WriteFailed`."""
    try:
        with open(path, "w") as f:
            f.write(text)
    except OSError as e:
        raise write_failed(e, path) from e


class MetricsWriter:
    """Appends `{"step": ..., **scalars}` lines to metrics.jsonl and writes the same to TensorBoard."""

    def __init__(self, workdir: str, tensorboard: bool = True, start_step: int = 0):
        """`start_step`: the first step this run logs; records of it or later, left by an earlier
        (interrupted) run in `workdir`, are dropped so that the file holds one record per step."""
        os.makedirs(workdir, exist_ok=True)
        self.path = os.path.join(workdir, "metrics.jsonl")
        if os.path.exists(self.path):
            kept = [r for r in read_metrics(workdir) if r["step"] < start_step]
            write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self._tb = None
        if tensorboard:
            SummaryWriter = _summary_writer_class()
            # A skipped step logs a NaN loss on purpose (jirl.optimizer); no warning per value.
            logging.getLogger("tensorboardX.x2num").setLevel(logging.ERROR)
            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, scalars: Mapping[str, Any]) -> dict[str, float]:
        record = {"step": int(step), **{k: float(np.asarray(v)) for k, v in sorted(scalars.items())}}
        try:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as e:
            raise write_failed(e, self.path) from e
        if self._tb is not None:
            for key, value in record.items():
                if key != "step":
                    self._tb.add_scalar(key, value, global_step=int(step))
        return record

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _summary_writer_class():
    """tensorboardX's `SummaryWriter`, imported lazily (optional at analysis time) and without torch.

    tensorboardX imports torch whenever it is installed (about 3 s at every start), only to accept
    torch tensors; jirl writes floats. Unless the program has imported torch already, the import is
    made with torch hidden, and torch stays importable afterwards.
    """
    if "tensorboardX" in sys.modules or "torch" in sys.modules:
        from tensorboardX import SummaryWriter

        return SummaryWriter
    sys.modules["torch"] = None  # makes `import torch` raise ImportError, which tensorboardX allows
    try:
        from tensorboardX import SummaryWriter
    finally:
        del sys.modules["torch"]
    return SummaryWriter


def read_metrics(workdir: str) -> list[dict[str, float]]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


class NullWriter:
    """What processes other than 0 write: nothing (one copy of the metrics per run)."""

    def write(self, step: int, scalars: Mapping[str, Any]) -> dict[str, float]:
        return {"step": int(step), **{k: float(np.asarray(v)) for k, v in scalars.items()}}

    def close(self) -> None:
        pass
