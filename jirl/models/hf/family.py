"""The record of one Hugging Face family, and the helpers its config readers share.

A family is everything that differs between Hugging Face model types: how config.json reads into
ModelConfig fields and back, and the table of tensors. The generic code (checkpoint.py, families.py)
asks the record and never names a family.

Table rows are (HF name, jirl name(s), layout) or (HF name, jirl name(s), layout, layer group):
- `{i}` in the HF name is the layer; the jirl names of a layer live in params[group] stacked as
  [L, ...], with group "layers" unless the row names another ("encoder" / "decoder" for T5);
- layouts (see layouts.py): "linear" is torch's [out, in] (jirl's [in, out...] transposed),
  "conv1d" is GPT-2's [in, out] (its columns split into the jirl names given), "vector" is
  flattened, "table" is [rows, D] as in jirl;
- a row whose jirl name the config does not have (a bias, a post-norm) is skipped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from jirl.errors import ConfigError
from jirl.models.config import ModelConfig

Row = tuple[Any, ...]  # (hf_name, str | tuple[str, ...], layout) + optionally (group,)


def _every_row(hf_name: str, cfg: ModelConfig) -> bool:
    return True


def _no_aliases(hf_name: str) -> tuple[str, ...]:
    return ()


@dataclasses.dataclass(frozen=True, eq=False)
class Family:
    """One Hugging Face model type as a configuration of jirl's models and a tensor table.

    read_config:  config.json dict -> ModelConfig fields; refuses options jirl lacks, by name.
    write_config: ModelConfig -> the family's config.json keys (model_type, architectures and
                  torch_dtype are added by the caller, which also checks the round trip).
    table:        the tensor rows (module docstring above).
    claims:       whether this family is the most direct expression of a config, asked from the
                  most specific family to the least (families.SPECIFICITY); the last claims all.
    keeps_row:    whether a table row applies to a config (T5: `wi` ungated, `wi_0`/`wi_1` gated).
    copies:       tensor names a checkpoint may carry again (a copy of a table held elsewhere);
                  skipped when reading.
    aliases:      a table name -> the other names its tensor may have in a checkpoint (a text model
                  inside a multimodal one), tried in order when the name itself is absent.
    foreign:      name prefixes of tensors that are no part of jirl's model (a vision tower), skipped
                  when reading.
    """

    model_type: str
    architecture: str
    read_config: Callable[[dict[str, Any]], dict[str, Any]]
    write_config: Callable[[ModelConfig], dict[str, Any]]
    table: Sequence[Row]
    claims: Callable[[ModelConfig], bool]
    keeps_row: Callable[[str, ModelConfig], bool] = _every_row
    copies: tuple[str, ...] = ()
    aliases: Callable[[str], tuple[str, ...]] = _no_aliases
    foreign: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------------------
# Shared by the config readers


def refuse(key: str, value: Any, accepted: Any) -> None:
    raise ConfigError(f"Hugging Face option {key}={value!r} is not supported by jirl; accepted: {accepted}.")


def require(hf: dict[str, Any], key: str, accepted: tuple[Any, ...]) -> None:
    """Refuses hf[key] (when present) unless it is one of `accepted`."""
    if key in hf and hf[key] not in accepted:
        refuse(key, hf[key], list(accepted))


# Hugging Face activation names -> jirl's (gelu_new and gelu_pytorch_tanh are the same tanh form).
ACTIVATIONS = {"silu": "silu", "swish": "silu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}


def activation_name(names: dict[str, str], cfg: ModelConfig, family: str) -> str:
    """The family's config.json name of cfg.activation (`names`: jirl's -> the family's); refuses one
    the family has no name for."""
    if cfg.activation not in names:
        raise ConfigError(
            f"model.activation='{cfg.activation}' cannot be expressed as Hugging Face {family}; "
            f"accepted: {sorted(names)}."
        )
    return names[cfg.activation]


def activation(hf: dict[str, Any], key: str, default: str, gelu: str = "gelu") -> str:
    """jirl's activation for hf[key] (`default` when unset); `gelu` is what the family means by "gelu"."""
    name = hf.get(key) or default
    if name == "gelu":
        name = gelu
    if name == "gelu":
        return "gelu"  # the erf form
    if name not in ACTIVATIONS:
        refuse(key, name, sorted(ACTIVATIONS) + ["gelu"])
    return ACTIVATIONS[name]
