"""The jitted train and eval steps, generic over the loss `(logits_BTV, batch) -> (loss, metrics)`."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import numpy as np
import optax
from flax import nnx

from jirl import models
from jirl.train.state import TrainState

BATCH_KEYS = ("inputs", "targets", "loss_mask")
OPTIONAL_KEYS = ("segment_ids", "positions")


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
    for key in ("inputs", "targets"):
        ids = np.asarray(batch[key])
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or high >= vocab_size:
            bad = low if low < 0 else high
            raise ValueError(
                f"batch['{key}'] holds token id {bad}, outside the model vocabulary "
                f"[0, {vocab_size}); check the tokenizer against model.vocab_size."
            )


def forward(graphdef: nnx.GraphDef, params: Any, batch: Mapping[str, jax.Array]) -> jax.Array:
    """logits_BTV for a decoder batch (packed rows use segment_ids/positions when present)."""
    return models.apply(
        graphdef,
        params,
        batch["inputs"],
        positions=batch.get("positions"),
        segment_ids=batch.get("segment_ids"),
    )


def make_train_step(
    graphdef: nnx.GraphDef, loss_fn: Callable, tx: optax.GradientTransformation, schedule: optax.Schedule
) -> Callable:
    """A jitted `(state, batch) -> (state, metrics)`; the state is donated."""

    def train_step(state: TrainState, batch: Mapping[str, jax.Array]):
        def loss_of(params):
            return loss_fn(forward(graphdef, params, batch), batch)

        (loss, metrics), grads = jax.value_and_grad(loss_of, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = dict(
            metrics, loss=loss, grad_norm=optax.global_norm(grads), learning_rate=schedule(state.step)
        )
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return jax.jit(train_step, donate_argnums=0)


def make_eval_step(graphdef: nnx.GraphDef, loss_fn: Callable) -> Callable:
    """A jitted `(params, batch) -> metrics` (the loss's metrics, no update)."""

    def eval_step(params: Any, batch: Mapping[str, jax.Array]):
        loss, metrics = loss_fn(forward(graphdef, params, batch), batch)
        return dict(metrics, loss=loss)

    return jax.jit(eval_step)
