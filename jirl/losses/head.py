"""The head stage: soft-Q statistics from full logits, or from hidden states in vocabulary chunks.

Every objective reads the logits z_t only through reductions over the vocabulary:

  Q_t = z_t[a_t],   V_t = logsumexp_v z_t[v],   correct_t = [argmax_v z_t[v] == a_t],
  mean_t = (1/V) sum_v z_t[v]   (label smoothing only),
  E_t = sum_v p_t[v] z_t[v], p_t = softmax z_t   (the entropy bonus only: H_t = V_t - E_t).

`from_logits` takes them from a [B, T, V] logits array (the reference path). `from_hidden` takes the
final hidden states h [B, T, D] and the output projection W and computes z = h W (soft-capped
c tanh(z / c) when asked) in chunks of about `chunk` vocabulary entries, never holding [B, T, V]: a
streaming logsumexp over the chunks, and a custom VJP that recomputes each chunk's logits in the
backward pass, dz = g_V p + g_Q onehot(a) + g_mean / V + g_E p (1 + z - E) (p = softmax(z)), so
that the memory is O(B T chunk) whatever V is.

Chunk k holds the vocabulary entries v = c K + k (c < C, K chunks of C entries, strided), so that a
vocabulary sharded over a mesh axis in contiguous blocks stays sharded inside every chunk. The
entries past V that C K >= V adds (fewer than 128 per chunk) never win the max and add nothing to
the sums.
"""

from __future__ import annotations

import functools
from typing import Mapping, NamedTuple

import jax
import jax.numpy as jnp

from jirl.losses import _masking


class TokenStats(NamedTuple):
    """What the objectives read from the logits, per position: [B, T] float32 (see the module doc)."""

    q: jax.Array  # Q_t = z_t[a_t]
    value: jax.Array  # V_t = logsumexp z_t
    correct: jax.Array  # argmax z_t == a_t, as 0/1 (no gradient)
    mean_logit: jax.Array | None = None  # mean_v z_t[v]; only when asked for
    expected_logit: jax.Array | None = None  # sum_v softmax(z_t)[v] z_t[v]; only when asked for


class Stream(NamedTuple):
    """One stream of examples an objective reads: its batch and the head's TokenStats of it.

    Offline objectives read the expert stream; online IQLearn also a policy stream (the model's own
    samples, `objective(stats, batch, policy=Stream(policy_stats, policy_batch))`).
    """

    stats: TokenStats
    batch: Mapping[str, jax.Array]


def from_logits(
    logits_BTV: jax.Array,
    batch: Mapping[str, jax.Array],
    *,
    mean_logit: bool = False,
    expected_logit: bool = False,
) -> TokenStats:
    """TokenStats of full logits, upcast to float32. Masked positions read zeros, so garbage there
    (huge, -inf or NaN logits) gives neither NaN values nor NaN gradients."""
    if logits_BTV.ndim != 3:
        raise ValueError(f"logits must be [B, T, V], got shape {tuple(logits_BTV.shape)}.")
    _masking.check_batch(batch, logits_BTV.shape[:2])
    mask_BT = batch["loss_mask"]
    logits_BTV = jnp.where(mask_BT[..., None] > 0, logits_BTV.astype(jnp.float32), 0.0)
    targets_BT = batch["targets"].astype(jnp.int32)
    return TokenStats(
        q=jnp.take_along_axis(logits_BTV, targets_BT[..., None], axis=-1)[..., 0],
        value=jax.nn.logsumexp(logits_BTV, axis=-1),
        correct=(jnp.argmax(logits_BTV, axis=-1) == targets_BT).astype(jnp.float32),
        mean_logit=jnp.mean(logits_BTV, axis=-1) if mean_logit else None,
        expected_logit=(
            jnp.sum(jax.nn.softmax(logits_BTV, axis=-1) * logits_BTV, axis=-1) if expected_logit else None
        ),
    )


