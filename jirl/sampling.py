"""Batched KV-cache decoding: prefill the prompts, then one token per step in a `lax.while_loop`.

Prompts of different lengths are left-padded into one [B, P] block (padding is segment 0, so no
real token attends to it); each row stops at EOS or after `max_new_tokens`.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jirl import models


def left_pad(prompts: Sequence[Sequence[int]], length: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """[B, length] int32 prompts right-aligned, and their lengths [B]."""
    lengths = np.array([len(p) for p in prompts], np.int32)
    if lengths.min(initial=1) < 1 or lengths.max(initial=0) > length:
        raise ValueError(f"prompt lengths must lie in [1, {length}], got {lengths.min()}..{lengths.max()}.")
    block = np.full((len(prompts), length), pad_id, np.int32)
    for row, prompt in enumerate(prompts):
        block[row, length - len(prompt) :] = prompt
    return block, lengths


@functools.partial(jax.jit, static_argnames=("graphdef", "max_new_tokens", "temperature", "eos_id", "pad_id"))
def _decode(
    graphdef: nnx.GraphDef,
    params: Any,
    prompt_BP: jax.Array,
    lengths_B: jax.Array,
    rng: jax.Array,
    *,
    max_new_tokens: int,
    temperature: float,
    eos_id: int,
    pad_id: int,
):
    model = nnx.merge(graphdef, params)
    b, p = prompt_BP.shape
    pad_B = p - lengths_B
    slots_BP = jnp.broadcast_to(jnp.arange(p, dtype=jnp.int32), (b, p))
    segments_BP = (slots_BP >= pad_B[:, None]).astype(jnp.int32)
    positions_BP = jnp.maximum(slots_BP - pad_B[:, None], 0)
    cache = models.init_cache(model.config, b, p + max_new_tokens)
    logits_BPV, cache = model(prompt_BP, positions=positions_BP, segment_ids=segments_BP, cache=cache)

    def pick(logits_BV, key):
        if temperature == 0.0:
            return jnp.argmax(logits_BV, axis=-1).astype(jnp.int32)
        return jax.random.categorical(key, logits_BV.astype(jnp.float32) / temperature).astype(jnp.int32)

    def cond(carry):
        i, _, _, _, done_B, _ = carry
        return (i < max_new_tokens) & ~jnp.all(done_B)

    def step(carry):
        i, logits_BV, cache, out_BN, done_B, key = carry
        key, sub = jax.random.split(key)
        token_B = jnp.where(done_B, pad_id, pick(logits_BV, sub))
        out_BN = out_BN.at[:, i].set(token_B)
        done_B = done_B | (token_B == eos_id)
        logits_B1V, cache = model(
            token_B[:, None],
            positions=(lengths_B + i)[:, None],
            segment_ids=jnp.ones((b, 1), jnp.int32),
            cache=cache,
        )
        return i + 1, logits_B1V[:, 0], cache, out_BN, done_B, key

    out_BN = jnp.full((b, max_new_tokens), pad_id, jnp.int32)
    carry = (jnp.zeros((), jnp.int32), logits_BPV[:, -1], cache, out_BN, jnp.zeros((b,), bool), rng)
    return jax.lax.while_loop(cond, step, carry)[3]


def generate(
    graphdef: nnx.GraphDef,
    params: Any,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    eos_id: int,
    pad_id: int = 0,
    temperature: float = 0.0,
    seed: int = 0,
    batch_size: int = 64,
    bucket: int = 32,
) -> list[list[int]]:
    """Continues each prompt; returns the new tokens of each, up to and including EOS.

    temperature 0 is greedy. Prompts are processed `batch_size` at a time, padded to a multiple
    of `bucket` so that few shapes compile.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}.")
    max_len = nnx.merge(graphdef, params).config.max_len
    results: list[list[int]] = []
    rng = jax.random.PRNGKey(seed)
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start : start + batch_size])
        longest = max(len(p) for p in chunk)
        length = -(-longest // bucket) * bucket
        if longest + max_new_tokens > max_len:
            raise ValueError(
                f"a prompt of {longest} tokens plus {max_new_tokens} new tokens exceeds "
                f"the model's maximum length {max_len}."
            )
        length = min(length, max_len - max_new_tokens)
        n_real = len(chunk)
        if len(prompts) > batch_size:  # a short last chunk is padded: every chunk compiles once
            chunk += [chunk[-1]] * (batch_size - n_real)
        block, lengths = left_pad(chunk, length, pad_id)
        rng, sub = jax.random.split(rng)
        out = np.asarray(
            _decode(
                graphdef,
                params,
                block,
                lengths,
                sub,
                max_new_tokens=max_new_tokens,
                temperature=float(temperature),
                eos_id=eos_id,
                pad_id=pad_id,
            )
        )
        for row in out[:n_real]:
            tokens = row.tolist()
            results.append(tokens[: tokens.index(eos_id) + 1] if eos_id in tokens else tokens)
    return results
