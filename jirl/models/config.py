"""Model configuration: `ModelConfig`, the options every decoder family is described by (presets:
`jirl.models.presets`)."""

from __future__ import annotations

import dataclasses

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
