"""Helpers shared by the objectives: input checks, masked means, soft-Q quantities.

Notation (docs/architecture.md): logits z_t are soft Q-values; Q_t = z_t[a_t], V_t = logsumexp(z_t),
c_t = m_{t+1} [seg_{t+1} == seg_t] (c_{T-1} = 0), V'_t = c_t V_{t+1}, r_t = Q_t - gamma V'_t.

Every mean is sum / count, divided in `masked_mean` alone. A batch may carry the counts to divide
by (`COUNT_KEYS`, from `batch_counts` of a larger batch): gradient accumulation gives each slice
of a batch the whole batch's counts, so that the slices' means add up to the whole batch's.
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp

from jirl.errors import ConfigError

REQUIRED_KEYS = ("targets", "loss_mask")
# Float32 scalars a batch may carry: the loss-token and episode counts its means divide by.
TOKEN_COUNT, EPISODE_COUNT = COUNT_KEYS = ("token_count", "episode_count")


def check_batch(batch: Mapping[str, jax.Array], shape_BT: tuple[int, ...], *, name: str = "batch") -> None:
    """Static (trace-time) checks: required keys present, every [B, T] array of shape `shape_BT`."""
    missing = [k for k in REQUIRED_KEYS if k not in batch]
    if missing:
        raise ConfigError(
            f"{name} is missing key(s) {missing}; a loss needs {list(REQUIRED_KEYS)} "
            f"(optional: 'segment_ids'), got {sorted(batch)}."
        )
    for key in ("targets", "loss_mask", "segment_ids"):
        if key in batch and tuple(batch[key].shape) != tuple(shape_BT):
            raise ConfigError(
                f"{name}['{key}'] has shape {tuple(batch[key].shape)} but the model's outputs are "
                f"[B, T] = {tuple(shape_BT)}; every batch array must be [B, T]."
            )


def check_stats(stats: Any, batch: Mapping[str, jax.Array], *, name: str = "batch") -> None:
    """An objective's inputs: TokenStats (jirl.losses.head) of the batch's shape."""
    if not hasattr(stats, "value") or not hasattr(stats, "q"):
        shape = getattr(stats, "shape", None)
        raise ValueError(
            "an objective reads per-position statistics, not logits: pass "
            "jirl.losses.head.from_logits(logits_BTV, batch) (or from_hidden(...)); got "
            f"{type(stats).__name__}{'' if shape is None else ' of shape ' + str(tuple(shape))}."
        )
    check_batch(batch, tuple(stats.q.shape), name=name)


def masked_mean(x_BT: jax.Array, mask_BT: jax.Array, count: jax.Array | None = None) -> jax.Array:
    """sum(m x) / max(n, 1), accumulated in float32; masked entries never leak NaN.

    n = sum(m), or `count` when given (a larger batch's count, of which this batch is a slice).
    """
    mask_BT = mask_BT.astype(jnp.float32)
    total = jnp.sum(jnp.where(mask_BT > 0, x_BT.astype(jnp.float32) * mask_BT, 0.0))
    return total / jnp.maximum(jnp.sum(mask_BT) if count is None else count, 1.0)


def continuation_mask(loss_mask_BT: jax.Array, segment_ids_BT: jax.Array | None) -> jax.Array:
    """c_t = m_{t+1} * [seg_{t+1} == seg_t], with c_{T-1} = 0: is the next state a response state?"""
    next_mask_BT = jnp.pad(loss_mask_BT[:, 1:].astype(jnp.float32), ((0, 0), (0, 1)))
    if segment_ids_BT is None:
        return next_mask_BT
    same_segment_BT = jnp.pad(segment_ids_BT[:, 1:] == segment_ids_BT[:, :-1], ((0, 0), (0, 1)))
    return next_mask_BT * same_segment_BT.astype(jnp.float32)


def last_turn_mask(loss_mask_BT: jax.Array, segment_ids_BT: jax.Array | None) -> jax.Array:
    """1 on the positions of each segment's last response (its last run of m_t = 1), else 0.

    A multi-turn conversation has one run per assistant turn; online sampling prompts the policy
    with everything before the last one (jirl.train.online). A masked t is in its segment's last
    run when the next run start u > t (m_u = 1, m_{u-1} c_{u-1} = 0) lies in another segment or
    does not exist.
    """
    mask_BT = loss_mask_BT.astype(jnp.float32)
    continues_run_BT = jnp.pad(
        mask_BT[:, :-1] * continuation_mask(mask_BT, segment_ids_BT)[:, :-1], ((0, 0), (1, 0))
    )
    starts_BT = mask_BT * (1.0 - continues_run_BT)
    t_size = mask_BT.shape[1]
    positions_BT = jnp.broadcast_to(jnp.arange(t_size), mask_BT.shape)
    start_positions_BT = jnp.where(starts_BT > 0, positions_BT, t_size)
    start_at_or_after_BT = jax.lax.cummin(start_positions_BT, axis=1, reverse=True)
    next_start_BT = jnp.pad(start_at_or_after_BT[:, 1:], ((0, 0), (0, 1)), constant_values=t_size)
    last_BT = next_start_BT == t_size
    if segment_ids_BT is not None:
        segment_there_BT = jnp.take_along_axis(segment_ids_BT, jnp.minimum(next_start_BT, t_size - 1), axis=1)
        last_BT = last_BT | (segment_there_BT != segment_ids_BT)
    return mask_BT * last_BT.astype(jnp.float32)


class SoftQ(NamedTuple):
    """Per-position soft-Q quantities, all [B, T] float32 and finite (0 where m_t = 0)."""

    q: jax.Array  # Q_t = z_t[a_t]
    value: jax.Array  # V_t = logsumexp z_t
    next_value: jax.Array  # V'_t = c_t V_{t+1}
    correct: jax.Array  # argmax z_t == a_t
    mask: jax.Array  # m_t as float32
    continues: jax.Array  # c_t: the next state is a response state of the same episode
    last_turn: jax.Array  # 1 on each segment's last response (`last_turn_mask`), the episodes of S
    token_count: jax.Array | None = None  # the batch's TOKEN_COUNT when it carries one
    episode_count: jax.Array | None = None  # the batch's EPISODE_COUNT when it carries one


def batch_counts(batch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """{TOKEN_COUNT: sum_t m_t, EPISODE_COUNT: sum_t l_t (1 - c_t)}: what this batch's means divide
    by (l_t: `last_turn_mask`, so EPISODE_COUNT is the number of segments with a response).

    They read the masks and segments alone, never the parameters; given to every slice of the
    batch (`dict(slice, **batch_counts(batch))`), each slice's means are its share of the batch's.
    """
    mask_BT = batch["loss_mask"].astype(jnp.float32)
    c_BT = continuation_mask(mask_BT, batch.get("segment_ids"))
    last_BT = last_turn_mask(mask_BT, batch.get("segment_ids"))
    return {TOKEN_COUNT: jnp.sum(mask_BT), EPISODE_COUNT: jnp.sum(last_BT * (1.0 - c_BT))}


def soft_q(stats: Any, batch: Mapping[str, jax.Array], *, stop_grad_next_value: bool = False) -> SoftQ:
    """Q, V and V' (a shift of V) from the head's TokenStats, masked.

    The head reads zeros at masked positions, so its statistics there are finite; they are zeroed
    here, and V_{t+1} enters only where c_t = 1 (a response position, m_{t+1} = 1).
    """
    mask_BT = batch["loss_mask"].astype(jnp.float32)
    value_BT = stats.value.astype(jnp.float32)
    c_BT = continuation_mask(mask_BT, batch.get("segment_ids"))
    shifted_BT = jnp.pad(value_BT[:, 1:], ((0, 0), (0, 1)))
    if stop_grad_next_value:
        shifted_BT = jax.lax.stop_gradient(shifted_BT)
    return SoftQ(
        q=stats.q.astype(jnp.float32) * mask_BT,
        value=value_BT * mask_BT,
        next_value=c_BT * shifted_BT,
        correct=jax.lax.stop_gradient(stats.correct).astype(jnp.float32),
        mask=mask_BT,
        continues=c_BT,
        last_turn=last_turn_mask(mask_BT, batch.get("segment_ids")),
        token_count=batch.get(TOKEN_COUNT),
        episode_count=batch.get(EPISODE_COUNT),
    )


def token_mean(x_BT: jax.Array, sq: SoftQ) -> jax.Array:
    """The masked token mean of x over sq's batch (divided by its TOKEN_COUNT when it carries one)."""
    return masked_mean(x_BT, sq.mask, sq.token_count)


def episode_mean(x_BT: jax.Array, sq: SoftQ) -> jax.Array:
    """sum_n sum_{t in n} x_t / N: a per-episode sum, averaged over the N episodes of a batch.

    An episode is a segment's last response: its last run of masked positions, ending where c_t = 0
    (its terminal state). With one response per segment that is every response; in a multi-turn
    conversation it is the last assistant turn, the one online sampling answers from the same
    prompt, so that expert and policy episodes start from the same states. N = sum_t l_t (1 - c_t)
    counts those ends (or the batch's EPISODE_COUNT); max(N, 1) guards an empty batch.
    """
    ends = jnp.sum(sq.last_turn * (1.0 - sq.continues)) if sq.episode_count is None else sq.episode_count
    return masked_mean(x_BT, sq.last_turn, ends)


def token_metrics(sq: SoftQ, gamma: float) -> dict[str, jax.Array]:
    """Metrics over masked positions: nll, td_reg (mean r^2), reward, value, accuracy, tokens."""
    reward_BT = sq.q - gamma * sq.next_value
    return {
        "nll": token_mean(sq.value - sq.q, sq),
        "td_reg": token_mean(jnp.square(reward_BT), sq),
        "reward": token_mean(reward_BT, sq),
        "value": token_mean(sq.value, sq),
        "accuracy": token_mean(sq.correct, sq),
        "tokens": jnp.sum(sq.mask),
    }
