"""`python tests/cli/faults.py FAULT ARG -- JIRL ARGS...`: runs the `jirl` command with one fault injected.

FAULT:
- enospc N: the N-th JSON write of orbax's checkpoint writer raises OSError(ENOSPC), as a full
  disk does (two such writes per checkpoint: the data position and the config);
- hang N: the N-th such write touches the file named by $JIRL_FAULT_MARKER and never returns, so
  that a test can SIGKILL the process in the middle of a checkpoint write.
"""

import errno
import os
import pathlib
import sys
import time

from orbax.checkpoint._src.handlers import json_checkpoint_handler


def _inject(fault: str, nth: int) -> None:
    write = json_checkpoint_handler.JsonCheckpointHandler._save_fn
    calls = [0]

    async def faulty(self, x, directory):
        calls[0] += 1
        if calls[0] == nth:
            path = str(directory / self._filename)
            if fault == "enospc":
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
            pathlib.Path(os.environ["JIRL_FAULT_MARKER"]).touch()
            while True:
                time.sleep(60)
        return await write(self, x, directory)

    json_checkpoint_handler.JsonCheckpointHandler._save_fn = faulty


if __name__ == "__main__":
    fault, nth, separator, *args = sys.argv[1:]
    assert fault in ("enospc", "hang") and separator == "--", sys.argv
    _inject(fault, int(nth))
    from jirl.cli import main

    sys.exit(main(args))
