"""What the steps since the last log line add up to: throughput, truncated examples, online sampling."""

from __future__ import annotations

import time
from typing import Any, Mapping

import numpy as np


class LogWindow:
    """Sums over the steps of one logging window; `flush` turns them into a record and starts anew.

    tokens_per_sec counts every process's non-padding tokens (this process's share times the
    process count) over the window's wall time; evaluation restarts the clock (`restart_clock`) so
    that it is not counted as training time.
    """

    def __init__(self, process_count: int = 1):
        self.process_count = process_count
        self._reset()

    def _reset(self) -> None:
        self.examples, self.truncated = 0.0, 0.0
        self.sampling: dict[str, float] = {}
        self.restart_clock()

    def restart_clock(self) -> None:
        self.start, self.tokens = time.perf_counter(), 0.0

    def add_data(self, stats: Mapping[str, float]) -> None:
        """The pipeline's counts of one batch (`jirl.data.pop_stats`): examples, truncated."""
        self.examples += stats["examples"]
        self.truncated += stats["truncated"]

    def add_sampling(self, stats: Mapping[str, float]) -> None:
        for key, value in stats.items():
            self.sampling[key] = self.sampling.get(key, 0.0) + value

    def add_tokens(self, batch: Mapping[str, np.ndarray]) -> None:
        """This process's tokens of one batch: non-padding positions, or every position unpacked."""
        local = np.sum(batch["segment_ids"] > 0) if "segment_ids" in batch else batch["inputs"].size
        self.tokens += float(local) * self.process_count

    def flush(self, metrics: Mapping[str, Any]) -> dict[str, Any]:
        """The step's metrics with the window's rates and sums, then an empty window."""
        record = dict(
            metrics,
            tokens_per_sec=self.tokens / (time.perf_counter() - self.start),
            truncated_examples=self.truncated,
            truncated_fraction=self.truncated / max(self.examples, 1.0),
        )
        if self.sampling:  # sums over the window, and the rate over its samplings
            self.sampling["sample_tokens_per_sec"] = self.sampling["sample_tokens"] / max(
                self.sampling["sample_seconds"], 1e-9
            )
            record.update(self.sampling)
        self._reset()
        return record
