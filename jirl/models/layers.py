"""The transformer's building blocks as small pure functions, each replaceable by a faster form."""

from __future__ import annotations

import contextlib
import contextvars
import math
from typing import Callable, Iterator, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

# Logical names of the activations' dimensions, for `constrain`: hidden states [B, T, D], logits [B, T, V].
ACTIVATIONS_BTD = ("activation_batch", "activation_length", "activation_embed")
ACTIVATIONS_BTV = ("activation_batch", "activation_length", "activation_vocab")

# constrain(x, logical_names) -> x, installed by whoever shards the model (jirl.sharding); None: no-op.
_ACTIVATION_SHARDING: contextvars.ContextVar[Callable | None] = contextvars.ContextVar(
    "jirl_activation_sharding", default=None
)


@contextlib.contextmanager
def activation_sharding(constrain_fn: Callable | None) -> Iterator[None]:
    """Within this context (active while a step is traced), `constrain` calls `constrain_fn`."""
    token = _ACTIVATION_SHARDING.set(constrain_fn)
    try:
        yield
    finally:
        _ACTIVATION_SHARDING.reset(token)


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
    """A sharding hint for x by logical dimension names, e.g. ("activation_batch", ...); else identity."""
    constrain_fn = _ACTIVATION_SHARDING.get()
    return x if constrain_fn is None else constrain_fn(x, names)


def rms_norm(x_BTD: jax.Array, scale_D: jax.Array, eps: float) -> jax.Array:
    """y = x / sqrt(mean(x^2) + eps) * scale, computed in float32, returned in x's dtype."""
    x32 = x_BTD.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + eps)
    return (y * scale_D.astype(jnp.float32)).astype(x_BTD.dtype)


def layer_norm(x_BTD: jax.Array, scale_D: jax.Array, bias_D: jax.Array, eps: float) -> jax.Array:
    """y = (x - mean x) / sqrt(var x + eps) * scale + bias, computed in float32, returned in x's dtype."""
    x32 = x_BTD.astype(jnp.float32)
    centred = x32 - jnp.mean(x32, axis=-1, keepdims=True)
    y = centred * jax.lax.rsqrt(jnp.mean(jnp.square(centred), axis=-1, keepdims=True) + eps)
    return (y * scale_D.astype(jnp.float32) + bias_D.astype(jnp.float32)).astype(x_BTD.dtype)


def default_inv_freq(head_dim: int, theta: float) -> np.ndarray:
    """RoPE frequencies f_i = theta^(-2i/D) (float32 [D/2]), computed as transformers does."""
    return (1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim)).astype(np.float32)


def llama3_inv_freq(
    head_dim: int,
    theta: float,
    factor: float,
    low_freq_factor: float,
    high_freq_factor: float,
    original_len: int,
) -> np.ndarray:
    """Llama 3 RoPE frequencies (float32 [D/2]): f_i = theta^(-2i/D), wavelength w_i = 2 pi / f_i.

    w < L / high: f;  w > L / low: f / factor;  between: (1 - s) f / factor + s f with
    s = (L / w - low) / (high - low), L the original context length.
    """
    inv_freq = default_inv_freq(head_dim, theta)
    wavelen = 2 * math.pi / inv_freq
    scaled = np.where(wavelen > original_len / low_freq_factor, inv_freq / factor, inv_freq)
    smooth = (original_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= original_len / high_freq_factor) & (wavelen <= original_len / low_freq_factor)
    return np.where(medium, smoothed, scaled).astype(np.float32)


class RopeTables(NamedTuple):
    """The rotary angles' cos [B, T, 1, 1, D/2] and signed sin [B, T, 1, 2, D/2] (-sin for the first
    half, +sin for the second), float32: computed once per forward pass, shared by every layer."""

    cos: jax.Array
    signed_sin: jax.Array


