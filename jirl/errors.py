"""The one error type for input a user can fix: a config key or value, a dataset field, a flag.

The CLI prints a `ConfigError` as one line and exits 2; any other exception is a bug and keeps its
traceback. It subclasses ValueError, so `except ValueError` and `pytest.raises(ValueError)` still hold.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """Input the user can fix; the message names what is wrong and what is accepted, in one sentence."""
