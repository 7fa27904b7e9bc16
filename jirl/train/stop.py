"""Stopping cleanly: SIGTERM or SIGINT ask the loop to save at the next step boundary and stop."""

from __future__ import annotations

import signal


class StopRequest:
    """Set by SIGTERM or SIGINT while installed; `restore` puts the previous handlers back.

    The loop checks `requested` after each step, saves a checkpoint and returns (exit status 0).
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.requested = False
        self._previous = {}
        try:
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread: signals stay as they were
            self._previous = {}

    def _handle(self, signum, frame):
        del frame
        self.requested = True
        print(f"\njirl: {signal.Signals(signum).name} received; saving a checkpoint after this step")

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
