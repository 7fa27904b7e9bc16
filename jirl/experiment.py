"""Loading an experiment file (`experiments/NAME.py` with `get_config(arg)`) outside the CLI."""

from __future__ import annotations

import importlib.util
import os

from ml_collections import ConfigDict


def load_config(path: str, *args: str) -> ConfigDict:
    """`get_config(*args)` of the experiment file at `path` (as `--config path:arg` does)."""
    if not os.path.isfile(path):
        raise ValueError(f"experiment file '{path}' does not exist.")
    spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(*args)
