"""Causal self-attention in blocks, flash-style: the [B, H, T, T] scores are never held.

Queries and keys are cut into blocks of `block` positions. Query block i meets key blocks j <= i
only (the blocks above the diagonal are fully masked by causality and skipped at trace time);
a block below the diagonal that the mask empties for every row (packed segments, a sliding
window) is skipped at run time. Within a query block the softmax is streamed over key blocks:

    m' = max(m, max_s s_ts),   l' = l e^(m - m') + sum_s e^(s_ts - m'),
    o' = o e^(m - m') + sum_s e^(s_ts - m') v_s,

and out = o / l, lse = m + log l. The backward pass recomputes each block's probabilities from
lse, p = e^(s - lse), with delta_t = sum_d dout_td out_td:

    dv = p^T dout,  ds = p (dout v^T - delta),  dq = scale ds k,  dk = scale ds^T q.

Softmax arithmetic is float32; the matmuls run in the inputs' dtype with float32 accumulation.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

# Query and key blocks of 64 positions: on a 2-core CPU, for 16 x 256 tokens and 4 heads of 64,
# the attention's forward and backward take 25 ms in blocks of 64, 38 ms in blocks of 128, 33 ms
# in blocks of 32 and 50 ms dense (`layers.dot_product_attention`). The block loops are unrolled
# when traced (n (n + 1) / 2 block pairs for n blocks), so longer sequences take larger blocks:
# at most MAX_BLOCKS of them.
BLOCK = 64
MAX_BLOCKS = 16


def block_size(seq_len: int) -> int:
    """The smallest multiple of BLOCK that cuts `seq_len` into 2 to MAX_BLOCKS equal blocks; 0 when
    none does (the dense form is used then)."""
    return next(
        (b for b in range(BLOCK, seq_len // 2 + 1, BLOCK) if seq_len % b == 0 and seq_len // b <= MAX_BLOCKS),
        0,
    )


def causal_attention(
    q_BTHD: jax.Array, k_BTKD: jax.Array, v_BTKD: jax.Array, mask_BTT: jax.Array, scale: float, block: int
) -> jax.Array:
    """softmax(q k^T scale, masked) v for T queries over the same T slots (no cache), [B, T, H, D].

    mask_BTT must be causal (mask[t, s] = 0 for s > t) and hold every diagonal entry (t, t), as
    `layers.attention_mask` does; grouped-query attention as in `layers.dot_product_attention`.
    """
    b, t, h, d = q_BTHD.shape
    if block < 1 or t % block or k_BTKD.shape[1] != t or mask_BTT.shape != (b, t, t):
        raise ValueError(
            f"blocked attention needs T queries and keys on the same slots in blocks of {block}: "
            f"q {q_BTHD.shape}, k {k_BTKD.shape}, mask {mask_BTT.shape}."
        )
    return _attention(q_BTHD, k_BTKD, v_BTKD, mask_BTT, float(scale), block)


def _blocked(x_BTHD: jax.Array, kv_heads: int, block: int) -> list[jax.Array]:
    """[B, T, H, D] -> the T / block query blocks [B, K, G, block, D] (H = K G), cut from one
    block-major copy [T / block, B, K, G, block, D], so that each block is contiguous and every
    matmul below has its batch dimensions leading and its rows contiguous."""
    b, t, h, d = x_BTHD.shape
    x = x_BTHD.reshape(b, t // block, block, kv_heads, h // kv_heads, d).transpose(1, 0, 3, 4, 2, 5)
    return list(x)


def _unblocked(blocks: list[jax.Array]) -> jax.Array:
    """The inverse of `_blocked`: the blocks [B, K, G, block, D] -> [B, T, H, D]."""
    x = jnp.stack(blocks)  # [T / block, B, K, G, block, D]
    n, b, k, g, block, d = x.shape
    return x.transpose(1, 0, 4, 2, 3, 5).reshape(b, n * block, k * g, d)


def _scores(q_BKGTD, k_BKSD):
    """Scaled scores of one block pair, float32 [B, K, G, T, S]."""
    return jnp.einsum("bkgtd,bksd->bkgts", q_BKGTD, k_BKSD, preferred_element_type=jnp.float32)


def _skippable(i: int, j: int, keep, step, carry):
    """step(carry) for the block pair (i, j); below the diagonal, only when the mask keeps anything."""
    if i == j:
        return step(carry)
    return jax.lax.cond(jnp.any(keep), step, lambda c: c, carry)


def _inputs(q_BTHD, k_BTKD, v_BTKD, mask_BTT, scale, block):
    """Blocks of the scaled queries [B, K, G, block, D], of the keys and values [B, K, block, D],
    and the mask [B, 1, 1, T, T]."""
    kv_heads = k_BTKD.shape[2]
    qs = _blocked(q_BTHD * jnp.asarray(scale, q_BTHD.dtype), kv_heads, block)
    ks = [x[:, :, 0] for x in _blocked(k_BTKD, kv_heads, block)]
    vs = [x[:, :, 0] for x in _blocked(v_BTKD, kv_heads, block)]
    return qs, ks, vs, mask_BTT[:, None, None]


def _forward(q_BTHD, k_BTKD, v_BTKD, mask_BTT, scale, block):
    qs, ks, vs, mask = _inputs(q_BTHD, k_BTKD, v_BTKD, mask_BTT, scale, block)
    lowest = jnp.finfo(jnp.float32).min
    outs, lses = [], []
    for i, q in enumerate(qs):
        rows = mask[..., i * block : (i + 1) * block, :]
        carry = (
            jnp.full(q.shape[:-1], lowest, jnp.float32),
            jnp.zeros(q.shape[:-1], jnp.float32),
            jnp.zeros(q.shape, jnp.float32),
        )
        for j in range(i + 1):
            keep = rows[..., j * block : (j + 1) * block]

            def step(carry, q=q, k=ks[j], v=vs[j], keep=keep):
                m, total, acc = carry
                s = _scores(q, k)
                m_new = jnp.maximum(m, jnp.max(jnp.where(keep, s, lowest), axis=-1))
                p = jnp.where(keep, jnp.exp(s - m_new[..., None]), 0.0)
                correction = jnp.exp(m - m_new)
                pv = jnp.einsum("bkgts,bksd->bkgtd", p.astype(v.dtype), v, preferred_element_type=jnp.float32)
                return m_new, total * correction + jnp.sum(p, axis=-1), acc * correction[..., None] + pv

            carry = _skippable(i, j, keep, step, carry)
        m, total, acc = carry
        outs.append(acc / total[..., None])
        lses.append(m + jnp.log(total))
    out = _unblocked(outs).astype(q_BTHD.dtype)
    return out, lses  # lse: per query block [B, K, G, block]


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _attention(q_BTHD, k_BTKD, v_BTKD, mask_BTT, scale, block):
    return _forward(q_BTHD, k_BTKD, v_BTKD, mask_BTT, scale, block)[0]


def _attention_fwd(q_BTHD, k_BTKD, v_BTKD, mask_BTT, scale, block):
    out, lse = _forward(q_BTHD, k_BTKD, v_BTKD, mask_BTT, scale, block)
    return out, (q_BTHD, k_BTKD, v_BTKD, mask_BTT, out, lse)


def _attention_bwd(scale, block, residuals, dout_BTHD):
    q_BTHD, k_BTKD, v_BTKD, mask_BTT, out_BTHD, lses = residuals
    dt = q_BTHD.dtype
    kv_heads = k_BTKD.shape[2]
    qs, ks, vs, mask = _inputs(q_BTHD, k_BTKD, v_BTKD, mask_BTT, scale, block)
    douts = _blocked(dout_BTHD.astype(dt), kv_heads, block)
    outs = _blocked(out_BTHD, kv_heads, block)
    deltas = [jnp.sum(do.astype(jnp.float32) * o.astype(jnp.float32), axis=-1) for do, o in zip(douts, outs)]
    dqs = [jnp.zeros(q.shape, jnp.float32) for q in qs]
    dks = [jnp.zeros(k.shape, jnp.float32) for k in ks]
    dvs = [jnp.zeros(v.shape, jnp.float32) for v in vs]
    for i in range(len(qs)):
        span = slice(i * block, (i + 1) * block)
        lse_i, delta_i = lses[i][..., None], deltas[i][..., None]
        for j in range(i + 1):
            keep = mask[..., span, j * block : (j + 1) * block]

            def step(carry, q=qs[i], k=ks[j], v=vs[j], do=douts[i], keep=keep, lse=lse_i, delta=delta_i):
                dq, dk, dv = carry
                p = jnp.where(keep, jnp.exp(_scores(q, k) - lse), 0.0)
                f32 = jnp.float32
                dv = dv + jnp.einsum("bkgts,bkgtd->bksd", p.astype(dt), do, preferred_element_type=f32)
                dp = jnp.einsum("bkgtd,bksd->bkgts", do, v, preferred_element_type=jnp.float32)
                ds = (p * (dp - delta)).astype(dt)
                dq = dq + jnp.einsum("bkgts,bksd->bkgtd", ds, k, preferred_element_type=jnp.float32)
                dk = dk + jnp.einsum("bkgts,bkgtd->bksd", ds, q, preferred_element_type=jnp.float32)
                return dq, dk, dv

            dqs[i], dks[j], dvs[j] = _skippable(i, j, keep, step, (dqs[i], dks[j], dvs[j]))
    dq = (_unblocked(dqs) * scale).astype(dt)
    dk = _unblocked([x[:, :, None] for x in dks]).astype(k_BTKD.dtype)
    dv = _unblocked([x[:, :, None] for x in dvs]).astype(v_BTKD.dtype)
    return dq, dk, dv, None


_attention.defvjp(_attention_fwd, _attention_bwd)
