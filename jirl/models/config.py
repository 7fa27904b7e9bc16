"""Model configuration and named presets."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax

from jirl.errors import ConfigError

DTYPES = ("float32", "bfloat16")
REMAT_POLICIES = ("none", "full", "dots")
ROPE_SCALINGS = ("none", "llama3", "linear")
POSITION_EMBEDDINGS = ("rope", "learned", "relative")
NORMS = ("rms", "rms_plus_one", "layer")
ACTIVATIONS = ("silu", "gelu_tanh", "gelu", "relu")
ATTENTIONS = ("auto", "blocked", "dense")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """A Llama-style decoder: RMSNorm, RoPE, SwiGLU, grouped-query attention.

    The options after `attention` describe other decoder families (Qwen2/3, Gemma 1/2/3, GPT-2; see
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
    scan_layers: bool | None = None  # one lax.scan over the layers; None: `scans_layers` decides
    attention: str = "auto"  # causal self-attention: blocked | dense | auto (`attention_form` decides)
    # RoPE frequency scaling. llama3 (Llama 3): inv_freq / factor at long wavelengths, smoothly
    # interpolated; linear (Gemma 3's global layers): every inv_freq / factor (positions / factor).
    rope_scaling: str = "none"  # none | llama3 | linear
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
    qk_norm: bool = False  # the config's norm on each query and key head (over head_dim), before RoPE (Qwen3)
    # Gemma 2.
    query_scale: float = 0.0  # q scaled by query_scale^-1/2; 0: head_dim^-1/2
    attn_softcap: float = 0.0  # attention logits s -> c tanh(s / c); 0: off
    final_softcap: float = 0.0  # output logits z -> c tanh(z / c); 0: off
    post_norms: bool = False  # norms on the attention and MLP outputs before each residual add
    sliding_window: int = 0  # attend to the last `sliding_window` slots only; 0: off
    sliding_pattern: int = 2  # with a window: the last layer of every `sliding_pattern` layers is global
    # Gemma 3: the sliding-window layers' own RoPE, theta^(-2i/D) with this base and no scaling (the
    # global layers keep rope_theta and rope_scaling); 0: every layer has the same RoPE.
    rope_local_theta: float = 0.0
    # T5 encoder-decoder (jirl.models.t5): encoder_layers > 0 adds an encoder of that many layers and
    # cross-attention to every decoder layer (num_layers); positions are T5's relative buckets.
    encoder_layers: int = 0
    relative_buckets: int = 32  # buckets of relative distance (half per direction in the encoder)
    relative_max_distance: int = 128  # distances >= this share the last bucket
    decoder_start_id: int = 0  # the token the decoder starts from (T5: the pad id, 0)

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ConfigError(f"model.dtype='{self.dtype}' is not supported; accepted: {list(DTYPES)}.")
        if self.remat not in REMAT_POLICIES:
            raise ConfigError(
                f"model.remat='{self.remat}' is not supported; accepted: {list(REMAT_POLICIES)}."
            )
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(
                f"model.num_heads={self.num_heads} must be a multiple of "
                f"model.num_kv_heads={self.num_kv_heads}."
            )
        for key, accepted in [
            ("rope_scaling", ROPE_SCALINGS),
            ("position_embedding", POSITION_EMBEDDINGS),
            ("norm", NORMS),
            ("activation", ACTIVATIONS),
            ("attention", ATTENTIONS),
        ]:
            if getattr(self, key) not in accepted:
                raise ConfigError(
                    f"model.{key}='{getattr(self, key)}' is not supported; accepted: {list(accepted)}."
                )

        if self.qk_norm and self.norm == "layer":
            raise ConfigError(
                "model.qk_norm=True is not supported with model.norm='layer'; "
                "accepted: norm 'rms' or 'rms_plus_one'."
            )
        if self.rope_local_theta < 0:
            raise ConfigError(
                f"model.rope_local_theta={self.rope_local_theta} must be >= 0 (0: the global layers' RoPE)."
            )
        if self.sliding_window > 0 and self.sliding_pattern < 1:
            raise ConfigError(f"model.sliding_pattern={self.sliding_pattern} must be >= 1.")
        if self.encoder_layers < 0:
            raise ConfigError(f"model.encoder_layers={self.encoder_layers} must be >= 0 (0: decoder-only).")
        if (self.encoder_layers > 0) != (self.position_embedding == "relative"):
            raise ConfigError(
                "model.position_embedding='relative' (T5 buckets) goes with an encoder-decoder "
                f"(model.encoder_layers > 0) and only with one; got position_embedding="
                f"'{self.position_embedding}' and encoder_layers={self.encoder_layers}."
            )
        if self.encoder_layers > 0:
            for key in ("post_norms", "sliding_window", "attn_softcap", "final_softcap", "qkv_bias",
                        "out_bias", "mlp_bias", "embed_scale", "qk_norm", "rope_local_theta"):  # fmt: skip
                if getattr(self, key):
                    raise ConfigError(
                        f"model.{key}={getattr(self, key)!r} is not supported in a T5 encoder-decoder "
                        "(model.encoder_layers > 0); accepted: its default."
                    )
            if self.norm != "rms":
                raise ConfigError(
                    f"model.norm='{self.norm}' is not supported in a T5 encoder-decoder; accepted: 'rms'."
                )

    def scans_layers(self, platform: str | None = None) -> bool:
        """Whether the layers run as one `lax.scan` (one compiled layer, fast compiles) or unrolled.

        `scan_layers` when set; when None, scan on accelerators and unroll on CPU (`platform`,
        default the default backend's), where XLA:CPU runs the scanned train step about 25%
        slower: it copies each layer's residuals and gradients into and out of [L, ...] buffers
        and runs fewer independent operations side by side.
        """
        if self.scan_layers is not None:
            return self.scan_layers
        return (platform or jax.default_backend()) != "cpu"

    def attention_form(self, platform: str | None = None) -> str:
        """How the decoder's causal self-attention over a whole sequence runs: `attention`, or for
        "auto" blocked on CPU (`models.blocked_attention`: 13% of the train step saved on the
        shapes of `benchmarks/peer_step.py`) and dense on accelerators, whose compilers fuse the
        dense form (and where a fused kernel is what would replace it; not measured here).
        """
        if self.attention != "auto":
            return self.attention
        return "blocked" if (platform or jax.default_backend()) == "cpu" else "dense"

    def for_platform(self, platform: str) -> ModelConfig:
        """This config with `scan_layers` and `attention` fixed for the devices it compiles for."""
        return dataclasses.replace(
            self, scan_layers=self.scans_layers(platform), attention=self.attention_form(platform)
        )

    @property
    def is_encoder_decoder(self) -> bool:
        return self.encoder_layers > 0

    def is_global_layer(self, layer: int) -> bool:
        """Whether `layer` attends to all earlier slots (always, unless a sliding window is set)."""
        return self.sliding_window <= 0 or layer % self.sliding_pattern == self.sliding_pattern - 1

    def num_params(self) -> int:
        """Parameter count (exact for this architecture)."""
        d, f, h, k, hd = self.embed_dim, self.mlp_dim, self.num_heads, self.num_kv_heads, self.head_dim
        norm = 2 * d if self.norm == "layer" else d
        per_layer = (4 if self.post_norms else 2) * norm + d * h * hd + 2 * d * k * hd + h * hd * d
        per_layer += (3 if self.gated_mlp else 2) * d * f
        per_layer += self.qkv_bias * (h + 2 * k) * hd + self.out_bias * d + self.qk_norm * 2 * hd
        per_layer += self.mlp_bias * ((2 if self.gated_mlp else 1) * f + d)
        embeddings = self.vocab_size * d * (1 if self.tie_embeddings else 2)
        positions = self.max_len * d if self.position_embedding == "learned" else 0
        if self.encoder_layers:  # T5: + cross-attention per decoder layer, bias tables, encoder norm
            cross = norm + d * h * hd + 2 * d * k * hd + h * hd * d
            tables = 2 * self.relative_buckets * h
            return (
                (self.encoder_layers + self.num_layers) * per_layer
                + self.num_layers * cross
                + (embeddings + tables + 2 * norm)
            )
        return self.num_layers * per_layer + embeddings + positions + norm


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
