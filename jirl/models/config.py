"""Model configuration and named presets."""

from __future__ import annotations

import dataclasses
from typing import Any

DTYPES = ("float32", "bfloat16")
REMAT_POLICIES = ("none", "full", "dots")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """A Llama-style decoder: RMSNorm, RoPE, SwiGLU, grouped-query attention."""

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

    def num_params(self) -> int:
        """Parameter count (exact for this architecture)."""
        d, f, h, k, hd = self.embed_dim, self.mlp_dim, self.num_heads, self.num_kv_heads, self.head_dim
        per_layer = 2 * d + d * h * hd + 2 * d * k * hd + h * hd * d + 3 * d * f
        embeddings = self.vocab_size * d * (1 if self.tie_embeddings else 2)
        return self.num_layers * per_layer + embeddings + d


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
