"""Metrics to `WORKDIR/metrics.jsonl` (one JSON object per logged step) and TensorBoard events."""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import numpy as np


class MetricsWriter:
    """Appends `{"step": ..., **scalars}` lines to metrics.jsonl and writes the same to TensorBoard."""

    def __init__(self, workdir: str, tensorboard: bool = True, start_step: int = 0):
        """`start_step`: the first step this run logs; records of it or later, left by an earlier
        (interrupted) run in `workdir`, are dropped so that the file holds one record per step."""
        os.makedirs(workdir, exist_ok=True)
        self.path = os.path.join(workdir, "metrics.jsonl")
        if os.path.exists(self.path):
            kept = [r for r in read_metrics(workdir) if r["step"] < start_step]
            with open(self.path, "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in kept)
        self._tb = None
        if tensorboard:
            from tensorboardX import SummaryWriter  # imported lazily: optional at analysis time

            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, scalars: Mapping[str, Any]) -> dict[str, float]:
        record = {"step": int(step), **{k: float(np.asarray(v)) for k, v in sorted(scalars.items())}}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for key, value in record.items():
                if key != "step":
                    self._tb.add_scalar(key, value, global_step=int(step))
        return record

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics(workdir: str) -> list[dict[str, float]]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


class NullWriter:
    """What processes other than 0 write: nothing (one copy of the metrics per run)."""

    def write(self, step: int, scalars: Mapping[str, Any]) -> dict[str, float]:
        return {"step": int(step), **{k: float(np.asarray(v)) for k, v in scalars.items()}}

    def close(self) -> None:
        pass
