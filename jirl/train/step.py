"""The jitted train and eval steps, generic over the objective `(stats, batch) -> (loss, metrics)`.

The model's forward pass gives the objective its per-position TokenStats (`jirl.forward`): from the
full logits (vocab_chunk = 0) or from the hidden states in vocabulary chunks.

On one device or sharded over a mesh (jirl.sharding), with optional gradient accumulation.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jirl import forward, models, sharding
from jirl.models import layers
from jirl.train.state import TrainState, create_train_state

BATCH_KEYS = ("inputs", "targets", "loss_mask")
OPTIONAL_KEYS = ("segment_ids", "positions")
ENCODER_KEYS = ("encoder_inputs", "encoder_segment_ids", "encoder_positions")


def check_batch(batch: Mapping[str, np.ndarray], vocab_size: int) -> None:
    """Host-side checks before a batch reaches the device: keys, shapes and token ids."""
    missing = [k for k in BATCH_KEYS if k not in batch]
    if missing:
        raise ValueError(
            f"batch is missing key(s) {missing}; a batch needs {list(BATCH_KEYS)} "
            f"and may have {list(OPTIONAL_KEYS)}."
        )
    shape = np.shape(batch["inputs"])
    for key in (*BATCH_KEYS, *OPTIONAL_KEYS):
        if key in batch and np.shape(batch[key]) != shape:
            raise ValueError(
                f"batch['{key}'] has shape {np.shape(batch[key])}; every batch array "
                f"must have the shape of batch['inputs'], {shape}."
            )
    if "encoder_inputs" in batch:  # encoder-decoder: the encoder side has its own length
        enc_shape = np.shape(batch["encoder_inputs"])
        for key in ENCODER_KEYS:
            if key in batch and (np.shape(batch[key]) != enc_shape or enc_shape[0] != shape[0]):
                raise ValueError(
                    f"batch['{key}'] has shape {np.shape(batch[key])}; encoder arrays must share the "
                    f"shape of batch['encoder_inputs'], {enc_shape}, with the batch size of "
                    f"batch['inputs'], {shape[0]}."
                )
    for key in ("inputs", "targets", "encoder_inputs"):
        if key not in batch:
            continue
        ids = np.asarray(batch[key])
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or high >= vocab_size:
            bad = low if low < 0 else high
            raise ValueError(
                f"batch['{key}'] holds token id {bad}, outside the model vocabulary "
                f"[0, {vocab_size}); check the tokenizer against model.vocab_size."
            )


def _split_microbatches(x: jax.Array, microbatches: int) -> jax.Array:
    """[B, ...] -> [M, B/M, ...], microbatch i = rows i, i + M, i + 2M, ... (strided, so that each
    microbatch spreads over all data-parallel devices as the batch does)."""
    b = x.shape[0]
    return x.reshape(b // microbatches, microbatches, *x.shape[1:]).swapaxes(0, 1)


def _is_count(key: str) -> bool:
    return key == "tokens" or key.endswith("_tokens")


def _stats_fn(graphdef: nnx.GraphDef, loss_fn: Callable, head: forward.HeadOptions) -> Callable:
    """(params, batch) -> TokenStats, with the mean logit when the objective needs it."""
    mean_logit = bool(getattr(loss_fn, "needs_mean_logit", False))
    return lambda params, batch: forward.token_stats(graphdef, params, batch, head, mean_logit=mean_logit)


def make_train_step(
    graphdef: nnx.GraphDef,
    loss_fn: Callable,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    *,
    head: forward.HeadOptions = forward.DEFAULT_HEAD,
    microbatches: int = 1,
    mesh: jax.sharding.Mesh | None = None,
    state_shardings: Any = None,
    rules: Mapping[str, Any] | None = None,
) -> Callable:
    """A jitted `(state, batch) -> (state, metrics)`; the state is donated.

    head: how the objective's statistics are computed (jirl.forward.HeadOptions): from the full
    logits (vocab_chunk=0), or in vocabulary chunks from the hidden states.

    microbatches = M > 1 accumulates gradients over M slices of the batch. The losses are token
    means L = sum_i S_i / N with N = sum_i N_i (N_i = metrics["tokens"] of slice i), so
    grad L = sum_i N_i grad L_i / N and every mean metric is sum_i N_i m_i / N (token counts are
    summed): the same step as M = 1 (exactly so for 0/1 loss masks), with 1/M of the activations.

    With `mesh` and `state_shardings` (from `create_sharded_train_state`), the step is one jit with
    those in/out shardings, the batch split over the data axes (`jirl.sharding.batch_sharding`),
    replicated metrics, and activation sharding constraints at block boundaries.
    """
    if not isinstance(microbatches, int) or microbatches < 1:
        raise ValueError(f"train.microbatches={microbatches!r} must be a positive integer.")
    if (mesh is None) != (state_shardings is None):
        raise ValueError("make_train_step needs both mesh= and state_shardings=, or neither.")
    constrain_fn = None if mesh is None else sharding.activation_constrainer(mesh, rules)
    grad_shardings = None if mesh is None else state_shardings.params
    batch_sharding = None if mesh is None else sharding.batch_sharding(mesh, rules)
    stats_of = _stats_fn(graphdef, loss_fn, head)

    def loss_and_grads(params, batch):
        def loss_of(p):
            if "policy" not in batch:
                return loss_fn(stats_of(p, batch), batch)
            expert = {k: v for k, v in batch.items() if k != "policy"}  # online: policy samples too
            return loss_fn(
                stats_of(p, expert),
                expert,
                policy_stats=stats_of(p, batch["policy"]),
                policy_batch=batch["policy"],
            )

        (loss, metrics), grads = jax.value_and_grad(loss_of, has_aux=True)(params)
        if grad_shardings is not None:
            grads = jax.lax.with_sharding_constraint(grads, grad_shardings)
        return loss, metrics, grads

    def accumulated(params, batch):
        b = jax.tree.leaves(batch)[0].shape[0]
        if b % microbatches:
            raise ValueError(
                f"the batch size {b} is not divisible by train.microbatches={microbatches}; "
                "microbatches must divide train.batch_size."
            )
        micro = jax.tree.map(lambda x: _split_microbatches(x, microbatches), batch)
        if mesh is not None and (b // microbatches) % sharding.data_parallel_size(mesh, rules) == 0:
            spec = jax.sharding.PartitionSpec(None, *batch_sharding.spec)
            micro = jax.lax.with_sharding_constraint(micro, jax.NamedSharding(mesh, spec))
        first = jax.tree.map(lambda x: x[0], micro)
        _, metrics_shape, _ = jax.eval_shape(loss_and_grads, params, first)
        if "tokens" not in metrics_shape:
            raise ValueError(
                f"train.microbatches={microbatches} needs the loss to report metrics['tokens'] "
                "(its mask sum) to weight the slices; use microbatches=1 for this loss."
            )

        def body(carry, mb):
            loss_sum, metric_sums, grad_sums = carry
            loss, metrics, grads = loss_and_grads(params, mb)
            n = metrics["tokens"].astype(jnp.float32)
            grad_sums = jax.tree.map(lambda s, g: s + n * g, grad_sums, grads)
            metric_sums = {k: metric_sums[k] + (v if _is_count(k) else n * v) for k, v in metrics.items()}
            return (loss_sum + n * loss, metric_sums, grad_sums), None

        zeros = (
            jnp.zeros((), jnp.float32),
            {k: jnp.zeros(v.shape, v.dtype) for k, v in metrics_shape.items()},
            jax.tree.map(jnp.zeros_like, params),
        )
        (loss_sum, metric_sums, grad_sums), _ = jax.lax.scan(body, zeros, micro)
        inv_n = 1.0 / jnp.maximum(metric_sums["tokens"].astype(jnp.float32), 1.0)
        metrics = {k: v if _is_count(k) else v * inv_n for k, v in metric_sums.items()}
        grads = jax.tree.map(lambda g: g * inv_n, grad_sums)
        return loss_sum * inv_n, metrics, grads

    def train_step(state: TrainState, batch: Mapping[str, jax.Array]):
        with layers.activation_sharding(constrain_fn):
            if microbatches == 1:
                loss, metrics, grads = loss_and_grads(state.params, batch)
            else:
                loss, metrics, grads = accumulated(state.params, batch)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = dict(
            metrics, loss=loss, grad_norm=optax.global_norm(grads), learning_rate=schedule(state.step)
        )
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

    if mesh is None:
        return jax.jit(train_step, donate_argnums=0)
    return jax.jit(
        train_step,
        in_shardings=(state_shardings, batch_sharding),
        out_shardings=(state_shardings, sharding.replicated(mesh)),
        donate_argnums=0,
    )


def sharded_state_target(
    model_cfg: models.ModelConfig,
    tx: optax.GradientTransformation,
    mesh: jax.sharding.Mesh,
    rules: Mapping[str, Any] | None = None,
) -> tuple[nnx.GraphDef, TrainState, TrainState]:
    """(graphdef, abstract state, state shardings) without allocating anything.

    The abstract state's ShapeDtypeStructs carry the shardings: a restore target for orbax.
    """
    abstract_model = nnx.eval_shape(lambda: models.create(model_cfg, seed=0))
    graphdef, _ = models.split(abstract_model)
    shapes = jax.eval_shape(lambda: create_train_state(model_cfg, tx, seed=0)[1])
    shardings = sharding.state_shardings(shapes, models.logical_axes(abstract_model), mesh, tx, rules)
    target = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), shapes, shardings)
    return graphdef, target, shardings


def create_sharded_train_state(
    model_cfg: models.ModelConfig,
    tx: optax.GradientTransformation,
    seed: int,
    mesh: jax.sharding.Mesh,
    rules: Mapping[str, Any] | None = None,
) -> tuple[nnx.GraphDef, TrainState, TrainState]:
    """(graphdef, state, state shardings): the initial state made by one jit whose outputs are
    already sharded, so the full model never sits on one device. Same values as create_train_state."""
    graphdef, _, shardings = sharded_state_target(model_cfg, tx, mesh, rules)
    init = jax.jit(lambda: create_train_state(model_cfg, tx, seed)[1], out_shardings=shardings)
    return graphdef, init(), shardings


def make_eval_step(
    graphdef: nnx.GraphDef, loss_fn: Callable, *, head: forward.HeadOptions = forward.DEFAULT_HEAD
) -> Callable:
    """A jitted `(params, batch) -> metrics` (the loss's metrics, no update)."""
    stats_of = _stats_fn(graphdef, loss_fn, head)

    def eval_step(params: Any, batch: Mapping[str, jax.Array]):
        loss, metrics = loss_fn(stats_of(params, batch), batch)
        return dict(metrics, loss=loss)

    return jax.jit(eval_step)
