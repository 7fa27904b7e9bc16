"""Llama 2/3 (3.2 included), Qwen2, Qwen3 and Gemma 1/2/3: one shape of config.json and one tensor table.

They differ in a few flags, set by each family's reader and writer below:
- Qwen2 always has q/k/v biases (and no other bias);
- Qwen3 norms each query and key head (RMSNorm over head_dim, before RoPE: q_norm, k_norm) and
  has no biases unless `attention_bias` (then on q, k, v and o, as Llama);
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
from jirl.models.hf.family import Family, activation, activation_name, refuse, require

_LAYER = "model.layers.{i}."
LLAMA_TABLE = [
    ("model.embed_tokens.weight", "embed", "table"),
    (_LAYER + "input_layernorm.weight", "attn_norm", "vector"),
    (_LAYER + "self_attn.q_proj.weight", "wq", "linear"),
    (_LAYER + "self_attn.k_proj.weight", "wk", "linear"),
    (_LAYER + "self_attn.v_proj.weight", "wv", "linear"),
    (_LAYER + "self_attn.q_proj.bias", "bq", "vector"),
    (_LAYER + "self_attn.k_proj.bias", "bk", "vector"),
    (_LAYER + "self_attn.v_proj.bias", "bv", "vector"),
    (_LAYER + "self_attn.o_proj.weight", "wo", "linear"),
    (_LAYER + "self_attn.o_proj.bias", "bo", "vector"),
    (_LAYER + "self_attn.q_norm.weight", "q_norm", "vector"),
    (_LAYER + "self_attn.k_norm.weight", "k_norm", "vector"),
    (_LAYER + "post_attention_layernorm.weight", "mlp_norm", "vector"),
    (_LAYER + "mlp.gate_proj.weight", "w_gate", "linear"),
    (_LAYER + "mlp.up_proj.weight", "w_up", "linear"),
    (_LAYER + "mlp.down_proj.weight", "w_down", "linear"),
    (_LAYER + "mlp.gate_proj.bias", "b_gate", "vector"),
    (_LAYER + "mlp.up_proj.bias", "b_up", "vector"),
    (_LAYER + "mlp.down_proj.bias", "b_down", "vector"),
    ("model.norm.weight", "final_norm", "vector"),
    ("lm_head.weight", "unembed", "linear"),
]
# Gemma 2 norms the attention and MLP outputs too: its post_attention_layernorm is a post-norm.
_GEMMA2_NORMS = {
    _LAYER + "post_attention_layernorm.weight": "post_attn_norm",
    _LAYER + "pre_feedforward_layernorm.weight": "mlp_norm",
    _LAYER + "post_feedforward_layernorm.weight": "post_mlp_norm",
}
GEMMA2_TABLE = [row for row in LLAMA_TABLE if row[1] != "mlp_norm"] + [
    (name, ours, "vector") for name, ours in _GEMMA2_NORMS.items()
]
# jirl's activation names -> Hugging Face's.
_ACTIVATIONS_BACK = {"silu": "silu", "gelu_tanh": "gelu_pytorch_tanh", "gelu": "gelu"}


# ---------------------------------------------------------------------------------------------
# config.json -> ModelConfig fields


def _rope(hf: dict[str, Any]) -> dict[str, Any]:
    """ModelConfig RoPE fields from `rope_parameters` (transformers 5) or `rope_theta`/`rope_scaling`."""
    params = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
    theta = params.get("rope_theta", hf.get("rope_theta", 10_000.0))
    kind = params.get("rope_type", params.get("type", "default"))
    if params.get("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0)) != 1.0:
        refuse("partial_rotary_factor", params.get("partial_rotary_factor"), [1.0])
    if kind == "default":
        return dict(rope_theta=float(theta))
    if kind == "linear":
        return dict(rope_theta=float(theta), rope_scaling="linear", rope_factor=float(params["factor"]))
    if kind != "llama3":
        refuse("rope_type", kind, ["default", "linear", "llama3"])
    return dict(
        rope_theta=float(theta),
        rope_scaling="llama3",
        rope_factor=float(params["factor"]),
        rope_low_freq_factor=float(params["low_freq_factor"]),
        rope_high_freq_factor=float(params["high_freq_factor"]),
        rope_original_max_len=int(
            params.get("original_max_position_embeddings", hf["max_position_embeddings"])
        ),
    )


def _shared_fields(hf: dict[str, Any], tied: bool, gelu: str = "gelu") -> dict[str, Any]:
    """The keys all four families share; `tied` is the tie_word_embeddings default."""
    d, h = hf["hidden_size"], hf["num_attention_heads"]
    require(hf, "pretraining_tp", (1, None))
    require(hf, "use_bidirectional_attention", (False, None))
    require(hf, "use_sliding_window", (False, None))
    for key in ("quantization_config", "num_experts"):
        if hf.get(key):
            refuse(key, hf[key], [None])
    bias = bool(hf.get("attention_bias", False))
    fields = dict(
        vocab_size=hf["vocab_size"],
        embed_dim=d,
        num_layers=hf["num_hidden_layers"],
        num_heads=h,
        num_kv_heads=hf.get("num_key_value_heads") or h,
        head_dim=hf.get("head_dim") or d // h,
        mlp_dim=hf["intermediate_size"],
        max_len=hf["max_position_embeddings"],
        norm_eps=hf.get("rms_norm_eps", 1e-6),
        tie_embeddings=bool(hf.get("tie_word_embeddings", tied)),
        qkv_bias=bias,
        out_bias=bias,
        mlp_bias=bool(hf.get("mlp_bias", False)),
        **_rope(hf),
    )
    act_key = "hidden_activation" if hf.get("hidden_activation") else "hidden_act"
    fields["activation"] = activation(hf, act_key, "silu", gelu)
    return fields


def _check_layer_types(fields: dict[str, Any], layer_types: list[str] | None) -> dict[str, Any]:
    """Refuses a `layer_types` list other than the one the fields' sliding window implies."""
    if layer_types is not None:
        cfg = ModelConfig(**fields)
        expected = [
            "full_attention" if cfg.is_global_layer(i) else "sliding_attention" for i in range(cfg.num_layers)
        ]
        if list(layer_types) != expected:
            refuse("layer_types", layer_types, expected)
    return fields


