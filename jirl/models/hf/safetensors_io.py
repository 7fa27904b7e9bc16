"""The files of a Hugging Face checkpoint folder: config.json, and the tensors of its safetensors
shards read one at a time as float32 (memory-mapped; no torch).

A safetensors file is an 8-byte little-endian header length n, an n-byte JSON header
{name: {dtype, shape, data_offsets: [start, end]}}, then the raw bytes, row-major.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open

from jirl.errors import ConfigError


def read_config(path: str | Path) -> dict[str, Any]:
    """The config.json dict of a Hugging Face checkpoint folder."""
    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise ConfigError(f"{str(folder)!r} is not a Hugging Face checkpoint folder: it has no config.json.")
    return json.loads((folder / "config.json").read_text())


def shard_files(folder: Path) -> list[Path]:
    """The safetensors files of `folder`: those its model.safetensors.index.json names, else all."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return [folder / name for name in sorted(set(weight_map.values()))]
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ConfigError(f"{str(folder)!r} has no *.safetensors file (other weight formats are not read).")
    return files


class Tensors:
    """Name -> numpy float32 tensor over the safetensors files of a folder, read one at a time.

    `where` maps every tensor name to its (file, open handle); the handles close with `stack`.
    """

    def __init__(self, files: list[Path], stack: ExitStack):
        self.where: dict[str, tuple[Path, Any]] = {}
        for file in files:
            handle = stack.enter_context(safe_open(str(file), framework="numpy"))
            self.where.update({name: (file, handle) for name in handle.keys()})

    def get(self, name: str) -> np.ndarray:
        file, handle = self.where[name]
        if handle.get_slice(name).get_dtype() == "BF16":
            return read_bfloat16(file, name)
        return handle.get_tensor(name).astype(np.float32)


def read_bfloat16(file: Path, name: str) -> np.ndarray:
    """A bfloat16 tensor as float32 (numpy has no bfloat16): its bits are the top half of a float32's."""
    with open(file, "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        entry = json.loads(f.read(header_len))[name]
    start, end = entry["data_offsets"]
    raw = np.memmap(file, np.uint16, "r", offset=8 + header_len + start, shape=((end - start) // 2,))
    return (raw.astype(np.uint32) << 16).view(np.float32).reshape(entry["shape"])
