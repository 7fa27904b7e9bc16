"""Hugging Face checkpoints in and out: Llama 2/3, Qwen2, Gemma 1/2 and GPT-2 as jirl decoders, T5
(v1.1 / Flan-T5, and the original layout) as jirl's encoder-decoder.

model = jirl.models.hf.load("folder")                 # config.json + *.safetensors (sharded or not)
logits_BTV = model(tokens_BT)                         # T5: model(encoder_tokens_BS, decoder_tokens_BT)
cfg, params = jirl.models.hf.load_params("folder")    # params: the tree of jirl.models.split
jirl.models.hf.save(params, cfg, "out")               # config.json + model.safetensors for transformers

Each family is a configuration of jirl's own decoder (`config_from_hf`) and a table of tensors
(HF name -> jirl name, layout). Tensors are read one at a time with safetensors (no torch) and
stored as float32. A Hugging Face option that jirl does not implement is refused by name.
Dropout rates are accepted and unused: jirl's decoder has no dropout.
"""

from __future__ import annotations

import dataclasses
import json
import math
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors import safe_open
from safetensors.numpy import save_file

from jirl import models
from jirl.models.config import ModelConfig

FAMILIES = ("llama", "qwen2", "gemma", "gemma2", "gpt2", "t5")
ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "gemma": "GemmaForCausalLM",
    "gemma2": "Gemma2ForCausalLM",
    "gpt2": "GPT2LMHeadModel",
    "t5": "T5ForConditionalGeneration",
}
# Hugging Face activation names -> jirl's (gelu_new and gelu_pytorch_tanh are the same tanh form).
_ACTIVATIONS = {"silu": "silu", "swish": "silu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}
_ACTIVATIONS_BACK = {"silu": "silu", "gelu_tanh": "gelu_pytorch_tanh", "gelu": "gelu"}
_GPT2_ACTIVATIONS = {"gelu_tanh": "gelu_new", "gelu": "gelu", "silu": "silu"}
# Buffers some checkpoints carry that hold no parameters.
_BUFFERS = ("rotary_emb.inv_freq", ".attn.bias", ".attn.masked_bias")

# Tensor tables: (HF name, jirl name(s), layout). `{i}` is the layer; jirl names of a layer live in
# params["layers"] stacked as [L, ...]. Layouts: "linear" is torch's [out, in] (transposed to
# jirl's [in, out...]), "conv1d" is GPT-2's [in, out] (columns split into the jirl names given),
# "vector" is flattened, "table" is [rows, D] as in jirl. Rows whose jirl name the config does
# not have (a bias, a post-norm) are skipped.
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
_H = "transformer.h.{i}."
GPT2_TABLE = [
    ("transformer.wte.weight", "embed", "table"),
    ("transformer.wpe.weight", "pos_embed", "table"),
    (_H + "ln_1.weight", "attn_norm", "vector"),
    (_H + "ln_1.bias", "attn_norm_bias", "vector"),
    (_H + "attn.c_attn.weight", ("wq", "wk", "wv"), "conv1d"),
    (_H + "attn.c_attn.bias", ("bq", "bk", "bv"), "vector"),
    (_H + "attn.c_proj.weight", "wo", "conv1d"),
    (_H + "attn.c_proj.bias", "bo", "vector"),
    (_H + "ln_2.weight", "mlp_norm", "vector"),
    (_H + "ln_2.bias", "mlp_norm_bias", "vector"),
    (_H + "mlp.c_fc.weight", "w_up", "conv1d"),
    (_H + "mlp.c_fc.bias", "b_up", "vector"),
    (_H + "mlp.c_proj.weight", "w_down", "conv1d"),
    (_H + "mlp.c_proj.bias", "b_down", "vector"),
    ("transformer.ln_f.weight", "final_norm", "vector"),
    ("transformer.ln_f.bias", "final_norm_bias", "vector"),
    ("lm_head.weight", "unembed", "linear"),
]
# T5: per-layer names live in params["encoder"] / params["decoder"] (the 4th field); the relative
# bias tables are read from layer 0, where T5 keeps them.
_ENC, _DEC = "encoder.block.{i}.layer.", "decoder.block.{i}.layer."
_T5_ATTENTION = [("q", "wq"), ("k", "wk"), ("v", "wv"), ("o", "wo")]
_T5_MLP = [("wi_0", "w_gate"), ("wi_1", "w_up"), ("wi", "w_up"), ("wo", "w_down")]
T5_TABLE = [
    ("shared.weight", "embed", "table"),
    ("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", "encoder_bias", "table"),
    ("decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", "decoder_bias", "table"),
    *[(_ENC + f"0.SelfAttention.{hf}.weight", ours, "linear", "encoder") for hf, ours in _T5_ATTENTION],
    (_ENC + "0.layer_norm.weight", "attn_norm", "vector", "encoder"),
    *[(_ENC + f"1.DenseReluDense.{hf}.weight", ours, "linear", "encoder") for hf, ours in _T5_MLP],
    (_ENC + "1.layer_norm.weight", "mlp_norm", "vector", "encoder"),
    ("encoder.final_layer_norm.weight", "encoder_norm", "vector"),
    *[(_DEC + f"0.SelfAttention.{hf}.weight", ours, "linear", "decoder") for hf, ours in _T5_ATTENTION],
    (_DEC + "0.layer_norm.weight", "attn_norm", "vector", "decoder"),
    *[
        (_DEC + f"1.EncDecAttention.{hf}.weight", "wc" + ours[1:], "linear", "decoder")
        for hf, ours in _T5_ATTENTION
    ],
    (_DEC + "1.layer_norm.weight", "cross_norm", "vector", "decoder"),
    *[(_DEC + f"2.DenseReluDense.{hf}.weight", ours, "linear", "decoder") for hf, ours in _T5_MLP],
    (_DEC + "2.layer_norm.weight", "mlp_norm", "vector", "decoder"),
    ("decoder.final_layer_norm.weight", "final_norm", "vector"),
    ("lm_head.weight", "unembed", "linear"),
]
TABLES = {
    "llama": LLAMA_TABLE,
    "qwen2": LLAMA_TABLE,
    "gemma": LLAMA_TABLE,
    "gemma2": GEMMA2_TABLE,
    "gpt2": GPT2_TABLE,
    "t5": T5_TABLE,
}


# ---------------------------------------------------------------------------------------------
# Configurations


def _refuse(key: str, value: Any, accepted: Any) -> None:
    raise ValueError(f"Hugging Face option {key}={value!r} is not supported by jirl; accepted: {accepted}.")


def _require(hf: dict[str, Any], key: str, accepted: tuple[Any, ...]) -> None:
    """Refuses hf[key] (when present) unless it is one of `accepted`."""
    if key in hf and hf[key] not in accepted:
        _refuse(key, hf[key], list(accepted))


def _activation(hf: dict[str, Any], key: str, family: str) -> str:
    name = hf.get(key) or ("gelu_new" if family == "gpt2" else "silu")
    if family in ("gemma", "gemma2") and name == "gelu":
        name = "gelu_pytorch_tanh"  # as transformers does: Gemma's legacy "gelu" means the tanh form
    if name == "gelu" and family not in ("gemma", "gemma2"):
        return "gelu"
    if name not in _ACTIVATIONS:
        _refuse(key, name, sorted(_ACTIVATIONS) + ["gelu"])
    return _ACTIVATIONS[name]


def _rope(hf: dict[str, Any]) -> dict[str, Any]:
    """ModelConfig RoPE fields from `rope_parameters` (transformers 5) or `rope_theta`/`rope_scaling`."""
    params = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
    theta = params.get("rope_theta", hf.get("rope_theta", 10_000.0))
    kind = params.get("rope_type", params.get("type", "default"))
    if params.get("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0)) != 1.0:
        _refuse("partial_rotary_factor", params.get("partial_rotary_factor"), [1.0])
    if kind == "default":
        return dict(rope_theta=float(theta))
    if kind != "llama3":
        _refuse("rope_type", kind, ["default", "llama3"])
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


def _llama_like(hf: dict[str, Any], family: str) -> dict[str, Any]:
    """Llama, Qwen2, Gemma and Gemma 2 share the shape keys."""
    d, h = hf["hidden_size"], hf["num_attention_heads"]
    _require(hf, "pretraining_tp", (1, None))
    _require(hf, "use_bidirectional_attention", (False, None))
    _require(hf, "use_sliding_window", (False, None))
    for key in ("quantization_config", "num_experts"):
        if hf.get(key):
            _refuse(key, hf[key], [None])
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
        tie_embeddings=bool(hf.get("tie_word_embeddings", family in ("gemma", "gemma2"))),
        qkv_bias=bias or family == "qwen2",
        out_bias=bias,
        mlp_bias=bool(hf.get("mlp_bias", False)),
        **_rope(hf),
    )
    act_key = "hidden_activation" if hf.get("hidden_activation") else "hidden_act"
    fields["activation"] = _activation(hf, act_key, family)
    if family in ("gemma", "gemma2"):
        fields.update(norm="rms_plus_one", embed_scale=True)
    layer_types = hf.get("layer_types")
    if family == "gemma2":
        window = hf.get("sliding_window") or 0
        query_scale = float(hf.get("query_pre_attn_scalar", 256))
        fields.update(
            post_norms=True,
            query_scale=0.0 if query_scale == fields["head_dim"] else query_scale,  # 0: head_dim
            attn_softcap=float(hf.get("attn_logit_softcapping") or 0.0),
            final_softcap=float(hf.get("final_logit_softcapping") or 0.0),
            sliding_window=int(window),
            sliding_pattern=2,
        )
        if layer_types is None:
            layer_types = [
                "sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(fields["num_layers"])
            ]
    if layer_types is not None:
        cfg = ModelConfig(**fields)
        expected = [
            "full_attention" if cfg.is_global_layer(i) else "sliding_attention" for i in range(cfg.num_layers)
        ]
        if list(layer_types) != expected:
            _refuse("layer_types", layer_types, expected)
    return fields


def _gpt2(hf: dict[str, Any]) -> dict[str, Any]:
    _require(hf, "scale_attn_weights", (True,))
    _require(hf, "scale_attn_by_inverse_layer_idx", (False,))
    _require(hf, "add_cross_attention", (False,))
    d, h = hf["n_embd"], hf["n_head"]
    return dict(
        vocab_size=hf["vocab_size"],
        embed_dim=d,
        num_layers=hf["n_layer"],
        num_heads=h,
        num_kv_heads=h,
        head_dim=d // h,
        mlp_dim=hf.get("n_inner") or 4 * d,
        max_len=hf["n_positions"],
        norm_eps=hf.get("layer_norm_epsilon", 1e-5),
        tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
        position_embedding="learned",
        norm="layer",
        activation=_activation(hf, "activation_function", "gpt2"),
        gated_mlp=False,
        qkv_bias=True,
        out_bias=True,
        mlp_bias=True,
    )


_T5_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu": "gelu", "relu": "relu", "silu": "silu"}


def _t5(hf: dict[str, Any]) -> dict[str, Any]:
    """T5 v1.1 / Flan-T5 ("gated-gelu", untied) and the original T5 ("relu", tied)."""
    _require(hf, "is_encoder_decoder", (True,))
    projection = hf.get("feed_forward_proj", "relu")
    parts = projection.split("-")
    gated = parts[0] == "gated" and len(parts) == 2
    act = "gelu_new" if projection == "gated-gelu" else parts[-1]
    if act not in _T5_ACTIVATIONS or (len(parts) == 2 and not gated) or len(parts) > 2:
        _refuse("feed_forward_proj", projection, ["relu", "gelu", "gated-gelu", "gated-silu", "gated-relu"])
    h = hf["num_heads"]
    return dict(
        vocab_size=hf["vocab_size"],
        embed_dim=hf["d_model"],
        num_layers=hf.get("num_decoder_layers") or hf["num_layers"],
        encoder_layers=hf["num_layers"],
        num_heads=h,
        num_kv_heads=h,
        head_dim=hf["d_kv"],
        mlp_dim=hf["d_ff"],
        max_len=int(hf.get("n_positions") or 512),  # T5 has no position limit; a length for sampling
        norm_eps=hf.get("layer_norm_epsilon", 1e-6),
        tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
        position_embedding="relative",
        relative_buckets=hf.get("relative_attention_num_buckets", 32),
        relative_max_distance=hf.get("relative_attention_max_distance", 128),
        activation=_T5_ACTIVATIONS[act],
        gated_mlp=gated,
        decoder_start_id=int(hf.get("decoder_start_token_id") or 0),
        query_scale=1.0,  # T5 does not scale q k^T
    )


def config_from_hf(hf_config: dict[str, Any], **overrides: Any) -> ModelConfig:
    """The jirl ModelConfig of a Hugging Face config.json dict; `overrides` (e.g. dtype) applied last."""
    family = hf_config.get("model_type")
    if family not in FAMILIES:
        raise ValueError(f"Hugging Face model_type {family!r} is not supported; accepted: {list(FAMILIES)}.")
    readers = {"gpt2": _gpt2, "t5": _t5}
    fields = readers[family](hf_config) if family in readers else _llama_like(hf_config, family)
    return ModelConfig(**{**fields, **overrides})


def family_of(cfg: ModelConfig) -> str:
    """The Hugging Face model_type that expresses `cfg` most directly."""
    if cfg.is_encoder_decoder:
        return "t5"
    if cfg.position_embedding == "learned":
        return "gpt2"
    if cfg.post_norms:
        return "gemma2"
    if cfg.norm == "rms_plus_one":
        return "gemma"
    return "qwen2" if cfg.qkv_bias and not cfg.out_bias and not cfg.mlp_bias else "llama"


def config_to_hf(cfg: ModelConfig, model_type: str | None = None) -> dict[str, Any]:
    """A Hugging Face config.json dict for `cfg`; refuses options the family cannot express, by name."""
    family = model_type or family_of(cfg)
    if family not in FAMILIES:
        raise ValueError(f"Hugging Face model_type {family!r} is not supported; accepted: {list(FAMILIES)}.")
    writers = {"gpt2": _gpt2_to_hf, "t5": _t5_to_hf}
    hf = writers[family](cfg) if family in writers else _llama_like_to_hf(cfg, family)
    hf.update(model_type=family, architectures=[ARCHITECTURES[family]], torch_dtype="float32")
    back = config_from_hf(hf, dtype=cfg.dtype, remat=cfg.remat, scan_layers=cfg.scan_layers)
    differ = [f.name for f in dataclasses.fields(cfg) if getattr(back, f.name) != getattr(cfg, f.name)]
    unused = {"sliding_pattern"} if cfg.sliding_window <= 0 else set()  # options that do not apply
    if cfg.rope_scaling == "none":
        unused |= {"rope_factor", "rope_low_freq_factor", "rope_high_freq_factor", "rope_original_max_len"}
    if not cfg.is_encoder_decoder:
        unused |= {"relative_buckets", "relative_max_distance", "decoder_start_id"}
    differ = [k for k in differ if k not in unused]
    if differ:
        raise ValueError(
            f"model options {differ} ({[getattr(cfg, k) for k in differ]}) cannot be expressed "
            f"as Hugging Face model_type '{family}'."
        )
    return hf


def _llama_like_to_hf(cfg: ModelConfig, family: str) -> dict[str, Any]:
    rope = {"rope_type": "default", "rope_theta": cfg.rope_theta}
    if cfg.rope_scaling == "llama3":
        rope.update(
            rope_type="llama3",
            factor=cfg.rope_factor,
            low_freq_factor=cfg.rope_low_freq_factor,
            high_freq_factor=cfg.rope_high_freq_factor,
            original_max_position_embeddings=cfg.rope_original_max_len,
        )
    hf = dict(
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
        rope_parameters=rope,
        hidden_act=_ACTIVATIONS_BACK[cfg.activation],
    )
    if family != "qwen2":
        hf["attention_bias"] = cfg.qkv_bias
    if family == "llama":
        hf["mlp_bias"] = cfg.mlp_bias
    if family == "gemma2":
        hf.update(
            hidden_activation=hf["hidden_act"],
            query_pre_attn_scalar=_number(cfg.query_scale or cfg.head_dim),
            attn_logit_softcapping=cfg.attn_softcap or None,
            final_logit_softcapping=cfg.final_softcap or None,
            sliding_window=cfg.sliding_window or None,
            layer_types=[
                "full_attention" if cfg.is_global_layer(i) else "sliding_attention"
                for i in range(cfg.num_layers)
            ],
        )
    return hf


def _number(x: float) -> int | float:
    """x as an int when it is one (transformers checks int-typed fields)."""
    return int(x) if float(x).is_integer() else x


def _t5_to_hf(cfg: ModelConfig) -> dict[str, Any]:
    act = {"gelu_tanh": "gelu", "gelu": "gelu", "relu": "relu", "silu": "silu"}[cfg.activation]
    if cfg.gated_mlp and cfg.activation == "gelu":
        raise ValueError(
            "model.activation='gelu' (erf) in a gated T5 MLP cannot be expressed in Hugging Face T5 "
            "(its 'gated-gelu' is the tanh form); accepted: gelu_tanh."
        )
    return dict(
        vocab_size=cfg.vocab_size,
        d_model=cfg.embed_dim,
        d_kv=cfg.head_dim,
        d_ff=cfg.mlp_dim,
        num_layers=cfg.encoder_layers,
        num_decoder_layers=cfg.num_layers,
        num_heads=cfg.num_heads,
        relative_attention_num_buckets=cfg.relative_buckets,
        relative_attention_max_distance=cfg.relative_max_distance,
        layer_norm_epsilon=cfg.norm_eps,
        feed_forward_proj=("gated-" if cfg.gated_mlp else "") + act,
        tie_word_embeddings=cfg.tie_embeddings,
        is_encoder_decoder=True,
        decoder_start_token_id=cfg.decoder_start_id,
        pad_token_id=0,
        eos_token_id=1,
        n_positions=cfg.max_len,
    )


def _gpt2_to_hf(cfg: ModelConfig) -> dict[str, Any]:
    return dict(
        vocab_size=cfg.vocab_size,
        n_embd=cfg.embed_dim,
        n_layer=cfg.num_layers,
        n_head=cfg.num_heads,
        n_inner=cfg.mlp_dim,
        n_positions=cfg.max_len,
        layer_norm_epsilon=cfg.norm_eps,
        activation_function=_GPT2_ACTIVATIONS[cfg.activation],
        tie_word_embeddings=cfg.tie_embeddings,
    )


# ---------------------------------------------------------------------------------------------
# Tensors


def read_config(path: str | Path) -> dict[str, Any]:
    """The config.json dict of a Hugging Face checkpoint folder."""
    return _read_config(Path(path))


def _read_config(folder: Path) -> dict[str, Any]:
    if not (folder / "config.json").is_file():
        raise ValueError(f"{str(folder)!r} is not a Hugging Face checkpoint folder: it has no config.json.")
    return json.loads((folder / "config.json").read_text())


def _shard_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return [folder / name for name in sorted(set(weight_map.values()))]
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ValueError(f"{str(folder)!r} has no *.safetensors file (other weight formats are not read).")
    return files


class _Tensors:
    """Name -> numpy float32 tensor over the safetensors files of a folder, read one at a time."""

    def __init__(self, files: list[Path], stack: ExitStack):
        self.where: dict[str, tuple[Path, Any]] = {}
        for file in files:
            handle = stack.enter_context(safe_open(str(file), framework="numpy"))
            self.where.update({name: (file, handle) for name in handle.keys()})

    def get(self, name: str) -> np.ndarray:
        file, handle = self.where[name]
        if handle.get_slice(name).get_dtype() == "BF16":
            return _read_bfloat16(file, name)
        return handle.get_tensor(name).astype(np.float32)


def _read_bfloat16(file: Path, name: str) -> np.ndarray:
    """A bfloat16 tensor as float32 (numpy has no bfloat16): its bits are the top half of a float32's."""
    with open(file, "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        entry = json.loads(f.read(header_len))[name]
    start, end = entry["data_offsets"]
    raw = np.memmap(file, np.uint16, "r", offset=8 + header_len + start, shape=((end - start) // 2,))
    return (raw.astype(np.uint32) << 16).view(np.float32).reshape(entry["shape"])


def _split_sizes(cfg: ModelConfig, ours: tuple[str, ...]) -> list[int]:
    return [(cfg.num_heads if name.endswith("q") else cfg.num_kv_heads) * cfg.head_dim for name in ours]


def _hf_shape(name: str, shape: tuple[int, ...], layout: str) -> tuple[int, ...]:
    """The Hugging Face shape of one jirl tensor (per layer) under `layout`."""
    if layout in ("vector", "table"):
        return (math.prod(shape),) if layout == "vector" else shape
    fan_in = 2 if name in ("wo", "wco") else 1  # wo is [heads, head_dim, D]
    two_d = (math.prod(shape[:fan_in]), math.prod(shape[fan_in:]))
    return two_d[::-1] if layout == "linear" else two_d


def _to_jirl(hf_BC: np.ndarray, names: tuple[str, ...], shapes: list[tuple[int, ...]], layout: str, cfg):
    """One Hugging Face tensor -> the jirl tensor(s) `names` of per-layer `shapes`."""
    if layout == "linear":
        hf_BC = hf_BC.T
    if len(names) == 1:
        return [hf_BC.reshape(shapes[0])]
    parts = np.split(hf_BC, np.cumsum(_split_sizes(cfg, names))[:-1], axis=-1)
    return [part.reshape(shape) for part, shape in zip(parts, shapes)]


def _from_jirl(arrays: list[np.ndarray], names: tuple[str, ...], layout: str) -> np.ndarray:
    """The jirl tensor(s) `names` (per layer) -> one Hugging Face tensor."""
    flat = [_flatten(a, n, layout) for a, n in zip(arrays, names)]
    out = flat[0] if len(flat) == 1 else np.concatenate(flat, axis=-1)
    return np.ascontiguousarray(out.T if layout == "linear" else out, dtype=np.float32)


def _flatten(a: np.ndarray, name: str, layout: str) -> np.ndarray:
    if layout == "vector":
        return a.reshape(-1)
    if layout == "table":
        return a
    return a.reshape(_hf_shape(name, a.shape, "conv1d"))


def _rows(cfg: ModelConfig, family: str, shapes: dict[str, Any]):
    """(HF name, jirl names, layout, layer group or None, layer index or None) for every tensor of `cfg`.

    A layer group is the params key of stacked layers: "layers" (decoders), "encoder"/"decoder" (T5).
    """
    for hf_name, ours, layout, *group in TABLES[family]:
        names = (ours,) if isinstance(ours, str) else ours
        group = (group[0] if group else "layers") if "{i}" in hf_name else None
        have = shapes[group] if group else shapes
        if not all(name in have for name in names) or not _applies(hf_name, cfg):
            continue
        count = cfg.encoder_layers if group == "encoder" else cfg.num_layers
        for i in range(count) if group else [None]:
            yield hf_name.format(i=i), names, layout, group, i


def _applies(hf_name: str, cfg: ModelConfig) -> bool:
    """T5's MLP input is `wi` ungated, `wi_0`/`wi_1` gated; both would map to w_up."""
    if hf_name.endswith("DenseReluDense.wi.weight"):
        return not cfg.gated_mlp
    if hf_name.endswith("DenseReluDense.wi_1.weight"):
        return cfg.gated_mlp
    return True


def _abstract_params(cfg: ModelConfig) -> dict[str, Any]:
    return nnx.to_pure_dict(nnx.state(nnx.eval_shape(lambda: models.model_class(cfg)(cfg, rngs=nnx.Rngs(0)))))


_GROUPS = ("layers", "encoder", "decoder")


def _resolve(name: str, available: dict[str, Any]) -> str | None:
    """`name`, or `name` without its first component (a base model saved without its head)."""
    if name in available:
        return name
    short = name.split(".", 1)[1]
    return short if short in available else None


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
    hf = _read_config(folder)
    cfg = config or config_from_hf(hf)
    family = hf.get("model_type")
    if family not in FAMILIES:
        raise ValueError(f"Hugging Face model_type {family!r} is not supported; accepted: {list(FAMILIES)}.")
    shapes = _abstract_params(cfg)
    with ExitStack() as stack:
        tensors = _Tensors(_shard_files(folder), stack)
        used = set()
        buffers: dict[tuple[bool, str], np.ndarray] = {}  # (in a layer, name) -> float32 array
        for hf_name, names, layout, group, i in _rows(cfg, family, shapes):
            name = _resolve(hf_name, tensors.where)
            if name is None:
                raise ValueError(f"checkpoint {str(folder)!r} has no tensor {hf_name!r}.")
            used.add(name)
            _fill(tensors.get(name), name, names, layout, group, i, cfg, shapes, buffers)
        unused = [n for n in tensors.where if n not in used and not _ignorable(n, cfg)]
        if unused:
            raise ValueError(
                f"checkpoint tensors {sorted(unused)[:5]} have no place in a jirl '{family}' model."
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


# T5 checkpoints may carry the shared table again under each stack's name.
_T5_COPIES = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")


def _ignorable(name: str, cfg: ModelConfig) -> bool:
    return (
        name.endswith(_BUFFERS)
        or (cfg.tie_embeddings and name.endswith("lm_head.weight"))
        or (cfg.is_encoder_decoder and name in _T5_COPIES)
    )


def _fill(tensor, hf_name, names, layout, group_key, layer, cfg, shapes, buffers) -> None:
    """Checks one HF tensor's shape and writes it into the (stacked) numpy buffers of `names`."""
    group = shapes[group_key] if layer is not None else shapes
    per_layer = [tuple(group[n].shape[1:] if layer is not None else group[n].shape) for n in names]
    hf_parts = [_hf_shape(n, s, layout) for n, s in zip(names, per_layer)]
    expected = hf_parts[0] if len(names) == 1 else (*hf_parts[0][:-1], sum(p[-1] for p in hf_parts))
    if tuple(tensor.shape) != tuple(expected):
        raise ValueError(f"tensor {hf_name!r} has shape {tuple(tensor.shape)}, expected {tuple(expected)}.")
    for name, value in zip(names, _to_jirl(tensor, names, per_layer, layout, cfg)):
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
    cfg = config_from_hf(_read_config(Path(path)), **overrides)
    cfg, params = load_params(path, cfg)
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: models.model_class(cfg)(cfg, rngs=nnx.Rngs(0))))
    return nnx.merge(graphdef, params)


def save(
    params: dict[str, Any], config: ModelConfig, path: str | Path, model_type: str | None = None
) -> None:
    """Writes `path`/config.json and `path`/model.safetensors (float32) that transformers loads.

    `model_type` defaults to `family_of(config)`.
    """
    hf = config_to_hf(config, model_type)
    family = hf["model_type"]
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, np.ndarray] = {}
    for hf_name, names, layout, group_key, i in _rows(config, family, _abstract_params(config)):
        group = params[group_key] if i is not None else params
        arrays = [np.asarray(group[n][i] if i is not None else group[n], np.float32) for n in names]
        tensors[hf_name] = _from_jirl(arrays, names, layout)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(hf, indent=2, sort_keys=True) + "\n")
