"""Decoder-only transformers (Flax NNX) and named presets.

model = jirl.models.create(jirl.models.get_config("tiny"), seed=0)
logits_BTV = model(tokens_BT)
graphdef, params = jirl.models.split(model)        # params: a plain pytree of arrays
logits_BTV = jirl.models.apply(graphdef, params, tokens_BT)
"""

from __future__ import annotations

from typing import Any

import jax
from flax import nnx

from jirl.models.config import PRESETS, ModelConfig, get_config
from jirl.models.transformer import Transformer, init_cache


def create(cfg: ModelConfig, seed: int = 0) -> Transformer:
    return Transformer(cfg, rngs=nnx.Rngs(params=seed))


def split(model: nnx.Module) -> tuple[nnx.GraphDef, dict[str, Any]]:
    """(graphdef, params) with params a plain nested dict of arrays (what optax and orbax see)."""
    graphdef, state = nnx.split(model)
    return graphdef, nnx.to_pure_dict(state)


def logical_axes(model: nnx.Module) -> dict[str, Any]:
    """The params tree with each leaf replaced by its logical axis names, e.g. ('layers', 'embed', 'mlp')."""
    specs = nnx.to_pure_dict(nnx.get_partition_spec(nnx.state(model)))
    return jax.tree.map(tuple, specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))


def apply(graphdef: nnx.GraphDef, params: dict[str, Any], tokens_BT: jax.Array, **kwargs: Any):
    """Pure forward pass: merge params into the module and call it."""
    return nnx.merge(graphdef, params)(tokens_BT, **kwargs)


__all__ = [
    "ModelConfig",
    "PRESETS",
    "Transformer",
    "apply",
    "create",
    "get_config",
    "init_cache",
    "logical_axes",
    "split",
]
