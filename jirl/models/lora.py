"""LoRA: low-rank adapters on a frozen decoder's projections (the `model.lora` block).

For a target weight W [in..., out...] (jirl's layout, e.g. wq [D, H, Dh], wo [H, Dh, D]) an adapter
is A [in..., r] and B [r, out...], and the layer computes

    y = x W + (alpha / r) dropout(x) A B,

factored (x A first, then B: the frozen W needs no gradient of its own). A starts as PEFT's
(kaiming-uniform, U(-1/sqrt(fan_in), 1/sqrt(fan_in))) and B as zeros, so step 0 is the base model.
`merge` folds an adapter into its weight, W + (alpha / r) A B (float32): what sampling, evaluation
and `jirl export` use.

Targets are named as Hugging Face and PEFT name the modules of the Llama-style families (`TARGETS`);
GPT-2 and T5 have other modules and are refused by name. The adapters are a plain pytree,
{"layers": {jirl weight name: {"a": [L, in..., r], "b": [L, r, out...]}}}, stacked on the layer axis
like the weights; their logical axes are the weight's input axes and an unsharded rank axis (A),
an unsharded rank axis and the weight's output axes (B), so the run's sharding rules place them.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp

from jirl.errors import ConfigError
from jirl.models.config import ModelConfig

# PEFT / Hugging Face module name -> the jirl weight it adapts.
TARGETS = {
    "q_proj": "wq",
    "k_proj": "wk",
    "v_proj": "wv",
    "o_proj": "wo",
    "gate_proj": "w_gate",
    "up_proj": "w_up",
    "down_proj": "w_down",
}
ATTENTION_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_TARGETS = ("gate_proj", "up_proj", "down_proj")
BASE_DTYPES = ("float32", "bfloat16")
# Weights with two input axes (wo is [heads, head_dim, D]).
FAN_IN = {"wo": 2}
DEFAULT_TARGETS = ("q_proj", "v_proj")  # PEFT's default for the Llama families


def defaults() -> dict[str, Any]:
    """The `model.lora` block's keys and defaults (rank 0: LoRA off; alpha 0: 2 x rank)."""
    return dict(rank=0, alpha=0.0, dropout=0.0, targets=DEFAULT_TARGETS, base_dtype="float32")


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    """rank r >= 1, alpha (scale alpha / r), dropout on the adapters' input, PEFT target names, and
    the dtype the frozen base is held in."""

    rank: int
    alpha: float
    dropout: float = 0.0
    targets: tuple[str, ...] = DEFAULT_TARGETS
    base_dtype: str = "float32"

    def __post_init__(self):
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ConfigError(
                f"model.lora.rank={self.rank!r} is not accepted; give an integer >= 1 (0: off)."
            )
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or self.alpha <= 0:
            raise ConfigError(f"model.lora.alpha={self.alpha!r} is not accepted; give a number > 0.")
        if (
            isinstance(self.dropout, bool)
            or not isinstance(self.dropout, (int, float))
            or not 0 <= self.dropout < 1
        ):
            raise ConfigError(
                f"model.lora.dropout={self.dropout!r} is not accepted; give a number in [0, 1)."
            )
        unknown = [t for t in self.targets if t not in TARGETS]
        if unknown:
            raise ConfigError(
                f"model.lora.targets names {unknown}, which LoRA cannot adapt; accepted: {list(TARGETS)}."
            )
        if not self.targets or len(set(self.targets)) != len(self.targets):
            raise ConfigError(
                f"model.lora.targets={list(self.targets)} is not accepted; give distinct names among "
                f"{list(TARGETS)}."
            )
        if self.base_dtype not in BASE_DTYPES:
            raise ConfigError(
                f"model.lora.base_dtype={self.base_dtype!r} is not accepted; accepted: {list(BASE_DTYPES)}."
            )

    @property
    def scale(self) -> float:
        return float(self.alpha) / self.rank

    @property
    def weights(self) -> tuple[str, ...]:
        """The jirl weight names adapted, in the targets' order."""
        return tuple(TARGETS[t] for t in self.targets)

    def check_model(self, cfg: ModelConfig) -> None:
        """Refuses targets the model does not have (GPT-2 and T5 name their modules otherwise; an
        ungated MLP has no gate_proj), by name."""
        from jirl.models.hf import families  # the family names, for the message

        family = "t5" if cfg.is_encoder_decoder else families.family_of(cfg)
        if family in ("t5", "gpt2"):
            raise ConfigError(
                f"model.lora.targets={list(self.targets)} name modules a {family} model does not have; "
                f"LoRA covers the Llama-style families' {list(TARGETS)} (Llama, Qwen, Gemma)."
            )
        have = _weight_specs(cfg)
        missing = [t for t in self.targets if TARGETS[t] not in have]
        if missing:
            accepted = [t for t in TARGETS if TARGETS[t] in have]
            raise ConfigError(
                f"model.lora.targets names {missing}, which this model does not have; accepted: {accepted}."
            )


