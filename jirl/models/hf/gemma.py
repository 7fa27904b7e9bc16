"""Gemma 1/2/3: Llama's config.json and tensor table (`jirl.models.hf.llama`) with Gemma's flags.

- Gemma norms with x * (1 + w) ("rms_plus_one"), scales the embeddings by sqrt(D), ties the
  embeddings by default and reads a legacy "gelu" as the tanh form;
- Gemma 2 adds post-norms on the attention and MLP outputs, softcaps (c * tanh(x / c)) on the
  attention and output logits, and a sliding window on every other layer (layer 2k: sliding; or
  the regular pattern `layer_types` lists);
- Gemma 3 (text, "gemma3_text") keeps Gemma 2's post-norms and adds Qwen3's q/k norms (with Gemma's
  (1 + w)); the window is on 5 of every 6 layers (`layer_types`, or `sliding_window_pattern` 6:
  layer i global when (i + 1) % 6 == 0), whose RoPE has its own base (`rope_local_base_freq`, 10k)
  while the global layers keep `rope_theta` (1M) and its scaling (linear, factor 8, in 4B and up).
  transformers 5 writes both RoPEs as `rope_parameters` per layer type. Gemma 3 has no soft-caps:
  transformers applies a `final_logit_softcapping` (read) and ignores an `attn_logit_softcapping`
  (refused when set). Unset keys take transformers' Gemma3TextConfig defaults, which the published
  config.json files rely on (4B's text_config names a few keys only). The multimodal "gemma3"
  (Gemma3ForConditionalGeneration) is read as its text model: `text_config`, the tensors under
  "language_model.", the vision tower skipped; jirl writes it back as "gemma3_text".
"""

from __future__ import annotations

from typing import Any

from jirl.errors import ConfigError
from jirl.models.config import ModelConfig
from jirl.models.hf.family import Family, refuse
from jirl.models.hf.llama import (
    LAYER,
    LLAMA_TABLE,
    check_layer_types,
    read_rope,
    rope_parameters,
    shared_fields,
    shared_keys,
)

# Gemma 2 norms the attention and MLP outputs too: its post_attention_layernorm is a post-norm.
_GEMMA2_NORMS = {
    LAYER + "post_attention_layernorm.weight": "post_attn_norm",
    LAYER + "pre_feedforward_layernorm.weight": "mlp_norm",
    LAYER + "post_feedforward_layernorm.weight": "post_mlp_norm",
}
GEMMA2_TABLE = [row for row in LLAMA_TABLE if row[1] != "mlp_norm"] + [
    (name, ours, "vector") for name, ours in _GEMMA2_NORMS.items()
]


# ---------------------------------------------------------------------------------------------
# config.json -> ModelConfig fields


def _layer_pattern(fields: dict[str, Any], layer_types: list[str], every: int) -> dict[str, Any]:
    """The fields with the sliding window pattern of `layer_types` (transformers' default: every
    `every`-th layer global), checked: the first global layer gives the pattern (layer i global when
    (i + 1) % pattern == 0); with no global layer, any pattern longer than the model."""
    full = [i for i, kind in enumerate(layer_types) if kind == "full_attention"]
    fields["sliding_pattern"] = full[0] + 1 if full else max(fields["num_layers"] + 1, every)
    return check_layer_types(fields, layer_types)


# transformers' GemmaConfig / Gemma2Config defaults for the keys a config.json may omit (an explicit
# null stays null: a softcap or window of None is off).
_GEMMA_DEFAULTS = dict(
    head_dim=256,
    max_position_embeddings=8192,
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
    hidden_act="gelu_pytorch_tanh",
)
_GEMMA2_DEFAULTS = dict(
    _GEMMA_DEFAULTS,
    hidden_activation="gelu_pytorch_tanh",
    query_pre_attn_scalar=256,
    sliding_window=4096,
    final_logit_softcapping=30.0,
    attn_logit_softcapping=50.0,
)


def _gemma_fields(hf: dict[str, Any]) -> dict[str, Any]:
    hf = {**_GEMMA_DEFAULTS, **hf}
    fields = shared_fields(hf, tied=True, gelu="gelu_pytorch_tanh")  # as transformers reads "gelu"
    fields.update(norm="rms_plus_one", embed_scale=True)
    return fields


def _read_gemma(hf: dict[str, Any]) -> dict[str, Any]:
    return check_layer_types(_gemma_fields(hf), hf.get("layer_types"))