def from_hidden(
    hidden_BTD: jax.Array,
    weight: jax.Array,
    batch: Mapping[str, jax.Array],
    *,
    chunk: int,
    vocab_axis: int = 1,
    softcap: float = 0.0,
    mean_logit: bool = False,
    row_budget: int = 0,
    expected_logit: bool = False,
) -> TokenStats:
    """TokenStats of z = h W, computed in vocabulary chunks of about `chunk` entries.

    weight: [D, V] (vocab_axis=1) or [V, D] (vocab_axis=0, a tied embedding table). The matmuls
    run in the hidden states' dtype (bfloat16 compute) with float32 accumulation; the statistics
    and the weight's gradient are float32. softcap c > 0: z -> c tanh(z / c) (Gemma 2).

    Only positions with m_t = 1 are read (V_{t+1} enters only where m_{t+1} = 1). With
    0 < row_budget < T, each row's response positions are gathered into `row_budget` slots first,
    so prompt-heavy batches compute little; a batch with a row holding more response positions
    than that takes every position instead (the same statistics either way; 0 elsewhere).
    """
    if hidden_BTD.ndim != 3:
        raise ValueError(f"hidden states must be [B, T, D], got shape {tuple(hidden_BTD.shape)}.")
    if vocab_axis not in (0, 1) or weight.ndim != 2:
        raise ValueError(
            f"weight must be [D, V] (vocab_axis=1) or [V, D] (vocab_axis=0), got {weight.shape}."
        )
    if weight.shape[1 - vocab_axis] != hidden_BTD.shape[-1]:
        raise ValueError(
            f"weight {tuple(weight.shape)} (vocab_axis={vocab_axis}) does not match the hidden size "
            f"{hidden_BTD.shape[-1]}."
        )
    if not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk={chunk!r} must be a positive integer (vocabulary entries per chunk).")
    _masking.check_batch(batch, hidden_BTD.shape[:2])
    spec = _Spec(
        ChunkLayout.of(weight.shape[vocab_axis], chunk), vocab_axis, jnp.dtype(weight.dtype),
        float(softcap), bool(mean_logit), bool(expected_logit),
    )  # fmt: skip
    targets_BT, mask_BT = batch["targets"].astype(jnp.int32), batch["loss_mask"]
    every_position = lambda: _stats_at(spec, hidden_BTD, weight, targets_BT, mask_BT)  # noqa: E731
    b, t, _ = hidden_BTD.shape
    if not 0 < row_budget < t:
        return every_position()

    def gathered() -> TokenStats:
        # Per row: the response positions first, in order (a stable sort), then the others.
        slots_BK = jnp.argsort(mask_BT <= 0, axis=1, stable=True)[:, :row_budget]
        take = lambda x: jnp.take_along_axis(x, slots_BK.reshape(b, row_budget, *[1] * (x.ndim - 2)), 1)  # noqa: E731
        stats = _stats_at(spec, take(hidden_BTD), weight, take(targets_BT), take(mask_BT))
        rows_B1 = jnp.arange(b)[:, None]
        scatter = lambda x: None if x is None else jnp.zeros((b, t), x.dtype).at[rows_B1, slots_BK].set(x)  # noqa: E731
        return TokenStats(*(scatter(x) for x in stats))

    fits = jnp.all(jnp.sum(mask_BT > 0, axis=1) <= row_budget)
    return jax.lax.cond(fits, gathered, every_position)


def _stats_at(spec, hidden_BTD, weight, targets_BT, mask_BT) -> TokenStats:
    """TokenStats of every position (hidden states zeroed where m_t = 0), flattened to [B T, D]."""
    b, t, d = hidden_BTD.shape
    hidden_ND = jnp.where(mask_BT.reshape(b * t, 1) > 0, hidden_BTD.reshape(b * t, d), 0)
    q, value, correct, mean, expected = _chunked_stats(spec, hidden_ND, weight, targets_BT.reshape(b * t))
    to_bt = lambda x: x.reshape(b, t)  # noqa: E731
    return TokenStats(
        to_bt(q),
        to_bt(value),
        to_bt(correct),
        to_bt(mean) if spec.with_mean else None,
        to_bt(expected) if spec.with_expected else None,
    )


