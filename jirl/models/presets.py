"""Named model presets: `get_config(name, **overrides)`, from the unit-test `tiny` to 8B decoders.

Each preset is a dict of `ModelConfig` fields; the published models' shapes follow their
config.json (parameter counts: `ModelConfig.num_params`, shown by `jirl plan`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from jirl.errors import ConfigError
from jirl.models.config import ModelConfig

# T5 v1.1 / Flan-T5: gated GELU (tanh), untied output, relative buckets, unscaled attention.
_T5_V1_1 = dict(
    vocab_size=32_128,
    head_dim=64,
    max_len=512,
    position_embedding="relative",
    activation="gelu_tanh",
    query_scale=1.0,
    relative_buckets=32,
    relative_max_distance=128,
)

# Gemma 3's shared options (gemma-3-*/config.json; query_pre_attn_scalar 256 = head_dim).
_GEMMA3 = dict(
    head_dim=256,
    rope_theta=1_000_000.0,
    rope_local_theta=10_000.0,
    tie_embeddings=True,
    norm="rms_plus_one",
    activation="gelu_tanh",
    embed_scale=True,
    post_norms=True,
    qk_norm=True,
    sliding_pattern=6,
)

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
    # A T5 v1.1-layout encoder-decoder for tests and CPU runs (byte vocabulary, decoder starts at pad 0).
    "t5_tiny": dict(
        _T5_V1_1,
        vocab_size=259,
        embed_dim=32,
        encoder_layers=2,
        num_layers=2,
        num_heads=4,
        num_kv_heads=4,
        head_dim=8,
        mlp_dim=64,
        max_len=256,
    ),
    # Shape-only presets of public checkpoints (for `jirl plan`; `model.init_from` loads the weights).
    "llama3_8b": dict(
        vocab_size=128_256,
        embed_dim=4096,
        num_layers=32,
        num_heads=32,
        num_kv_heads=8,
        head_dim=128,
        mlp_dim=14_336,
        max_len=8192,
        rope_theta=500_000.0,
        norm_eps=1e-5,
    ),
    "gemma2_2b": dict(
        vocab_size=256_000,
        embed_dim=2304,
        num_layers=26,
        num_heads=8,
        num_kv_heads=4,
        head_dim=256,
        mlp_dim=9216,
        max_len=8192,
        tie_embeddings=True,
        norm="rms_plus_one",
        activation="gelu_tanh",
        embed_scale=True,
        post_norms=True,
        attn_softcap=50.0,
        final_softcap=30.0,
        sliding_window=4096,
    ),
    # Gemma 3: Gemma 2's layout with q/k norms, a 5:1 local:global pattern, the local layers' own RoPE base.
    "gemma3_1b": dict(_GEMMA3, vocab_size=262_144, embed_dim=1152, num_layers=26, num_heads=4,
                      num_kv_heads=1, mlp_dim=6912, max_len=32_768, sliding_window=512),
    # The text model of Gemma 3 4B (the checkpoint adds a SigLIP vision tower): linear RoPE scaling, factor 8.
    "gemma3_4b": dict(_GEMMA3, vocab_size=262_208, embed_dim=2560, num_layers=34, num_heads=8,
                      num_kv_heads=4, mlp_dim=10_240, max_len=131_072, sliding_window=1024,
                      rope_scaling="linear", rope_factor=8.0),
    "qwen2_7b": dict(
        vocab_size=152_064,
        embed_dim=3584,
        num_layers=28,
        num_heads=28,
        num_kv_heads=4,
        head_dim=128,
        mlp_dim=18_944,
        max_len=32_768,
        rope_theta=1_000_000.0,
        qkv_bias=True,
    ),
    "qwen3_0_6b": dict(
        vocab_size=151_936,
        embed_dim=1024,
        num_layers=28,
        num_heads=16,
        num_kv_heads=8,
        head_dim=128,
        mlp_dim=3072,
        max_len=40_960,
        rope_theta=1_000_000.0,
        tie_embeddings=True,
        qk_norm=True,
    ),
    "qwen3_8b": dict(
        vocab_size=151_936,
        embed_dim=4096,
        num_layers=36,
        num_heads=32,
        num_kv_heads=8,
        head_dim=128,
        mlp_dim=12_288,
        max_len=40_960,
        rope_theta=1_000_000.0,
        qk_norm=True,
    ),
    "llama3_2_1b": dict(
        vocab_size=128_256,
        embed_dim=2048,
        num_layers=16,
        num_heads=32,
        num_kv_heads=8,
        head_dim=64,
        mlp_dim=8192,
        max_len=131_072,
        rope_theta=500_000.0,
        norm_eps=1e-5,
        tie_embeddings=True,
        rope_scaling="llama3",
        rope_factor=32.0,
        rope_low_freq_factor=1.0,
        rope_high_freq_factor=4.0,
        rope_original_max_len=8192,
    ),
    "gpt2_124m": dict(
        vocab_size=50_257,
        embed_dim=768,
        num_layers=12,
        num_heads=12,
        num_kv_heads=12,
        head_dim=64,
        mlp_dim=3072,
        max_len=1024,
        norm_eps=1e-5,
        tie_embeddings=True,
        position_embedding="learned",
        norm="layer",
        activation="gelu_tanh",
        gated_mlp=False,
        qkv_bias=True,
        out_bias=True,
        mlp_bias=True,
    ),
    "t5_base": dict(_T5_V1_1, embed_dim=768, encoder_layers=12, num_layers=12, num_heads=12,
                    num_kv_heads=12, mlp_dim=2048),
    "t5_large": dict(_T5_V1_1, embed_dim=1024, encoder_layers=24, num_layers=24, num_heads=16,
                     num_kv_heads=16, mlp_dim=2816),
    "t5_xl": dict(_T5_V1_1, embed_dim=2048, encoder_layers=24, num_layers=24, num_heads=32,
                  num_kv_heads=32, mlp_dim=5120),
}  # fmt: skip


def get_config(preset: str, **overrides: Any) -> ModelConfig:
    """The named preset with `overrides` applied (e.g. dtype='bfloat16', remat='full')."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown model preset '{preset}'; accepted: {sorted(PRESETS)}.")
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ConfigError(f"model has no option(s) {unknown}; accepted: {sorted(fields)}.")
    return ModelConfig(**{**PRESETS[preset], **overrides})