def _layer_pattern(fields: dict[str, Any], layer_types: list[str], every: int) -> dict[str, Any]:
    """The fields with the sliding window pattern of `layer_types` (transformers' default: every
    `every`-th layer global), checked: the first global layer gives the pattern (layer i global when
    (i + 1) % pattern == 0); with no global layer, any pattern longer than the model."""
    full = [i for i, kind in enumerate(layer_types) if kind == "full_attention"]
    fields["sliding_pattern"] = full[0] + 1 if full else max(fields["num_layers"] + 1, every)
    return _check_layer_types(fields, layer_types)


def _read_llama(hf: dict[str, Any]) -> dict[str, Any]:
    return _check_layer_types(_shared_fields(hf, tied=False), hf.get("layer_types"))


def _read_qwen2(hf: dict[str, Any]) -> dict[str, Any]:
    fields = _shared_fields(hf, tied=False)
    fields["qkv_bias"] = True
    return _check_layer_types(fields, hf.get("layer_types"))


def _read_qwen3(hf: dict[str, Any]) -> dict[str, Any]:
    fields = _shared_fields(hf, tied=False)
    fields["qk_norm"] = True
    return _check_layer_types(fields, hf.get("layer_types"))


def _gemma_fields(hf: dict[str, Any]) -> dict[str, Any]:
    fields = _shared_fields(hf, tied=True, gelu="gelu_pytorch_tanh")  # as transformers reads "gelu"
    fields.update(norm="rms_plus_one", embed_scale=True)
    return fields


def _read_gemma(hf: dict[str, Any]) -> dict[str, Any]:
    return _check_layer_types(_gemma_fields(hf), hf.get("layer_types"))


