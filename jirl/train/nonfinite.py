"""Watching for skipped steps: the optimizer skips a step that would leave anything non-finite
(`jirl.optimizer`), and the loop stops the run after `train.max_nonfinite_steps` in a row."""

from __future__ import annotations

from typing import Any, Mapping

import jax


class NonFiniteWatch:
    """Reads each step's `nonfinite_streak` one step late, so that the host never waits on the step
    it has just dispatched; `settle` reads the newest one at once (before a checkpoint is saved).

    `streak` is the newest count read (0: that step's update was applied) and `step` its step. Once a
    read streak reaches the limit, `tripped` holds (step, streak) of that read for good.
    """

    def __init__(self, limit: int):
        self.limit = limit
        self.step, self.streak = 0, 0
        self.tripped: tuple[int, int] | None = None
        self._pending: tuple[int, Any] | None = None

    def dispatched(self, step: int, metrics: Mapping[str, Any]) -> None:
        """After step `step` was dispatched: read the step before's count, keep this one's for later."""
        self.settle()
        if "nonfinite_streak" in metrics:
            self._pending = (step, metrics["nonfinite_streak"])

    def settle(self) -> None:
        if self._pending is not None:
            step, streak = self._pending
            self._pending = None
            self.step, self.streak = step, int(jax.device_get(streak))
            if self.tripped is None and self.streak >= self.limit:
                self.tripped = (self.step, self.streak)

    @property
    def limit_reached(self) -> bool:
        return self.tripped is not None
