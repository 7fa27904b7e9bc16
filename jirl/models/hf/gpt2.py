"""GPT-2: learned positions, LayerNorm with biases, an ungated MLP, biases everywhere.

Its Conv1D weights are [in, out] (not torch's Linear [out, in]); `c_attn` holds q, k and v side by
side as one [D, 3 * H * Dh] matrix, split into jirl's wq, wk, wv ("conv1d" layout).
"""

from __future__ import annotations

from typing import Any

from jirl.models.config import ModelConfig
from jirl.models.hf.family import Family, activation, activation_name, require

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
# jirl's activation names -> Hugging Face's, as GPT-2 spells them.
_ACTIVATIONS_BACK = {"gelu_tanh": "gelu_new", "gelu": "gelu", "silu": "silu"}


def _read(hf: dict[str, Any]) -> dict[str, Any]:
    require(hf, "scale_attn_weights", (True,))
    require(hf, "scale_attn_by_inverse_layer_idx", (False,))
    require(hf, "add_cross_attention", (False,))
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
        activation=activation(hf, "activation_function", "gelu_new"),
        gated_mlp=False,
        qkv_bias=True,
        out_bias=True,
        mlp_bias=True,
    )


def _write(cfg: ModelConfig) -> dict[str, Any]:
    return dict(
        vocab_size=cfg.vocab_size,
        n_embd=cfg.embed_dim,
        n_layer=cfg.num_layers,
        n_head=cfg.num_heads,
        n_inner=cfg.mlp_dim,
        n_positions=cfg.max_len,
        layer_norm_epsilon=cfg.norm_eps,
        activation_function=activation_name(_ACTIVATIONS_BACK, cfg, "gpt2"),
        tie_word_embeddings=cfg.tie_embeddings,
    )


GPT2 = Family(
    model_type="gpt2",
    architecture="GPT2LMHeadModel",
    read_config=_read,
    write_config=_write,
    table=GPT2_TABLE,
    claims=lambda cfg: cfg.position_embedding == "learned",
)
