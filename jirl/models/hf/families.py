"""The registry of families, and configurations in and out: config.json <-> ModelConfig."""

from __future__ import annotations

import dataclasses
from typing import Any

from jirl.errors import ConfigError
from jirl.models.config import ModelConfig
from jirl.models.hf.family import Family
from jirl.models.hf.gemma import GEMMA, GEMMA2, GEMMA3, GEMMA3_MULTIMODAL
from jirl.models.hf.gpt2 import GPT2
from jirl.models.hf.llama import LLAMA, QWEN2, QWEN3
from jirl.models.hf.t5 import T5

REGISTRY: dict[str, Family] = {
    f.model_type: f for f in (LLAMA, QWEN2, QWEN3, GEMMA, GEMMA2, GEMMA3, GEMMA3_MULTIMODAL, GPT2, T5)
}
FAMILIES = tuple(REGISTRY)
ARCHITECTURES = {name: f.architecture for name, f in REGISTRY.items()}
TABLES = {name: f.table for name, f in REGISTRY.items()}
# Asked in this order by family_of: a Gemma 3 config is also a Gemma 2 and a Qwen3 one, a Gemma 2
# config a Gemma one, and every decoder a Llama. The multimodal gemma3 is read only (as gemma3_text).
SPECIFICITY = (T5, GPT2, GEMMA3, GEMMA2, GEMMA, QWEN3, QWEN2, LLAMA)


def get(model_type: Any) -> Family:
    """The family of a Hugging Face model_type; refuses one jirl does not read, naming those it does."""
    if model_type not in REGISTRY:
        raise ConfigError(
            f"Hugging Face model_type {model_type!r} is not supported; accepted: {list(FAMILIES)}."
        )
    return REGISTRY[model_type]


def config_from_hf(hf_config: dict[str, Any], **overrides: Any) -> ModelConfig:
    """The jirl ModelConfig of a Hugging Face config.json dict; `overrides` (e.g. dtype) applied last."""
    fields = get(hf_config.get("model_type")).read_config(hf_config)
    return ModelConfig(**{**fields, **overrides})


def family_of(cfg: ModelConfig) -> str:
    """The Hugging Face model_type that expresses `cfg` most directly."""
    return next(f.model_type for f in SPECIFICITY if f.claims(cfg))


# How a model computes, not what it is: kept out of (and never refused by) a Hugging Face config.
COMPUTE_OPTIONS = ("dtype", "remat", "scan_layers", "attention")


def config_to_hf(cfg: ModelConfig, model_type: str | None = None) -> dict[str, Any]:
    """A Hugging Face config.json dict for `cfg`; refuses options the family cannot express, by name.

    The check is a round trip: the dict read back must give `cfg` again, up to compute options
    (dtype, remat, scan_layers, attention) and fields that do not apply to `cfg`.
    """
    family = get(model_type or family_of(cfg))
    hf = family.write_config(cfg)
    hf.update(model_type=family.model_type, architectures=[family.architecture], torch_dtype="float32")
    compute = {k: getattr(cfg, k) for k in COMPUTE_OPTIONS}
    back = config_from_hf(hf, **compute)
    differ = [f.name for f in dataclasses.fields(cfg) if getattr(back, f.name) != getattr(cfg, f.name)]
    unused = {"sliding_pattern", "rope_local_theta"} if cfg.sliding_window <= 0 else set()  # do not apply
    if cfg.rope_scaling != "llama3":
        unused |= {"rope_low_freq_factor", "rope_high_freq_factor", "rope_original_max_len"}
    if cfg.rope_scaling == "none":
        unused.add("rope_factor")
    if not cfg.is_encoder_decoder:
        unused |= {"relative_buckets", "relative_max_distance", "decoder_start_id"}
    differ = [k for k in differ if k not in unused]
    if differ:
        raise ConfigError(
            f"model options {differ} ({[getattr(cfg, k) for k in differ]}) cannot be expressed "
            f"as Hugging Face model_type '{family.model_type}'."
        )
    return hf