def rope_tables(
    positions_BT: jax.Array, head_dim: int, theta: float, inv_freq: np.ndarray | None = None
) -> RopeTables:
    """The rotary tables of `positions_BT`: angles pos_t * f_i with f_i = theta^(-2i/D) (i < D/2),
    or `inv_freq` [D/2] when given (e.g. `llama3_inv_freq`, or `default_inv_freq` / factor)."""
    half = head_dim // 2
    if inv_freq is None:
        inv_freq = theta ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angles_BT11F = (positions_BT.astype(jnp.float32)[..., None] * inv_freq)[:, :, None, None, :]
    sin = jnp.sin(angles_BT11F)
    return RopeTables(jnp.cos(angles_BT11F), jnp.concatenate([-sin, sin], axis=3))


def apply_rope(x_BTHD: jax.Array, tables: RopeTables) -> jax.Array:
    """Rotary position embedding, rotate-half layout: the pair (x_i, x_{i+D/2}) rotates by angle_i,
    (x1 cos - x2 sin, x2 cos + x1 sin), in float32; returned in x's dtype.

    With x as [..., 2, D/2] halves, that is x cos + swap(x) (-sin, +sin), where swap reverses the
    halves: elementwise work only (no measurable change in step time from the concatenating form).
    """
    b, t, h, d = x_BTHD.shape
    x = x_BTHD.astype(jnp.float32).reshape(b, t, h, 2, d // 2)
    out = x * tables.cos + x[..., ::-1, :] * tables.signed_sin
    return out.reshape(b, t, h, d).astype(x_BTHD.dtype)


def attention_mask(
    q_slots_BT: jax.Array, q_segments_BT: jax.Array, kv_slots_BS: jax.Array, kv_segments_BS: jax.Array
) -> jax.Array:
    """mask[b, t, s] = slot_s <= slot_t and segment_s == segment_t (causal within a packed example).

    Padding (segment 0) attends only to padding, so no row is empty and nothing is NaN.
    """
    causal = kv_slots_BS[:, None, :] <= q_slots_BT[:, :, None]
    same_segment = kv_segments_BS[:, None, :] == q_segments_BT[:, :, None]
    return causal & same_segment


class Adapter(NamedTuple):
    """A LoRA adapter of one weight W [C..., O...]: A [C..., r], B [r, O...], the scale alpha / r, and
    dropout on the adapter's input (rate, and the key to draw it with; None: no dropout)."""

    a: jax.Array
    b: jax.Array
    scale: float
    dropout: float = 0.0
    key: jax.Array | None = None


class Adapters(NamedTuple):
    """The LoRA adapters of a stacked decoder: weight name -> {"a": [L, ...], "b": [L, ...]} (the
    `layers` entry of `jirl.models.lora` adapters), their scale and dropout, and a key for the dropout."""

    params: dict
    scale: float
    dropout: float = 0.0
    key: jax.Array | None = None

    def of_layer(self, layer: tuple[dict, jax.Array | None]) -> dict[str, Adapter]:
        """name -> Adapter of one layer, from (its slice of `params`, its dropout key)."""
        params, key = layer
        return {
            name: Adapter(
                p["a"], p["b"], self.scale, self.dropout, None if key is None else jax.random.fold_in(key, i)
            )
            for i, (name, p) in enumerate(sorted(params.items()))
        }

    def per_layer_inputs(self, num_layers: int) -> tuple[dict, jax.Array | None]:
        """What `run_layers` slices per layer: (params, a dropout key per layer or None)."""
        keys = None if self.key is None or self.dropout == 0 else jax.random.split(self.key, num_layers)
        return self.params, keys


def lora_delta(x: jax.Array, adapter: Adapter, contract: int = 1) -> jax.Array:
    """scale * dropout(x) A B, factored: (x A) [..., r] first, then B."""
    if adapter.dropout > 0 and adapter.key is not None:
        keep = jax.random.bernoulli(adapter.key, 1.0 - adapter.dropout, x.shape)
        x = jnp.where(keep, x / (1.0 - adapter.dropout), 0).astype(x.dtype)
    xa = dense(x, adapter.a.astype(x.dtype), contract)
    return dense(xa, (adapter.scale * adapter.b).astype(x.dtype))


def dense(x: jax.Array, w: jax.Array, contract: int = 1, adapter: Adapter | None = None) -> jax.Array:
    """x [..., C_1..C_c] . w [C_1..C_c, O_1..] -> [..., O_1..], with x's leading dims merged into one.

    On [B, T, D] operands XLA:CPU's backward pass wrote transposed copies of the gradients through
    slow loops (a third of a step); with one row dimension the matmul and its gradients are plain
    library calls. Merging the leading dimensions keeps a sharding of the batch (the major one);
    jirl's rules do not shard the activations' length. w keeps its dims, so a sharding of any of
    its output dims stays as it is.

    `adapter` (LoRA): + scale * dropout(x) A B, computed factored (`lora_delta`).
    """
    lead, inner = x.shape[: x.ndim - contract], x.shape[x.ndim - contract :]
    if w.shape[:contract] != inner:
        raise ValueError(f"dense: x {x.shape} and w {w.shape} do not share {contract} contracted dims.")
    y = jnp.tensordot(x.reshape(math.prod(lead), *inner), w, axes=contract)
    y = y.reshape(*lead, *w.shape[contract:])
    return y if adapter is None else y + lora_delta(x, adapter, contract)


def project_heads(
    h_BTD: jax.Array, p: dict[str, jax.Array], name: str, adapters: dict[str, Adapter] | None = None
) -> jax.Array:
    """q/k/v heads [B, T, H, D]: h W_name (+ b_name when p has it), W_name [D_model, H, D]; plus
    the LoRA term when `adapters` has "w" + name."""
    dt = h_BTD.dtype
    out = dense(h_BTD, p["w" + name].astype(dt), adapter=(adapters or {}).get("w" + name))
    return out + p["b" + name].astype(dt) if "b" + name in p else out


def write_kv(
    cache_k: jax.Array,
    cache_v: jax.Array,
    k_BTKD: jax.Array,
    v_BTKD: jax.Array,
    index: jax.Array,
    heads_major: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """The caches [B, S, K, D] (heads_major: [B, K, S, D]) with T new keys/values written at slots
    index .. index + T - 1, in the caches' dtype."""
    if heads_major:
        k_BTKD, v_BTKD = k_BTKD.transpose(0, 2, 1, 3), v_BTKD.transpose(0, 2, 1, 3)
    start = (0, 0, index, 0) if heads_major else (0, index, 0, 0)
    k = jax.lax.dynamic_update_slice(cache_k, k_BTKD.astype(cache_k.dtype), start)
    v = jax.lax.dynamic_update_slice(cache_v, v_BTKD.astype(cache_v.dtype), start)
    return k, v


def dot_product_attention(
    q_BTHD: jax.Array,
    k_BSKD: jax.Array,
    v_BSKD: jax.Array,
    mask_BTS: jax.Array,
    scale: float | None = None,
    softcap: float = 0.0,
    bias_BHTS: jax.Array | None = None,
    heads_major: bool = False,
) -> jax.Array:
    """softmax(s masked) v, s = q k^T * scale (default D^-1/2), with grouped-query attention (H = K * G).

    With softcap c > 0, s -> c tanh(s / c) before masking; `bias_BHTS` (T5's relative position bias,
    batch dim 1 or B) is added to s. Softmax in float32. k and v are [B, S, K, D], or with
    heads_major [B, K, S, D]: a KV cache's layout, which the products read without transposing it.
    """
    b, t, h, d = q_BTHD.shape
    k = k_BSKD.shape[1 if heads_major else 2]
    scale = d**-0.5 if scale is None else scale
    q_BTKGD = q_BTHD.reshape(b, t, k, h // k, d) * jnp.asarray(scale, q_BTHD.dtype)
    kv = "bksd" if heads_major else "bskd"
    scores = jnp.einsum(f"btkgd,{kv}->bkgts", q_BTKGD, k_BSKD, preferred_element_type=jnp.float32)
    if softcap > 0:
        scores = softcap * jnp.tanh(scores / softcap)
    if bias_BHTS is not None:
        scores = scores + bias_BHTS.reshape(bias_BHTS.shape[0], k, h // k, t, -1).astype(jnp.float32)
    scores = jnp.where(mask_BTS[:, None, None, :, :], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(v_BSKD.dtype)
    out = jnp.einsum(f"bkgts,{kv}->btkgd", probs, v_BSKD)
    return out.reshape(b, t, h, d)


class OutputProjection(NamedTuple):
    """A model's output layer z = softcap(h W): W [D, V] (vocab_axis=1) or a tied [V, D] (vocab_axis=0)."""

    weight: jax.Array
    vocab_axis: int
    softcap: float = 0.0  # c > 0: z -> c tanh(z / c)


def project(h_BTD: jax.Array, out: OutputProjection) -> jax.Array:
    """logits_BTV = softcap(h W), in h's dtype (the full-logits output layer)."""
    w = out.weight.astype(h_BTD.dtype)
    logits_BTV = dense(h_BTD, w if out.vocab_axis == 1 else w.T)
    if out.softcap > 0:
        logits_BTV = out.softcap * jnp.tanh(logits_BTV / out.softcap)
    return logits_BTV


def relative_bucket(relative_position: jax.Array, bidirectional: bool, num_buckets: int, max_distance: int):
    """T5's bucket of a relative position (key position - query position), int32.

    Bidirectional: half the buckets for keys after the query. Distances below half the (remaining)
    buckets get one bucket each; larger ones are binned logarithmically up to max_distance, beyond
    which all share the last bucket. Unidirectional (decoder): keys after the query count as 0.
    """
    buckets = jnp.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (relative_position > 0).astype(jnp.int32) * num_buckets
        distance = jnp.abs(relative_position)
    else:
        distance = -jnp.minimum(relative_position, 0)
    max_exact = num_buckets // 2
    log_ratio = jnp.log(jnp.maximum(distance, 1).astype(jnp.float32) / max_exact) / math.log(
        max_distance / max_exact
    )
    large = max_exact + (log_ratio * (num_buckets - max_exact)).astype(jnp.int32)
    large = jnp.minimum(large, num_buckets - 1)
    return buckets + jnp.where(distance < max_exact, distance, large)


def swiglu(x_BTD: jax.Array, w_gate_DF: jax.Array, w_up_DF: jax.Array, w_down_FD: jax.Array) -> jax.Array:
    """down(silu(x W_gate) * (x W_up))."""
    gate = jax.nn.silu(dense(x_BTD, w_gate_DF))
    return dense(gate * dense(x_BTD, w_up_DF), w_down_FD)


ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "silu": jax.nn.silu,
    "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "relu": jax.nn.relu,
}


def mlp(
    x_BTD: jax.Array, p: dict[str, jax.Array], activation: str, adapters: dict[str, Adapter] | None = None
) -> jax.Array:
    """down(act(x W_gate + b_gate) * (x W_up + b_up)) + b_down; ungated: down(act(x W_up + b_up)) + b_down.

    Biases are used where present in `p` (keys w_gate, w_up, w_down, b_gate, b_up, b_down); LoRA
    adapters where `adapters` has the weight's name.
    """
    dt = x_BTD.dtype
    adapters = adapters or {}
    affine = lambda x, name: (
        dense(x, p["w_" + name].astype(dt), adapter=adapters.get("w_" + name))
        + (p["b_" + name].astype(dt) if "b_" + name in p else 0)
    )
    if activation == "silu" and "w_gate" in p and "b_up" not in p and not adapters:
        return swiglu(x_BTD, p["w_gate"].astype(dt), p["w_up"].astype(dt), p["w_down"].astype(dt))
    act = ACTIVATIONS[activation]
    h = act(affine(x_BTD, "gate")) * affine(x_BTD, "up") if "w_gate" in p else act(affine(x_BTD, "up"))
    return affine(h, "down")
