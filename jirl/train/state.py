"""The train state: a plain pytree (step, params, optimizer state) that jit, orbax and shardings see."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct

from jirl import models


@struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any


def create_train_state(
    model_cfg: models.ModelConfig, tx: optax.GradientTransformation, seed: int
) -> tuple[nnx.GraphDef, TrainState]:
    """Initialises the model from `seed`; returns its graphdef (static) and the train state."""
    graphdef, params = models.split(models.create(model_cfg, seed=seed))
    return graphdef, TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))