class ChunkLayout(NamedTuple):
    """V entries as K chunks of C (C K >= V): chunk k holds entries c K + k, c < C."""

    vocab: int  # V
    chunks: int  # K
    size: int  # C

    @classmethod
    def of(cls, vocab: int, chunk: int) -> ChunkLayout:
        """K = ceil(V / chunk) chunks of C = ceil(V / K) entries; with several chunks of at least 128,
        C is rounded up to a multiple of 128 (a vocabulary sharded up to 128 ways stays sharded)."""
        chunks = -(-vocab // chunk)
        size = -(-vocab // chunks)
        if chunks > 1 and chunk >= 128:
            size = -(-size // 128) * 128
            chunks = -(-vocab // size)
        return cls(vocab, chunks, size)

    def split(self, weight: jax.Array, vocab_axis: int, dtype: jnp.dtype) -> jax.Array:
        """[D, V] or [V, D] -> [K, D, C] in `dtype` (padded with zeros past V)."""
        w_DV = weight if vocab_axis == 1 else weight.T
        d = w_DV.shape[0]
        w_DV = jnp.pad(w_DV.astype(dtype), ((0, 0), (0, self.size * self.chunks - self.vocab)))
        return w_DV.reshape(d, self.size, self.chunks).transpose(2, 0, 1)

    def merge(self, w_KDC: jax.Array, vocab_axis: int) -> jax.Array:
        """The inverse of `split` (padding dropped): [K, D, C] -> [D, V] or [V, D]."""
        k, d, c = w_KDC.shape
        w_DV = w_KDC.transpose(1, 2, 0).reshape(d, c * k)[:, : self.vocab]
        return w_DV if vocab_axis == 1 else w_DV.T

    def entries(self, k: jax.Array) -> jax.Array:
        """The vocabulary ids [C] of chunk k (ids >= V are padding)."""
        return jnp.arange(self.size, dtype=jnp.int32) * self.chunks + k


def _chunk_logits(h_ND, w_DC, softcap):
    """z = softcap(h W_k) of one chunk, float32 [N, C]."""
    z = jnp.dot(h_ND, w_DC, preferred_element_type=jnp.float32)
    return softcap * jnp.tanh(z / softcap) if softcap > 0 else z


class _Spec(NamedTuple):
    """The static part of a chunked head: layout, weight orientation and dtype, soft-cap, mean,
    expected logit."""

    layout: ChunkLayout
    vocab_axis: int
    weight_dtype: jnp.dtype
    softcap: float
    with_mean: bool
    with_expected: bool = False


def _forward(spec: _Spec, h_ND, weight, targets_N):
    layout, softcap = spec.layout, spec.softcap
    n = h_ND.shape[0]
    w_KDC = layout.split(weight, spec.vocab_axis, h_ND.dtype)
    neg_inf = jnp.float32(-jnp.inf)

    def body(carry, xs):
        run_max, run_sum, q, best_id, z_sum, pz_sum = carry
        k, w_DC = xs
        ids_C = layout.entries(k)
        valid_C = ids_C < layout.vocab
        z = _chunk_logits(h_ND, w_DC, softcap)
        z_valid = jnp.where(valid_C, z, neg_inf)
        chunk_max = jnp.max(z_valid, axis=1)
        new_max = jnp.maximum(run_max, chunk_max)
        rescale = jnp.exp(run_max - new_max)
        exp_z = jnp.exp(z_valid - new_max[:, None])  # 0 past V
        run_sum = run_sum * rescale + jnp.sum(exp_z, axis=1)
        if spec.with_expected:  # sum_v exp(z_v - max) z_v, rescaled as run_sum is
            pz_sum = pz_sum * rescale + jnp.sum(jnp.where(valid_C, exp_z * z, 0.0), axis=1)
        q = q + jnp.sum(jnp.where(ids_C[None, :] == targets_N[:, None], z, 0.0), axis=1)
        chunk_id = ids_C[jnp.argmax(z_valid, axis=1)]  # the first maximum within the chunk
        wins = (chunk_max > run_max) | ((chunk_max == run_max) & (chunk_id < best_id))  # ties: lowest id
        best_id = jnp.where(wins, chunk_id, best_id)
        if spec.with_mean:
            z_sum = z_sum + jnp.sum(jnp.where(valid_C, z, 0.0), axis=1)
        return (new_max, run_sum, q, best_id, z_sum, pz_sum), None

    zeros = jnp.zeros((n,), jnp.float32)
    init = (jnp.full((n,), neg_inf), zeros, zeros, jnp.zeros((n,), jnp.int32), zeros, zeros)
    ks = jnp.arange(layout.chunks, dtype=jnp.int32)
    (run_max, run_sum, q, best_id, z_sum, pz_sum), _ = jax.lax.scan(body, init, (ks, w_KDC))
    value = run_max + jnp.log(run_sum)
    correct = (best_id == targets_N).astype(jnp.float32)
    expected = pz_sum / run_sum if spec.with_expected else zeros
    return (q, value, correct, z_sum / layout.vocab, expected), (h_ND, w_KDC, targets_N, value, expected)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _chunked_stats(spec: _Spec, h_ND, weight, targets_N):
    """(Q, V, correct, mean, expected) [N] float32 of z = softcap(h W), chunk by chunk."""
    return _forward(spec, h_ND, weight, targets_N)[0]


def _chunked_stats_bwd(spec: _Spec, residuals, cotangents):
    """dz = g_V p + g_Q onehot(a) + g_mean / V + g_E p (1 + z - E) per chunk, p = softmax(z) (times
    1 - (z/c)^2 under a soft-cap); dh = sum_k dz_k W_k^T, dW_k = h^T dz_k; float32 accumulation,
    each chunk's logits recomputed. (E = sum_u p_u z_u: dE/dz_v = p_v + sum_u z_u p_u (d_uv - p_v)
    = p_v (1 + z_v - E).)"""
    layout, softcap = spec.layout, spec.softcap
    h_ND, w_KDC, targets_N, value_N, expected_N = residuals
    g_q, g_value, _, g_mean, g_expected = (g.astype(jnp.float32) for g in cotangents)
    dt = h_ND.dtype

    def body(dh_ND, xs):
        k, w_DC = xs
        ids_C = layout.entries(k)
        valid_C = ids_C < layout.vocab
        z = _chunk_logits(h_ND, w_DC, softcap)
        probs = jnp.where(valid_C, jnp.exp(z - value_N[:, None]), 0.0)
        dz = g_value[:, None] * probs + jnp.where(ids_C[None, :] == targets_N[:, None], g_q[:, None], 0.0)
        if spec.with_mean:
            dz = dz + jnp.where(valid_C, g_mean[:, None] / layout.vocab, 0.0)
        if spec.with_expected:  # probs is 0 past V
            dz = dz + g_expected[:, None] * probs * (1.0 + z - expected_N[:, None])
        if softcap > 0:
            dz = dz * (1.0 - jnp.square(z / softcap))
        dz = dz.astype(dt)
        dh_ND = dh_ND + jnp.dot(dz, w_DC.T, preferred_element_type=jnp.float32)
        return dh_ND, jnp.dot(h_ND.T, dz, preferred_element_type=jnp.float32)

    ks = jnp.arange(layout.chunks, dtype=jnp.int32)
    dh_ND, dw_KDC = jax.lax.scan(body, jnp.zeros(h_ND.shape, jnp.float32), (ks, w_KDC))
    dw = layout.merge(dw_KDC, spec.vocab_axis).astype(spec.weight_dtype)
    return dh_ND.astype(dt), dw, None


_chunked_stats.defvjp(lambda spec, h, w, a: _forward(spec, h, w, a), _chunked_stats_bwd)


__all__ = ["ChunkLayout", "TokenStats", "from_hidden", "from_logits"]
