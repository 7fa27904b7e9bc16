"""Model configuration and named presets."""

from __future__ import annotations

import dataclasses
from typing import Any

DTYPES = ("float32", "bfloat16")
REMAT_POLICIES = ("none", "full", "dots")
ROPE_SCALINGS = ("none", "llama3")
POSITION_EMBEDDINGS = ("rope", "learned")
NORMS = ("rms", "rms_plus_one", "layer")
ACTIVATIONS = ("silu", "gelu_tanh", "gelu")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """A Llama-style decoder: RMSNorm, RoPE, SwiGLU, grouped-query attention.

    The options after `scan_layers` describe other decoder families (Qwen2, Gemma 1/2, GPT-2; see
    jirl.models.hf); their defaults are the Llama decoder.
    """

    vocab_size: int
    embed_dim: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    mlp_dim: int
    max_len: int
    rope_theta: float = 10_000.0
    norm_eps: float = 1e-6
    tie_embeddings: bool = False
    dtype: str = "float32"  # compute dtype; parameters stay float32
    remat: str = "none"  # none | full | dots
    scan_layers: bool = True
    # RoPE frequency scaling of Llama 3: inv_freq / factor at long wavelengths, smoothly interpolated.
    rope_scaling: str = "none"  # none | llama3
    rope_factor: float = 8.0
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_original_max_len: int = 8192
    position_embedding: str = "rope"  # rope | learned (GPT-2: a [max_len, D] table added to the embeddings)
    norm: str = "rms"  # rms: x_hat * w | rms_plus_one: x_hat * (1 + w) (Gemma) | layer: LayerNorm with bias
    activation: str = "silu"  # silu | gelu_tanh | gelu (erf)
    gated_mlp: bool = True  # down(act(x W_gate) * (x W_up)); False: down(act(x W_up)) (GPT-2)
    qkv_bias: bool = False  # biases on q, k, v (Qwen2, GPT-2)
    out_bias: bool = False  # bias on the attention output projection (GPT-2)
    mlp_bias: bool = False  # biases on the MLP projections (GPT-2)
    embed_scale: bool = False  # embeddings times sqrt(embed_dim) (Gemma)
    # Gemma 2.
    query_scale: float = 0.0  # q scaled by query_scale^-1/2; 0: head_dim^-1/2
    attn_softcap: float = 0.0  # attention logits s -> c tanh(s / c); 0: off
    final_softcap: float = 0.0  # output logits z -> c tanh(z / c); 0: off
    post_norms: bool = False  # norms on the attention and MLP outputs before each residual add
    sliding_window: int = 0  # attend to the last `sliding_window` slots only; 0: off
    sliding_pattern: int = 2  # with a window: the last layer of every `sliding_pattern` layers is global

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"model.dtype='{self.dtype}' is not supported; accepted: {list(DTYPES)}.")
        if self.remat not in REMAT_POLICIES:
            raise ValueError(
                f"model.remat='{self.remat}' is not supported; accepted: {list(REMAT_POLICIES)}."
            )
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"model.num_heads={self.num_heads} must be a multiple of "
                f"model.num_kv_heads={self.num_kv_heads}."
            )
        for key, accepted in [
            ("rope_scaling", ROPE_SCALINGS),
            ("position_embedding", POSITION_EMBEDDINGS),
            ("norm", NORMS),
            ("activation", ACTIVATIONS),
        ]:
            if getattr(self, key) not in accepted:
                raise ValueError(
                    f"model.{key}='{getattr(self, key)}' is not supported; accepted: {list(accepted)}."
                )

    def is_global_layer(self, layer: int) -> bool:
        """Whether `layer` attends to all earlier slots (always, unless a sliding window is set)."""
        return self.sliding_window <= 0 or layer % self.sliding_pattern == self.sliding_pattern - 1

    def num_params(self) -> int:
        """Parameter count (exact for this architecture)."""
        d, f, h, k, hd = self.embed_dim, self.mlp_dim, self.num_heads, self.num_kv_heads, self.head_dim
        norm = 2 * d if self.norm == "layer" else d
        per_layer = (4 if self.post_norms else 2) * norm + d * h * hd + 2 * d * k * hd + h * hd * d
        per_layer += (3 if self.gated_mlp else 2) * d * f
        per_layer += self.qkv_bias * (h + 2 * k) * hd + self.out_bias * d
        per_layer += self.mlp_bias * ((2 if self.gated_mlp else 1) * f + d)
        embeddings = self.vocab_size * d * (1 if self.tie_embeddings else 2)
        positions = self.max_len * d if self.position_embedding == "learned" else 0
        return self.num_layers * per_layer + embeddings + positions + norm


PRESETS: dict[str, dict[str, Any]] = {
    # Unit tests: a few thousand parameters.
    "tiny": dict(
        vocab_size=259,
        embed_dim=32,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=8,
        mlp_dim=64,
        max_len=256,
    ),
    # The demo on CPU: about 1M parameters, byte vocabulary.
    "small": dict(
        vocab_size=259,
        embed_dim=160,
        num_layers=4,
        num_heads=4,
        num_kv_heads=2,
        head_dim=40,
        mlp_dim=432,
        max_len=256,
    ),
    # Shape-only presets for planning (Llama-3.2-1B-like and Llama-2-7B-like).
    "llama_1b": dict(
        vocab_size=128_256,
        embed_dim=2048,
        num_layers=16,
        num_heads=32,
        num_kv_heads=8,
        head_dim=64,
        mlp_dim=8192,
        max_len=2048,
        rope_theta=500_000.0,
        norm_eps=1e-5,
        tie_embeddings=True,
    ),
    "llama_7b": dict(
        vocab_size=32_000,
        embed_dim=4096,
        num_layers=32,
        num_heads=32,
        num_kv_heads=32,
        head_dim=128,
        mlp_dim=11_008,
        max_len=2048,
        norm_eps=1e-5,
    ),
}


def get_config(preset: str, **overrides: Any) -> ModelConfig:
    """The named preset with `overrides` applied (e.g. dtype='bfloat16', remat='full')."""
    if preset not in PRESETS:
        raise ValueError(f"unknown model preset '{preset}'; accepted: {sorted(PRESETS)}.")
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"model has no option(s) {unknown}; accepted: {sorted(fields)}.")
    return ModelConfig(**{**PRESETS[preset], **overrides})
