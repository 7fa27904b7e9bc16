"""Policy batches built on the devices, for unpacked expert batches (one example per row, `task.pack=False`).

Static shapes throughout, no host round trip but one scalar (the longest prompt, which picks the
prompt block's length among a few buckets):

1. `prompt_block`: row b's prompt is its source row's inputs before its last run of response
   positions, BOS + p_1 .. p_n, n_b = s_b + 1 tokens (s_b the run's first position; for one response,
   #{t : seg_t = 1, m_t = 0}); it is right-aligned in a [B, P] block
   (left padding, as `jirl.sampling.decode` reads prompts). The source row is b itself, or with K
   samples per prompt (GAIL) b // K: rows bK .. bK + K - 1 answer the prompt of row b.
2. `sampling.decode` continues the block with one key per row: fold_in(fold_in(key(seed), step), b)
   for global row b, the key the host path gives the b-th prompt, so both paths draw the same tokens.
3. `policy_rows`: row b becomes prompt + response, seq = (x_0 .. x_{n_b - 1}, y_1 .. y_L) with y_L the
   EOS when the model ended, as next-token pairs: inputs_t = seq_t, targets_t = seq_{t+1}, for
   t < min(n_b + L - 1, T); loss_mask_t = [t + 1 >= n_b] (the response targets), segment 1, positions
   t. A row whose prompt leaves no room for a response token is left empty (dropped).

The host path (`jirl.train.online.pack`) packs examples first-fit into rows; this one keeps one
example per row. The losses are the same (per-token and per-episode sums do not see the layout).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp


def _source_rows(batch_size: int, samples_per_prompt: int) -> jax.Array:
    rows = jnp.arange(batch_size, dtype=jnp.int32)
    return rows // samples_per_prompt if samples_per_prompt else rows


def prompt_lengths(expert: dict[str, jax.Array]) -> jax.Array:
    """n_b [B]: BOS + prompt tokens of each row (0 for an empty row): the positions before the start
    s_b of the row's last run of response positions, plus one (a multi-turn conversation is prompted
    with everything before its last assistant turn); a row without response positions counts all."""
    segment_BT = expert["segment_ids"] > 0
    response_BT = segment_BT & (expert["loss_mask"] > 0)
    before_BT = jnp.pad(response_BT[:, :-1], ((0, 0), (1, 0)))
    t_BT = jnp.broadcast_to(jnp.arange(response_BT.shape[1]), response_BT.shape)
    start_B = jnp.max(jnp.where(response_BT & ~before_BT, t_BT, -1), axis=1)
    start_B = jnp.where(start_B >= 0, start_B, jnp.sum(segment_BT, axis=1))
    return jnp.where(jnp.any(segment_BT, axis=1), start_B + 1, 0).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("length", "pad_id", "samples_per_prompt"))
def prompt_block(
    expert: dict[str, jax.Array],
    seed_key: jax.Array,
    *,
    length: int,
    pad_id: int,
    samples_per_prompt: int = 0,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(block [B, length] right-aligned prompts, lengths [B], row keys [B]) from the expert batch."""
    inputs_BT = expert["inputs"]
    b, t = inputs_BT.shape
    source_B = _source_rows(b, samples_per_prompt)
    lengths_B = jnp.clip(prompt_lengths(expert)[source_B], 1, min(length, t))
    slot_BP = jnp.arange(length)[None, :] - (length - lengths_B[:, None])  # index into the source row
    tokens_BP = jnp.take_along_axis(inputs_BT[source_B], jnp.clip(slot_BP, 0, t - 1), axis=1)
    block_BP = jnp.where(slot_BP >= 0, tokens_BP, pad_id).astype(jnp.int32)
    keys_B = jax.vmap(lambda i: jax.random.fold_in(seed_key, i))(jnp.arange(b))
    return block_BP, lengths_B, keys_B


@functools.partial(jax.jit, static_argnames=("eos_id", "samples_per_prompt"))
def policy_rows(
    expert: dict[str, jax.Array],
    tokens_BN: jax.Array,
    *,
    eos_id: int | tuple[int, ...],
    samples_per_prompt: int = 0,
) -> dict[str, Any]:
    """(policy batch [B, T], examples dropped for want of room, response tokens) from the sampled tokens;
    a response ends at its first EOS (any of the ids when `eos_id` is a tuple)."""
    inputs_BT = expert["inputs"]
    b, t = inputs_BT.shape
    n = tokens_BN.shape[1]
    source_B = _source_rows(b, samples_per_prompt)
    prompt_B = jnp.minimum(prompt_lengths(expert)[source_B], t + 1)
    stop_BN = jnp.isin(tokens_BN, jnp.asarray(eos_id, jnp.int32))
    ended_BN = jnp.cumsum(stop_BN, axis=1) - stop_BN  # EOSes strictly before
    response_B = jnp.sum(ended_BN == 0, axis=1)  # tokens up to and including the first EOS
    if samples_per_prompt:  # the rows beyond the last whole group answer no prompt
        response_B = jnp.where(jnp.arange(b) < (b // samples_per_prompt) * samples_per_prompt, response_B, 0)
    fits_B = (response_B > 0) & (prompt_B > 0) & (prompt_B <= t)  # a prompt, and room for a response token
    used_B = jnp.where(fits_B, jnp.minimum(prompt_B + response_B - 1, t), 0)

    def seq(i_BT):  # seq_i: the prompt's tokens, then the response's
        from_prompt = jnp.take_along_axis(inputs_BT[source_B], jnp.clip(i_BT, 0, t - 1), axis=1)
        from_response = jnp.take_along_axis(tokens_BN, jnp.clip(i_BT - prompt_B[:, None], 0, n - 1), axis=1)
        return jnp.where(i_BT < prompt_B[:, None], from_prompt, from_response)

    t_BT = jnp.broadcast_to(jnp.arange(t), (b, t))
    live_BT = t_BT < used_B[:, None]
    batch = {
        "inputs": jnp.where(live_BT, seq(t_BT), 0).astype(jnp.int32),
        "targets": jnp.where(live_BT, seq(t_BT + 1), 0).astype(jnp.int32),
        "loss_mask": (live_BT & (t_BT + 1 >= prompt_B[:, None])).astype(jnp.float32),
        "segment_ids": live_BT.astype(jnp.int32),
        "positions": jnp.where(live_BT, t_BT, 0).astype(jnp.int32),
    }
    if samples_per_prompt:
        example_B = jnp.arange(b, dtype=jnp.int32) + 1
        batch["example_ids"] = jnp.where(live_BT, example_B[:, None], 0)
        batch["group_ids"] = jnp.where(live_BT, source_B[:, None] + 1, 0)
    dropped = jnp.sum((prompt_B > 0) & (response_B > 0) & ~fits_B)  # examples with no room, as `pack` counts
    return batch, dropped, jnp.sum(response_B * (prompt_B > 0))