def from_config(block: Mapping[str, Any] | None) -> LoraConfig | None:
    """The `model.lora` block checked: None when rank is 0 (off) and every other key at its default."""
    block = dict(block or {})
    accepted = defaults()
    unknown = sorted(set(block) - set(accepted))
    if unknown:
        raise ConfigError(f"model.lora has no key(s) {unknown}; accepted: {sorted(accepted)}.")
    values = {**accepted, **block}
    targets = values["targets"]
    targets = [targets] if isinstance(targets, str) else targets  # "q_proj,v_proj" too
    if not isinstance(targets, (list, tuple)):
        raise ConfigError(
            f"model.lora.targets={targets!r} is not accepted; give module names among {list(TARGETS)}, "
            "as a list or one comma-separated string."
        )
    values["targets"] = tuple(t.strip() for item in targets for t in str(item).split(",") if t.strip())
    rank = values["rank"]
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
        raise ConfigError(f"model.lora.rank={rank!r} is not accepted; give an integer >= 1 (0: LoRA off).")
    if rank == 0:
        changed = [k for k in accepted if k != "rank" and _differs(values[k], accepted[k])]
        if changed:
            key = changed[0]
            raise ConfigError(
                f"model.lora.rank=0 turns LoRA off; give a rank >= 1 to use model.lora.{key}={values[key]!r}."
            )
        return None
    alpha = values["alpha"] or 2 * rank
    return LoraConfig(rank, alpha, values["dropout"], values["targets"], values["base_dtype"])


def _differs(value: Any, default: Any) -> bool:
    return tuple(value) != tuple(default) if isinstance(default, tuple) else value != default


def _weight_specs(cfg: ModelConfig) -> dict[str, tuple[tuple[int, ...], tuple[str | None, ...]]]:
    from jirl.models.transformer import layer_specs

    return {name: (shape, axes) for name, (shape, axes, _) in layer_specs(cfg).items()}


def adapter_specs(cfg: ModelConfig, lora: LoraConfig) -> dict[str, dict[str, tuple[tuple, tuple]]]:
    """weight name -> {"a": (shape, axes), "b": (shape, axes)}, stacked on the `layers` axis."""
    specs, r, layers = _weight_specs(cfg), lora.rank, cfg.num_layers
    out = {}
    for name in lora.weights:
        shape, axes = specs[name]
        k = FAN_IN.get(name, 1)
        out[name] = {
            "a": ((layers, *shape[:k], r), ("layers", *axes[:k], None)),
            "b": ((layers, r, *shape[k:]), ("layers", None, *axes[k:])),
        }
    return out


def adapter_axes(cfg: ModelConfig, lora: LoraConfig) -> dict[str, Any]:
    """The adapters' tree with each leaf replaced by its logical axis names."""
    specs = adapter_specs(cfg, lora)
    return {"layers": {n: {ab: axes for ab, (_, axes) in s.items()} for n, s in specs.items()}}


def init_adapters(cfg: ModelConfig, lora: LoraConfig, seed: int) -> dict[str, Any]:
    """Fresh adapters: A ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (PEFT's kaiming-uniform), B = 0 (float32).

    One jit (eagerly, each draw would be a compilation of its own)."""

    def init():
        key = jax.random.key(seed)
        out = {}
        for i, (name, s) in enumerate(adapter_specs(cfg, lora).items()):
            a_shape, b_shape = s["a"][0], s["b"][0]
            bound = math.prod(a_shape[1:-1]) ** -0.5
            a = jax.random.uniform(jax.random.fold_in(key, i), a_shape, jnp.float32, -bound, bound)
            out[name] = {"a": a, "b": jnp.zeros(b_shape, jnp.float32)}
        return {"layers": out}

    return jax.jit(init)()


def delta(adapter: Mapping[str, jax.Array], scale: float) -> jax.Array:
    """(alpha / r) A B per layer, float32, shaped as the stacked weight [L, in..., out...]."""
    a, b = adapter["a"].astype(jnp.float32), adapter["b"].astype(jnp.float32)
    layers, r = a.shape[0], a.shape[-1]
    d = jnp.einsum("lir,lro->lio", a.reshape(layers, -1, r), b.reshape(layers, r, -1))
    return scale * d.reshape(*a.shape[:-1], *b.shape[2:])


def merge(params: dict[str, Any], adapters: dict[str, Any], lora: LoraConfig) -> dict[str, Any]:
    """The base params with every adapted weight replaced by W + (alpha / r) A B in float32."""
    layers = dict(params["layers"])
    for name, adapter in adapters["layers"].items():
        layers[name] = layers[name].astype(jnp.float32) + delta(adapter, lora.scale)
    return {**params, "layers": layers}


def base_params(params: Any, lora: LoraConfig) -> Any:
    """The frozen base in `lora.base_dtype` (every floating leaf)."""
    dtype = jnp.dtype(lora.base_dtype)
    return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, params)


def num_adapter_params(cfg: ModelConfig, lora: LoraConfig) -> int:
    """Trainable parameters of the adapters."""
    return sum(math.prod(shape) for s in adapter_specs(cfg, lora).values() for shape, _ in s.values())
