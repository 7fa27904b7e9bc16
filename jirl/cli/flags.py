"""Flag parsing for the commands: an experiment file with `--config.KEY=VALUE` overrides, and plain flags.

Every parse error becomes a `UsageError` (a ConfigError): one line naming the flag and what it accepts.
"""

from __future__ import annotations

import re
from typing import Callable

from absl import flags
from ml_collections import config_flags

from jirl.errors import ConfigError

USAGE = "usage: jirl train --config experiments/FILE.py[:ARG] --workdir DIR [--config.KEY=VALUE ...]"


class UsageError(ConfigError):
    """A command line the commands cannot run: a missing or malformed flag."""


def parse_config_flags(argv: list[str], extra: Callable[[flags.FlagValues], None] | None = None):
    """--config FILE[:ARG] (overrides locked to the file's keys), --workdir, --progress, and `extra`'s flags.

    Without `extra` (jirl train) --workdir is required.
    """
    flag_values = flags.FlagValues()
    if extra is not None:
        extra(flag_values)
    config_flags.DEFINE_config_file(
        "config",
        None,
        "Experiment config file[:arg].",
        flag_values=flag_values,
        lock_config=True,
        sys_argv=["jirl"] + argv,
    )
    flags.DEFINE_string("workdir", None, "Output directory.", flag_values=flag_values)
    flags.DEFINE_bool("progress", True, "Show a progress bar.", flag_values=flag_values)
    try:
        parse_flags(flag_values, argv)
    except (KeyError, AttributeError) as e:  # an override of a key the experiment file does not have
        raise UsageError(_unknown_override(e, argv)) from None
    except TypeError as e:  # raised by config overrides
        raise UsageError(f"bad config override: {one_line(e)}") from None
    if flag_values.config is None:
        raise UsageError(f"--config is required; {USAGE}")
    if extra is None and not flag_values.workdir:
        raise UsageError(f"--workdir is required; {USAGE}")
    return flag_values


def _unknown_override(error: Exception, argv: list[str]) -> str:
    key = (re.findall(r"\w+", str(error)) or ["?"])[0]
    names = [a.split("=")[0] for a in argv if a.split("=")[0].endswith(f".{key}")]
    name = names[0] if names else key
    from jirl.experiment import MOVED_KEYS  # lazily: parsing flags loads no jax

    moved = MOVED_KEYS.get(name.removeprefix("--config."))
    if moved:
        return f"bad config override {name}: that key has moved to --config.{moved}; set it there."
    return (
        f"bad config override {name}: the experiment file defines no such key, "
        "and overrides can only set keys it defines."
    )


def parse_flags(flag_values: flags.FlagValues, argv: list[str]) -> flags.FlagValues:
    try:
        flag_values(["jirl"] + argv)
    except flags.Error as e:
        raise UsageError(flag_error(e)) from None
    return flag_values


def flag_error(error: flags.Error) -> str:
    """A flag's parse error as one line; a value of the wrong type says which type the key takes."""
    text = one_line(error)
    wrong_type = re.match(r"flag (--\S+?)=(.*?): (invalid literal for int|could not convert string)", text)
    if wrong_type:
        kind = "an integer" if "int" in wrong_type[3] else "a number"
        return f"bad value {wrong_type[2]!r} for {wrong_type[1]}: that key takes {kind}."
    return text


def one_line(error: BaseException) -> str:
    """The error as one line; an error raised inside a config file keeps only its last line."""
    text = str(error)
    if "Traceback (most recent call last)" in text:
        text = text.strip().splitlines()[-1].split(": ", 1)[-1]
    return " ".join(text.split())