def _read_gemma2(hf: dict[str, Any]) -> dict[str, Any]:
    hf = {**_GEMMA2_DEFAULTS, **hf}
    fields = _gemma_fields(hf)
    query_scale = float(hf["query_pre_attn_scalar"])
    fields.update(
        post_norms=True,
        query_scale=0.0 if query_scale == fields["head_dim"] else query_scale,  # 0: head_dim
        attn_softcap=float(hf.get("attn_logit_softcapping") or 0.0),
        final_softcap=float(hf.get("final_logit_softcapping") or 0.0),
        sliding_window=int(hf.get("sliding_window") or 0),
    )
    layer_types = hf.get("layer_types")
    if layer_types is None:  # transformers: every other layer global (layer 2k + 1)
        layer_types = [
            "sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(fields["num_layers"])
        ]
    return _layer_pattern(fields, layer_types, 2)


# transformers' Gemma3TextConfig defaults, which config.json files rely on for the keys they omit.
_GEMMA3_DEFAULTS = dict(
    vocab_size=262_208,
    hidden_size=2304,
    intermediate_size=9216,
    num_hidden_layers=26,
    num_attention_heads=8,
    num_key_value_heads=4,
    head_dim=256,
    hidden_activation="gelu_pytorch_tanh",
    max_position_embeddings=131_072,
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
    query_pre_attn_scalar=256,
    sliding_window=4096,
)
_GEMMA3_LAYER_TYPES = ("full_attention", "sliding_attention")


def _gemma3_rope(hf: dict[str, Any]) -> dict[str, Any]:
    """The RoPE fields of a Gemma 3 text config: the global layers' RoPE and the local layers' base.

    transformers 5: `rope_parameters` = {"full_attention": {...}, "sliding_attention": {...}};
    transformers 4 (the published files): `rope_theta` (default 1M) with `rope_scaling` for the global
    layers, `rope_local_base_freq` (default 10k) for the local ones. The local RoPE must be unscaled.
    """
    params = hf.get("rope_parameters") or {}
    if not set(params) <= set(_GEMMA3_LAYER_TYPES):
        refuse(
            "rope_parameters",
            params,
            f"one dict of RoPE parameters per layer type {list(_GEMMA3_LAYER_TYPES)}",
        )
    full = {"rope_type": "default", **(params.get("full_attention") or {}), **(hf.get("rope_scaling") or {})}
    full.setdefault("rope_theta", hf.get("rope_theta", 1_000_000.0))
    local = {"rope_type": "default", **(params.get("sliding_attention") or {})}
    local.setdefault("rope_theta", hf.get("rope_local_base_freq", 10_000.0))
    max_len = hf["max_position_embeddings"]
    fields = read_rope({"rope_parameters": full, "max_position_embeddings": max_len})
    local_fields = read_rope({"rope_parameters": local, "max_position_embeddings": max_len})
    if local_fields == fields:  # one RoPE for every layer
        return dict(fields, rope_local_theta=0.0)
    if local_fields.get("rope_scaling", "none") != "none":
        refuse("rope_parameters['sliding_attention']", local, "an unscaled RoPE (rope_type 'default')")
    return dict(fields, rope_local_theta=local_fields["rope_theta"])


def _read_gemma3(hf: dict[str, Any]) -> dict[str, Any]:
    hf = {**_GEMMA3_DEFAULTS, **{k: v for k, v in hf.items() if v is not None or k == "sliding_window"}}
    if hf.get("attn_logit_softcapping") is not None:  # transformers' Gemma 3 attention never applies it
        refuse("attn_logit_softcapping", hf["attn_logit_softcapping"], [None])
    fields = shared_fields(
        {k: v for k, v in hf.items() if k not in ("rope_parameters", "rope_scaling")}, True
    )
    fields.update(_gemma3_rope(hf))
    query_scale = float(hf["query_pre_attn_scalar"])
    fields.update(
        norm="rms_plus_one",
        embed_scale=True,
        qk_norm=True,
        post_norms=True,
        query_scale=0.0 if query_scale == fields["head_dim"] else query_scale,  # 0: head_dim
        final_softcap=float(hf.get("final_logit_softcapping") or 0.0),
        sliding_window=int(hf["sliding_window"] or 0),
    )
    layer_types = hf.get("layer_types")
    every = hf.get("sliding_window_pattern", 6)
    if layer_types is None:  # transformers: layer i is global when (i + 1) % sliding_window_pattern == 0
        layer_types = [
            "sliding_attention" if (i + 1) % every else "full_attention" for i in range(fields["num_layers"])
        ]
    return _layer_pattern(fields, layer_types, 6)


def _read_gemma3_multimodal(hf: dict[str, Any]) -> dict[str, Any]:
    """Gemma3ForConditionalGeneration: its text model, `text_config` (tied as the whole model is)."""
    text = dict(hf.get("text_config") or {})
    text["tie_word_embeddings"] = hf.get("tie_word_embeddings", text.get("tie_word_embeddings", True))
    return _read_gemma3(text)