def _read_gemma2(hf: dict[str, Any]) -> dict[str, Any]:
    fields = _gemma_fields(hf)
    query_scale = float(hf.get("query_pre_attn_scalar", 256))
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
    fields = _rope({"rope_parameters": full, "max_position_embeddings": max_len})
    local_fields = _rope({"rope_parameters": local, "max_position_embeddings": max_len})
    if local_fields == fields:  # one RoPE for every layer
        return dict(fields, rope_local_theta=0.0)
    if local_fields.get("rope_scaling", "none") != "none":
        refuse("rope_parameters['sliding_attention']", local, "an unscaled RoPE (rope_type 'default')")
    return dict(fields, rope_local_theta=local_fields["rope_theta"])


def _read_gemma3(hf: dict[str, Any]) -> dict[str, Any]:
    hf = {**_GEMMA3_DEFAULTS, **{k: v for k, v in hf.items() if v is not None or k == "sliding_window"}}
    if hf.get("attn_logit_softcapping") is not None:  # transformers' Gemma 3 attention never applies it
        refuse("attn_logit_softcapping", hf["attn_logit_softcapping"], [None])
    fields = _shared_fields(
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


def _rope_parameters(cfg: ModelConfig) -> dict[str, Any]:
    """transformers 5's `rope_parameters` of the (global layers') RoPE."""
    rope = {"rope_type": "default", "rope_theta": cfg.rope_theta}
    if cfg.rope_scaling == "linear":
        rope.update(rope_type="linear", factor=cfg.rope_factor)
    if cfg.rope_scaling == "llama3":
        rope.update(
            rope_type="llama3",
            factor=cfg.rope_factor,
            low_freq_factor=cfg.rope_low_freq_factor,
            high_freq_factor=cfg.rope_high_freq_factor,
            original_max_position_embeddings=cfg.rope_original_max_len,
        )
    return rope


def _shared_keys(cfg: ModelConfig) -> dict[str, Any]:
    return dict(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.embed_dim,
        intermediate_size=cfg.mlp_dim,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        head_dim=cfg.head_dim,
        max_position_embeddings=cfg.max_len,
        rms_norm_eps=cfg.norm_eps,
        tie_word_embeddings=cfg.tie_embeddings,
        rope_theta=cfg.rope_theta,
        rope_parameters=_rope_parameters(cfg),
        hidden_act=activation_name(_ACTIVATIONS_BACK, cfg, "llama, qwen2, qwen3 or gemma"),
    )


def _write_llama(cfg: ModelConfig) -> dict[str, Any]:
    return {**_shared_keys(cfg), "attention_bias": cfg.qkv_bias, "mlp_bias": cfg.mlp_bias}


def _write_qwen3(cfg: ModelConfig) -> dict[str, Any]:
    return {**_shared_keys(cfg), "attention_bias": cfg.qkv_bias}


def _write_gemma(cfg: ModelConfig) -> dict[str, Any]:
    return {**_shared_keys(cfg), "attention_bias": cfg.qkv_bias}


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
    full = _rope_parameters(cfg)
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


LLAMA = Family(
    model_type="llama",
    architecture="LlamaForCausalLM",
    read_config=_read_llama,
    write_config=_write_llama,
    table=LLAMA_TABLE,
    claims=lambda cfg: True,
)
QWEN2 = Family(
    model_type="qwen2",
    architecture="Qwen2ForCausalLM",
    read_config=_read_qwen2,
    write_config=_shared_keys,  # no attention_bias / mlp_bias keys: Qwen2's q/k/v biases are implied
    table=LLAMA_TABLE,
    claims=lambda cfg: cfg.qkv_bias and not cfg.out_bias and not cfg.mlp_bias,
)
QWEN3 = Family(
    model_type="qwen3",
    architecture="Qwen3ForCausalLM",
    read_config=_read_qwen3,
    write_config=_write_qwen3,
    table=LLAMA_TABLE,
    claims=lambda cfg: cfg.qk_norm,
)
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
