"""The errors a user acts on, as opposed to bugs: each is one line on the command line, no traceback.

- `ConfigError`: input the user can fix (a config key or value, a dataset field, a flag); exit 2.
- `RunError`: a run stopped by what it met rather than by its config, each with its exit status:
  `WorkdirBusy` (2: another run holds the workdir), `Diverged` (3: the gradients stayed non-finite),
  `WriteFailed` (4: a checkpoint or metrics write failed: no space, no permission).

Any other exception is a bug and keeps its traceback. `ConfigError` subclasses ValueError, so
`except ValueError` and `pytest.raises(ValueError)` still hold.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """Input the user can fix; the message names what is wrong and what is accepted, in one sentence."""


class RunError(Exception):
    """A run stopped by its surroundings or its numbers; the message says what is on disk and what to do."""

    exit_status = 1


class WorkdirBusy(RunError):
    """Another live run holds the workdir's lock."""

    exit_status = 2


class Diverged(RunError):
    """train.max_nonfinite_steps consecutive steps had non-finite gradients (each was skipped)."""

    exit_status = 3


class WriteFailed(RunError):
    """A checkpoint or metrics write failed; the newest complete checkpoint is left as it was."""

    exit_status = 4
