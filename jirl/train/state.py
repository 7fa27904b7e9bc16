"""The train state: a plain pytree (step, params, optimizer state) that jit, orbax and shardings see.

It is made fresh from a seed, sharded from the start (`create_sharded_train_state`), from a Hugging
Face checkpoint (`pretrained_state`) or given params (`state_of_params`), or described without
memory as a restore target (`sharded_state_target`).
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, struct

from jirl import models, sharding


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


def pretrained_state(path: str, model_cfg: models.ModelConfig, tx: Any, shardings: TrainState) -> TrainState:
    """A train state whose params are a Hugging Face checkpoint, placed on the run's shardings."""
    from jirl.models import hf

    _, params = hf.load_params(path, model_cfg, shardings.params)  # each tensor onto the mesh as read
    return state_of_params(params, tx, shardings)


def state_of_params(params: Any, tx: Any, shardings: TrainState) -> TrainState:
    """Step 0 with these params (placed on the run's shardings) and a fresh optimizer state."""
    params = jax.device_put(params, shardings.params)
    opt_state = jax.jit(tx.init, out_shardings=shardings.opt_state)(params)
    step = jax.device_put(np.zeros((), np.int32), shardings.step)
    return TrainState(step=step, params=params, opt_state=opt_state)
