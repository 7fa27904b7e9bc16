"""`jirl train --config experiments/arith.py:iqlearn --workdir DIR [--config.KEY=VALUE ...]`.

Bad input (an unknown config key, objective, preset or task, a malformed batch) is reported as
one line on stderr and exit status 2, never a traceback (set JIRL_TRACEBACK=1 to see one).
"""

from __future__ import annotations

import os
import sys

from absl import flags
from ml_collections import config_flags

USAGE = "usage: jirl train --config experiments/FILE.py[:ARG] --workdir DIR [--config.KEY=VALUE ...]"


class UsageError(ValueError):
    pass


def _fail(message: str) -> int:
    print(f"jirl: error: {message}", file=sys.stderr)
    return 2


def _parse_train_flags(argv: list[str]):
    flag_values = flags.FlagValues()
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
        flag_values(["jirl"] + argv)
    except flags.Error as e:
        raise UsageError(_one_line(e)) from None
    except (KeyError, AttributeError, TypeError) as e:  # raised by config overrides
        raise UsageError(f"bad config override: {_one_line(e)}") from None
    if flag_values.config is None:
        raise UsageError(f"--config is required; {USAGE}")
    if not flag_values.workdir:
        raise UsageError(f"--workdir is required; {USAGE}")
    return flag_values


def _one_line(error: BaseException) -> str:
    """The error as one line; an error raised inside a config file keeps only its last line."""
    text = str(error)
    if "Traceback (most recent call last)" in text:
        text = text.strip().splitlines()[-1].split(": ", 1)[-1]
    return " ".join(text.split())


def _train(args: list[str]) -> int:
    flag_values = _parse_train_flags(args)
    from jirl.train import train  # after flag parsing: bad flags fail fast, before jax loads

    summary = train(flag_values.config, flag_values.workdir, progress=flag_values.progress)
    if "stopped_at" in summary:  # SIGTERM/SIGINT: saved, and the same command resumes
        return 0
    print(
        f"validation answer accuracy: {summary['answer_accuracy']:.1%} "
        f"({summary['answer_examples']} problems, greedy decoding)"
    )
    print(
        f"outputs in {summary['workdir']}: metrics.jsonl, tensorboard/, curves.png, samples.jsonl, "
        "summary.json"
    )
    return 0


COMMANDS = {"train": _train}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        got = f"'{argv[0]}'" if argv else "no command"
        return _fail(f"unknown command {got}; accepted: {list(COMMANDS)}. {USAGE}")
    try:
        return COMMANDS[argv[0]](argv[1:])
    except (UsageError, ValueError) as e:
        if os.environ.get("JIRL_TRACEBACK"):  # developers: the full traceback instead of one line
            raise
        return _fail(_one_line(e))
    except KeyboardInterrupt:  # outside the training steps, where SIGINT saves and stops cleanly
        print("jirl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