def _gemma3_text_names(hf_name: str) -> tuple[str, ...]:
    """Where Gemma3ForConditionalGeneration holds a text-model tensor: "language_model." before the
    Gemma3ForCausalLM name (the published files, and transformers 5 writes them so), or
    "model.language_model." in place of its "model." (transformers 5's modules)."""
    inner = (
        ("model.language_model." + hf_name.removeprefix("model."),) if hf_name.startswith("model.") else ()
    )
    return ("language_model." + hf_name, *inner)


def _write_gemma3_multimodal(cfg: ModelConfig) -> dict[str, Any]:
    raise ConfigError(
        "jirl writes no vision tower: a Gemma 3 model is written as Hugging Face model_type 'gemma3_text' "
        "(Gemma3ForCausalLM); accepted: model_type 'gemma3_text' or None."
    )


# ---------------------------------------------------------------------------------------------
# ModelConfig -> config.json


def _write_gemma(cfg: ModelConfig) -> dict[str, Any]:
    return {**shared_keys(cfg), "attention_bias": cfg.qkv_bias}


def _write_gemma2(cfg: ModelConfig) -> dict[str, Any]:
    hf = _write_gemma(cfg)
    hf.update(
        hidden_activation=hf["hidden_act"],
        query_pre_attn_scalar=_number(cfg.query_scale or cfg.head_dim),
        attn_logit_softcapping=cfg.attn_softcap or None,
        final_logit_softcapping=cfg.final_softcap or None,
        sliding_window=cfg.sliding_window or None,
        layer_types=[
            "full_attention" if cfg.is_global_layer(i) else "sliding_attention" for i in range(cfg.num_layers)
        ],
    )
    return hf


def _write_gemma3(cfg: ModelConfig) -> dict[str, Any]:
    """transformers 5's form: both RoPEs in `rope_parameters` per layer type, `layer_types` listed."""
    hf = _write_gemma(cfg)
    del hf["rope_theta"]
    full = rope_parameters(cfg)
    local = {"rope_type": "default", "rope_theta": cfg.rope_local_theta} if cfg.rope_local_theta else full
    hf.update(
        hidden_activation=hf.pop("hidden_act"),
        rope_parameters={"full_attention": full, "sliding_attention": dict(local)},
        query_pre_attn_scalar=_number(cfg.query_scale or cfg.head_dim),
        attn_logit_softcapping=None,  # not expressible: a config with attn_softcap fails the round trip
        final_logit_softcapping=cfg.final_softcap or None,
        sliding_window=cfg.sliding_window or None,
        layer_types=[
            "full_attention" if cfg.is_global_layer(i) else "sliding_attention" for i in range(cfg.num_layers)
        ],
    )
    return hf


def _number(x: float) -> int | float:
    """x as an int when it is one (transformers checks int-typed fields)."""
    return int(x) if float(x).is_integer() else x


GEMMA = Family(
    model_type="gemma",
    architecture="GemmaForCausalLM",
    read_config=_read_gemma,
    write_config=_write_gemma,
    table=LLAMA_TABLE,
    claims=lambda cfg: cfg.norm == "rms_plus_one",
)
GEMMA2 = Family(
    model_type="gemma2",
    architecture="Gemma2ForCausalLM",
    read_config=_read_gemma2,
    write_config=_write_gemma2,
    table=GEMMA2_TABLE,
    claims=lambda cfg: cfg.post_norms,
)
GEMMA3 = Family(
    model_type="gemma3_text",
    architecture="Gemma3ForCausalLM",
    read_config=_read_gemma3,
    write_config=_write_gemma3,
    table=GEMMA2_TABLE,  # Gemma 2's tensors; q_norm / k_norm are rows of the Llama table already
    claims=lambda cfg: cfg.rope_local_theta > 0 or (cfg.qk_norm and cfg.norm == "rms_plus_one"),
)
# The multimodal Gemma 3 (4B and up): its text model is read, its vision tower skipped; never written.
GEMMA3_MULTIMODAL = Family(
    model_type="gemma3",
    architecture="Gemma3ForConditionalGeneration",
    read_config=_read_gemma3_multimodal,
    write_config=_write_gemma3_multimodal,
    table=GEMMA2_TABLE,
    claims=lambda cfg: False,  # a config is written as gemma3_text
    aliases=_gemma3_text_names,
    foreign=(
        "vision_tower.",
        "multi_modal_projector.",
        "model.vision_tower.",
        "model.multi_modal_projector.",
    ),
)
