"""Checkpoint folders in and out, for any family: the family's table says which HF tensor is which
jirl tensor; layouts.py converts each; this module stacks the layers and places the result.

Layers are stacked: the jirl tensor of layer i of group g is params[g][name][i], g one of
"layers" (decoders), "encoder" / "decoder" (T5).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors.numpy import save_file

from jirl import models
from jirl.errors import ConfigError
from jirl.models.config import ModelConfig
from jirl.models.hf import families
from jirl.models.hf.family import Family
from jirl.models.hf.layouts import from_jirl, hf_shape, to_jirl
from jirl.models.hf.safetensors_io import Tensors, read_config, shard_files

_GROUPS = ("layers", "encoder", "decoder")
# Buffers some checkpoints carry that hold no parameters.
_BUFFERS = ("rotary_emb.inv_freq", ".attn.bias", ".attn.masked_bias")


def _rows(cfg: ModelConfig, family: Family, shapes: dict[str, Any]) -> Iterator[tuple[Any, ...]]:
    """(HF name, jirl names, layout, layer group or None, layer index or None) for every tensor of `cfg`."""
    for hf_name, ours, layout, *group in family.table:
        names = (ours,) if isinstance(ours, str) else ours
        group = (group[0] if group else "layers") if "{i}" in hf_name else None
        have = shapes[group] if group else shapes
        if not all(name in have for name in names) or not family.keeps_row(hf_name, cfg):
            continue
        count = cfg.encoder_layers if group == "encoder" else cfg.num_layers
        for i in range(count) if group else [None]:
            yield hf_name.format(i=i), names, layout, group, i


def _abstract_params(cfg: ModelConfig) -> dict[str, Any]:
    """The params tree of `cfg` as shapes and dtypes (nothing allocated)."""
    return nnx.to_pure_dict(nnx.state(nnx.eval_shape(lambda: models.model_class(cfg)(cfg, rngs=nnx.Rngs(0)))))


def _resolve(name: str, available: dict[str, Any], family: Family) -> str | None:
    """`name`, or `name` without its first component (a base model saved without its head), or the
    first of the family's aliases of `name` that the checkpoint has."""
    candidates = (name, name.split(".", 1)[1], *family.aliases(name))
    return next((n for n in candidates if n in available), None)


def _ignorable(name: str, cfg: ModelConfig, family: Family) -> bool:
    """A tensor that holds no parameter of `cfg`: a buffer, a tied head, a copy the family names, a
    tensor of another part of the checkpoint (`family.foreign`)."""
    return (
        name.endswith(_BUFFERS)
        or (cfg.tie_embeddings and name.endswith("lm_head.weight"))
        or name in family.copies
        or name.startswith(family.foreign)
    )


def load_params(
    path: str | Path, config: ModelConfig | None = None, shardings: Any = None
) -> tuple[ModelConfig, dict[str, Any]]:
    """(config, params) of the checkpoint folder at `path`; params is the tree of `jirl.models.split`.

    `config` (default: `config_from_hf` of its config.json) may change compute options such as dtype.
    `shardings` (a tree like params, e.g. a run's NamedShardings) places each tensor straight onto
    its devices once read, freeing each host buffer as it goes: besides what the devices hold, the
    host never has more than one copy of the checkpoint (the safetensors are memory-mapped).
    """
    folder = Path(path)
    hf = read_config(folder)
    cfg = config or families.config_from_hf(hf)
    family = families.get(hf.get("model_type"))
    shapes = _abstract_params(cfg)
    with ExitStack() as stack:
        tensors = Tensors(shard_files(folder), stack)
        used = set()
        buffers: dict[tuple[str | None, str], np.ndarray] = {}  # (layer group, name) -> float32 array
        for hf_name, names, layout, group, i in _rows(cfg, family, shapes):
            name = _resolve(hf_name, tensors.where, family)
            if name is None:
                raise ConfigError(f"checkpoint {str(folder)!r} has no tensor {hf_name!r}.")
            used.add(name)
            _fill(tensors.get(name), name, names, layout, group, i, cfg, shapes, buffers)
        unused = [n for n in tensors.where if n not in used and not _ignorable(n, cfg, family)]
        if unused:
            raise ConfigError(
                f"checkpoint tensors {sorted(unused)[:5]} have no place in a jirl "
                f"'{family.model_type}' model."
            )

    def place(group: str | None, name: str):  # pops the host buffer: it is freed once on the devices
        value = buffers.pop((group, name))
        if shardings is None:
            return jnp.asarray(value)
        return jax.device_put(value, shardings[group][name] if group else shardings[name])

    params = {name: place(None, name) for name in shapes if name not in _GROUPS}
    for group in _GROUPS:
        if group in shapes:
            params[group] = {name: place(group, name) for name in shapes[group]}
    return cfg, params


def _fill(tensor, hf_name, names, layout, group_key, layer, cfg, shapes, buffers) -> None:
    """Checks one HF tensor's shape and writes it into the (stacked) numpy buffers of `names`."""
    group = shapes[group_key] if layer is not None else shapes
    per_layer = [tuple(group[n].shape[1:] if layer is not None else group[n].shape) for n in names]
    hf_parts = [hf_shape(n, s, layout) for n, s in zip(names, per_layer)]
    expected = hf_parts[0] if len(names) == 1 else (*hf_parts[0][:-1], sum(p[-1] for p in hf_parts))
    if tuple(tensor.shape) != tuple(expected):
        raise ConfigError(f"tensor {hf_name!r} has shape {tuple(tensor.shape)}, expected {tuple(expected)}.")
    for name, value in zip(names, to_jirl(tensor, names, per_layer, layout, cfg)):
        if layer is None:
            buffers[None, name] = value.astype(np.float32)
        else:
            stacked = buffers.setdefault((group_key, name), np.empty(group[name].shape, np.float32))
            stacked[layer] = value


def load(path: str | Path, **overrides: Any) -> nnx.Module:
    """A ready-to-call jirl model from a checkpoint folder: `logits_BTV = model(tokens_BT)`, or for T5
    `logits_BTV = model(encoder_tokens_BS, decoder_tokens_BT)`.

    `overrides` are ModelConfig fields applied to the checkpoint's configuration (e.g. dtype='bfloat16').
    """
    cfg = families.config_from_hf(read_config(path), **overrides)
    cfg, params = load_params(path, cfg)
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: models.model_class(cfg)(cfg, rngs=nnx.Rngs(0))))
    return nnx.merge(graphdef, params)


def save(
    params: dict[str, Any], config: ModelConfig, path: str | Path, model_type: str | None = None
) -> None:
    """Writes `path`/config.json and `path`/model.safetensors (float32) that transformers loads.

    `model_type` defaults to `family_of(config)`.
    """
    hf = families.config_to_hf(config, model_type)
    family = families.get(hf["model_type"])
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, np.ndarray] = {}
    for hf_name, names, layout, group_key, i in _rows(config, family, _abstract_params(config)):
        group = params[group_key] if i is not None else params
        arrays = [np.asarray(group[n][i] if i is not None else group[n], np.float32) for n in names]
        tensors[hf_name] = from_jirl(arrays, names, layout)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(hf, indent=2, sort_keys=True) + "\n")
