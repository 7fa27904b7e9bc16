"""One tensor between Hugging Face's layout and jirl's (per layer; the stacking is checkpoint.py's).

Layouts of the HF tensor:
- "linear": torch's [out, in]; jirl's is [in, out...], e.g. wq [D, H, Dh] <- q_proj.weight [H*Dh, D],
  and wo / wco [H, Dh, D] <- o.weight [D, H*Dh] (two fan-in axes);
- "conv1d": GPT-2's [in, out], not transposed; with several jirl names (wq, wk, wv) the out columns
  are split [H*Dh | Hkv*Dh | Hkv*Dh] and concatenated back on export;
- "vector": flattened (biases [H*Dh] <-> [H, Dh], norms [D]);
- "table": [rows, D], as in jirl (embeddings, relative position biases).
"""

from __future__ import annotations

import math

import numpy as np

from jirl.models.config import ModelConfig


def hf_shape(name: str, shape: tuple[int, ...], layout: str) -> tuple[int, ...]:
    """The Hugging Face shape of one jirl tensor `name` (per layer) of `shape` under `layout`."""
    if layout in ("vector", "table"):
        return (math.prod(shape),) if layout == "vector" else shape
    fan_in = 2 if name in ("wo", "wco") else 1  # wo is [heads, head_dim, D]
    two_d = (math.prod(shape[:fan_in]), math.prod(shape[fan_in:]))
    return two_d[::-1] if layout == "linear" else two_d


def _split_sizes(cfg: ModelConfig, names: tuple[str, ...]) -> list[int]:
    return [(cfg.num_heads if name.endswith("q") else cfg.num_kv_heads) * cfg.head_dim for name in names]


def to_jirl(
    hf_BC: np.ndarray, names: tuple[str, ...], shapes: list[tuple[int, ...]], layout: str, cfg: ModelConfig
) -> list[np.ndarray]:
    """One Hugging Face tensor -> the jirl tensor(s) `names` of per-layer `shapes`."""
    if layout == "linear":
        hf_BC = hf_BC.T
    if len(names) == 1:
        return [hf_BC.reshape(shapes[0])]
    parts = np.split(hf_BC, np.cumsum(_split_sizes(cfg, names))[:-1], axis=-1)
    return [part.reshape(shape) for part, shape in zip(parts, shapes)]


def from_jirl(arrays: list[np.ndarray], names: tuple[str, ...], layout: str) -> np.ndarray:
    """The jirl tensor(s) `names` (per layer) -> one float32 Hugging Face tensor."""
    flat = [_flatten(a, n, layout) for a, n in zip(arrays, names)]
    out = flat[0] if len(flat) == 1 else np.concatenate(flat, axis=-1)
    return np.ascontiguousarray(out.T if layout == "linear" else out, dtype=np.float32)


def _flatten(a: np.ndarray, name: str, layout: str) -> np.ndarray:
    if layout == "vector":
        return a.reshape(-1)
    if layout == "table":
        return a
    return a.reshape(hf_shape(name, a.shape, "conv1d"))
