"""T5 v1.1 / Flan-T5 ("gated-gelu", untied) and the original T5 ("relu", tied) as jirl's
encoder-decoder.

Per-layer names live in params["encoder"] / params["decoder"] (the rows' 4th field). T5 keeps each
stack's relative position bias table [buckets, H] in its layer 0 only, and does not scale q k^T.
"""

from __future__ import annotations

from typing import Any

from jirl.errors import ConfigError
from jirl.models.config import ModelConfig
from jirl.models.hf.family import Family, activation_name, refuse, require

_ENC, _DEC = "encoder.block.{i}.layer.", "decoder.block.{i}.layer."
_ATTENTION = [("q", "wq"), ("k", "wk"), ("v", "wv"), ("o", "wo")]
_MLP = [("wi_0", "w_gate"), ("wi_1", "w_up"), ("wi", "w_up"), ("wo", "w_down")]
T5_TABLE = [
    ("shared.weight", "embed", "table"),
    ("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", "encoder_bias", "table"),
    ("decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", "decoder_bias", "table"),
    *[(_ENC + f"0.SelfAttention.{hf}.weight", ours, "linear", "encoder") for hf, ours in _ATTENTION],
    (_ENC + "0.layer_norm.weight", "attn_norm", "vector", "encoder"),
    *[(_ENC + f"1.DenseReluDense.{hf}.weight", ours, "linear", "encoder") for hf, ours in _MLP],
    (_ENC + "1.layer_norm.weight", "mlp_norm", "vector", "encoder"),
    ("encoder.final_layer_norm.weight", "encoder_norm", "vector"),
    *[(_DEC + f"0.SelfAttention.{hf}.weight", ours, "linear", "decoder") for hf, ours in _ATTENTION],
    (_DEC + "0.layer_norm.weight", "attn_norm", "vector", "decoder"),
    *[
        (_DEC + f"1.EncDecAttention.{hf}.weight", "wc" + ours[1:], "linear", "decoder")
        for hf, ours in _ATTENTION
    ],
    (_DEC + "1.layer_norm.weight", "cross_norm", "vector", "decoder"),
    *[(_DEC + f"2.DenseReluDense.{hf}.weight", ours, "linear", "decoder") for hf, ours in _MLP],
    (_DEC + "2.layer_norm.weight", "mlp_norm", "vector", "decoder"),
    ("decoder.final_layer_norm.weight", "final_norm", "vector"),
    ("lm_head.weight", "unembed", "linear"),
]
# Hugging Face T5 activation names (the last part of feed_forward_proj) -> jirl's.
_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu": "gelu", "relu": "relu", "silu": "silu"}
_ACTIVATIONS_BACK = {"gelu_tanh": "gelu", "gelu": "gelu", "relu": "relu", "silu": "silu"}


def _read(hf: dict[str, Any]) -> dict[str, Any]:
    require(hf, "is_encoder_decoder", (True,))
    projection = hf.get("feed_forward_proj", "relu")
    parts = projection.split("-")
    gated = parts[0] == "gated" and len(parts) == 2
    act = "gelu_new" if projection == "gated-gelu" else parts[-1]  # T5's gated-gelu is the tanh form
    if act not in _ACTIVATIONS or (len(parts) == 2 and not gated) or len(parts) > 2:
        refuse("feed_forward_proj", projection, ["relu", "gelu", "gated-gelu", "gated-silu", "gated-relu"])
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
        activation=_ACTIVATIONS[act],
        gated_mlp=gated,
        decoder_start_id=int(hf.get("decoder_start_token_id") or 0),
        query_scale=1.0,  # T5 does not scale q k^T
    )


def _write(cfg: ModelConfig) -> dict[str, Any]:
    act = activation_name(_ACTIVATIONS_BACK, cfg, "t5")
    if cfg.gated_mlp and cfg.activation == "gelu":
        raise ConfigError(
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


def _keeps_row(hf_name: str, cfg: ModelConfig) -> bool:
    """The MLP input is `wi` ungated, `wi_0`/`wi_1` gated; `wi` and `wi_1` would both map to w_up."""
    if hf_name.endswith("DenseReluDense.wi.weight"):
        return not cfg.gated_mlp
    if hf_name.endswith("DenseReluDense.wi_1.weight"):
        return cfg.gated_mlp
    return True


T5 = Family(
    model_type="t5",
    architecture="T5ForConditionalGeneration",
    read_config=_read,
    write_config=_write,
    table=T5_TABLE,
    claims=lambda cfg: cfg.is_encoder_decoder,
    keeps_row=_keeps_row,
    copies=("encoder.embed_tokens.weight", "decoder.embed_tokens.weight"),  # the shared table again
)
