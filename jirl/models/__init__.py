"""Decoder-only transformers and a T5 encoder-decoder (Flax NNX), and named presets.

model = jirl.models.create(jirl.models.get_config("tiny"), seed=0)
logits_BTV = model(tokens_BT)                       # T5 presets: model(encoder_tokens_BS, tokens_BT)
graphdef, params = jirl.models.split(model)        # params: a plain pytree of arrays
logits_BTV = jirl.models.apply(graphdef, params, tokens_BT)
h_BTD, out = jirl.models.forward_hidden(graphdef, params, batch)  # logits = layers.project(h_BTD, out)
"""

from __future__ import annotations

from typing import Any

import jax
from flax import nnx

from jirl.models import layers, lora
from jirl.models.config import ModelConfig
from jirl.models.presets import PRESETS, get_config
from jirl.models.t5 import EncoderDecoder
from jirl.models.transformer import Transformer, init_cache


def model_class(cfg: ModelConfig) -> type[nnx.Module]:
    """EncoderDecoder when cfg.encoder_layers > 0, else the decoder-only Transformer."""
    return EncoderDecoder if cfg.is_encoder_decoder else Transformer


def create(cfg: ModelConfig, seed: int = 0) -> nnx.Module:
    return model_class(cfg)(cfg, rngs=nnx.Rngs(params=seed))


def split(model: nnx.Module) -> tuple[nnx.GraphDef, dict[str, Any]]:
    """(graphdef, params) with params a plain nested dict of arrays (what optax and orbax see)."""
    graphdef, state = nnx.split(model)
    return graphdef, nnx.to_pure_dict(state)


def logical_axes(model: nnx.Module) -> dict[str, Any]:
    """The params tree with each leaf replaced by its logical axis names, e.g. ('layers', 'embed', 'mlp')."""
    specs = nnx.to_pure_dict(nnx.get_partition_spec(nnx.state(model)))
    return jax.tree.map(tuple, specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))


def apply(graphdef: nnx.GraphDef, params: dict[str, Any], *tokens: jax.Array, **kwargs: Any):
    """Pure forward pass: merge params into the module and call it (T5: encoder tokens, then decoder's)."""
    return nnx.merge(graphdef, params)(*tokens, **kwargs)


def _batch_inputs(batch: Any) -> tuple[tuple[jax.Array, ...], dict[str, Any]]:
    """(token arrays, keyword arguments) of a batch dict (docs/architecture.md): decoder keys inputs/
    positions/segment_ids, and for an encoder-decoder also encoder_inputs/encoder_positions/
    encoder_segment_ids."""
    kwargs = dict(positions=batch.get("positions"), segment_ids=batch.get("segment_ids"))
    if "encoder_inputs" in batch:
        kwargs.update({k: batch.get(k) for k in ("encoder_positions", "encoder_segment_ids")})
        return (batch["encoder_inputs"], batch["inputs"]), kwargs
    return (batch["inputs"],), kwargs


def forward_batch(
    graphdef: nnx.GraphDef, params: dict[str, Any], batch: Any, adapters: layers.Adapters | None = None
) -> jax.Array:
    """logits_BTV of a batch dict (decoder-only or encoder-decoder); `adapters`: LoRA (decoders)."""
    tokens, kwargs = _batch_inputs(batch)
    if adapters is not None:
        kwargs["adapters"] = adapters
    return apply(graphdef, params, *tokens, **kwargs)


def forward_hidden(
    graphdef: nnx.GraphDef, params: dict[str, Any], batch: Any, adapters: layers.Adapters | None = None
) -> tuple[jax.Array, layers.OutputProjection]:
    """(h_BTD, the output layer) of a batch dict: logits_BTV = layers.project(h_BTD, output layer)."""
    model = nnx.merge(graphdef, params)
    tokens, kwargs = _batch_inputs(batch)
    if adapters is not None:
        kwargs["adapters"] = adapters
    return model.hidden(*tokens, **kwargs), model.output_projection()


__all__ = [
    "EncoderDecoder",
    "ModelConfig",
    "PRESETS",
    "Transformer",
    "apply",
    "create",
    "forward_batch",
    "forward_hidden",
    "get_config",
    "init_cache",
    "logical_axes",
    "lora",
    "model_class",
    "split",
]
