"""Llama 2/3 (3.2 included), Qwen2 and Qwen3: one shape of config.json and one tensor table.

They differ in a few flags, set by each family's reader and writer below:
- Qwen2 always has q/k/v biases (and no other bias);
- Qwen3 norms each query and key head (RMSNorm over head_dim, before RoPE: q_norm, k_norm) and
  has no biases unless `attention_bias` (then on q, k, v and o, as Llama).

Gemma 1/2/3 share this config.json and table with a few more keys (`jirl.models.hf.gemma`); the
helpers they share are the public names here (`shared_fields`, `shared_keys`, `read_rope`, ...).
"""

from __future__ import annotations

from typing import Any

from jirl.errors import ConfigError
from jirl.models.config import ModelConfig
from jirl.models.hf.family import Family, activation, activation_name, refuse, require

# The keys a config.json must give (the others have transformers' defaults).
REQUIRED_KEYS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "max_position_embeddings",
)
LAYER = "model.layers.{i}."
LLAMA_TABLE = [
    ("model.embed_tokens.weight", "embed", "table"),
    (LAYER + "input_layernorm.weight", "attn_norm", "vector"),
    (LAYER + "self_attn.q_proj.weight", "wq", "linear"),
    (LAYER + "self_attn.k_proj.weight", "wk", "linear"),
    (LAYER + "self_attn.v_proj.weight", "wv", "linear"),
    (LAYER + "self_attn.q_proj.bias", "bq", "vector"),
    (LAYER + "self_attn.k_proj.bias", "bk", "vector"),
    (LAYER + "self_attn.v_proj.bias", "bv", "vector"),
    (LAYER + "self_attn.o_proj.weight", "wo", "linear"),
    (LAYER + "self_attn.o_proj.bias", "bo", "vector"),
    (LAYER + "self_attn.q_norm.weight", "q_norm", "vector"),
    (LAYER + "self_attn.k_norm.weight", "k_norm", "vector"),
    (LAYER + "post_attention_layernorm.weight", "mlp_norm", "vector"),
    (LAYER + "mlp.gate_proj.weight", "w_gate", "linear"),
    (LAYER + "mlp.up_proj.weight", "w_up", "linear"),
    (LAYER + "mlp.down_proj.weight", "w_down", "linear"),
    (LAYER + "mlp.gate_proj.bias", "b_gate", "vector"),
    (LAYER + "mlp.up_proj.bias", "b_up", "vector"),
    (LAYER + "mlp.down_proj.bias", "b_down", "vector"),
    ("model.norm.weight", "final_norm", "vector"),
    ("lm_head.weight", "unembed", "linear"),
]
# jirl's activation names -> Hugging Face's.
_ACTIVATIONS_BACK = {"silu": "silu", "gelu_tanh": "gelu_pytorch_tanh", "gelu": "gelu"}


# ---------------------------------------------------------------------------------------------
# config.json -> ModelConfig fields


def read_rope(hf: dict[str, Any]) -> dict[str, Any]:
    """ModelConfig RoPE fields from `rope_parameters` (transformers 5) or `rope_theta`/`rope_scaling`."""
    params = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
    theta = params.get("rope_theta", hf.get("rope_theta", 10_000.0))
    kind = params.get("rope_type", params.get("type", "default"))
    if params.get("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0)) != 1.0:
        refuse("partial_rotary_factor", params.get("partial_rotary_factor"), [1.0])
    if kind == "default":
        return dict(rope_theta=float(theta))
    needs = {"linear": ["factor"], "llama3": ["factor", "low_freq_factor", "high_freq_factor"]}.get(kind, [])
    missing = [key for key in needs if params.get(key) is None]
    if missing:
        raise ConfigError(f"config.json's '{kind}' RoPE scaling lacks {missing}; it needs {needs}.")
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


def shared_fields(hf: dict[str, Any], tied: bool, gelu: str = "gelu") -> dict[str, Any]:
    """The keys all four families share; `tied` is the tie_word_embeddings default."""
    missing = [key for key in REQUIRED_KEYS if hf.get(key) is None]
    if missing:
        raise ConfigError(f"config.json lacks {missing}; a Llama-style config needs {list(REQUIRED_KEYS)}.")
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
        **read_rope(hf),
    )
    act_key = "hidden_activation" if hf.get("hidden_activation") else "hidden_act"
    fields["activation"] = activation(hf, act_key, "silu", gelu)
    return fields


def check_layer_types(fields: dict[str, Any], layer_types: list[str] | None) -> dict[str, Any]:
    """Refuses a `layer_types` list other than the one the fields' sliding window implies."""
    if layer_types is not None:
        cfg = ModelConfig(**fields)
        expected = [
            "full_attention" if cfg.is_global_layer(i) else "sliding_attention" for i in range(cfg.num_layers)
        ]
        if list(layer_types) != expected:
            refuse("layer_types", layer_types, expected)
    return fields


def _read_llama(hf: dict[str, Any]) -> dict[str, Any]:
    return check_layer_types(shared_fields(hf, tied=False), hf.get("layer_types"))


def _read_qwen2(hf: dict[str, Any]) -> dict[str, Any]:
    fields = shared_fields(hf, tied=False)
    fields["qkv_bias"] = True
    return check_layer_types(fields, hf.get("layer_types"))


def _read_qwen3(hf: dict[str, Any]) -> dict[str, Any]:
    fields = shared_fields(hf, tied=False)
    fields["qk_norm"] = True
    return check_layer_types(fields, hf.get("layer_types"))


# ---------------------------------------------------------------------------------------------
# ModelConfig -> config.json


def rope_parameters(cfg: ModelConfig) -> dict[str, Any]:
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


def shared_keys(cfg: ModelConfig) -> dict[str, Any]:
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
        rope_parameters=rope_parameters(cfg),
        hidden_act=activation_name(_ACTIVATIONS_BACK, cfg, "llama, qwen2, qwen3 or gemma"),
    )


def _write_llama(cfg: ModelConfig) -> dict[str, Any]:
    return {**shared_keys(cfg), "attention_bias": cfg.qkv_bias, "mlp_bias": cfg.mlp_bias}


def _write_qwen3(cfg: ModelConfig) -> dict[str, Any]:
    return {**shared_keys(cfg), "attention_bias": cfg.qkv_bias}


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
    write_config=shared_keys,  # no attention_bias / mlp_bias keys: Qwen2's q/k/v biases are implied
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
