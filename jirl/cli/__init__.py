"""The `jirl` command line.

`jirl train --config experiments/arith.py:iqlearn --workdir DIR [--config.KEY=VALUE ...]`;
`jirl prepare --task NAME --source PATH [--task_config C] [--data_dir DIR] [--vocab_size N]`;
`jirl plan --config experiments/FILE.py[:ARG] (--topology v5e:4x4 | --devices N) [--config.KEY=VALUE ...]`;
`jirl eval --workdir DIR [--split S] [--samples K] [--temperature T,...] [--rerank N]`;
`jirl export --workdir DIR --out PATH [--model_type llama|qwen2|qwen3|gemma|gemma2|gemma3_text|gpt2|t5]`.

Input a user can fix (an unknown config key, objective, preset or task, a malformed batch: a
`jirl.errors.ConfigError`) is reported as one line on stderr with exit status 2, and so is a run
stopped by what it met (`jirl.errors.RunError`: a workdir another run holds 2, non-finite gradients
that persist 3, a failed write 4); JIRL_TRACEBACK=1 shows the traceback. Any other exception is a
bug and keeps its traceback.
"""

from __future__ import annotations

import os
import sys

from jirl import host_memory
from jirl.cli import commands
from jirl.cli.flags import USAGE, one_line
from jirl.errors import ConfigError, RunError

COMMANDS = {
    "train": commands.train,
    "prepare": commands.prepare,
    "plan": commands.plan,
    "eval": commands.evaluate,
    "export": commands.export,
}


def _fail(message: str) -> int:
    print(f"jirl: error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        got = f"'{argv[0]}'" if argv else "no command"
        return _fail(f"unknown command {got}; accepted: {list(COMMANDS)}. {USAGE}")
    host_memory.reuse_freed_memory_if_cpu()  # before JAX starts: XLA:CPU's step buffers are reused
    try:
        return COMMANDS[argv[0]](argv[1:])
    except (ConfigError, RunError) as e:
        if os.environ.get("JIRL_TRACEBACK"):  # developers: the full traceback instead of one line
            raise
        _fail(one_line(e))
        return e.exit_status if isinstance(e, RunError) else 2
    except KeyboardInterrupt:  # outside the training steps, where SIGINT saves and stops cleanly
        print("jirl: interrupted", file=sys.stderr)
        return 130


__all__ = ["COMMANDS", "main"]
