"""A LoRA run's parts (`model.lora`): the adapter train state, the frozen base and its fingerprint.

The train state's params are the adapters alone ({"layers": {weight: {"a", "b"}}}, float32), so the
optimizer state covers only them; the base params are the model's, held apart in
`model.lora.base_dtype`, given to the step as an argument and never differentiated. The base is
`model.init_from` (a Hugging Face folder, or a jirl workdir: its newest params, merged when that run
was a LoRA run too) read again on every start, or without one the model made from `train.seed`.
A checkpoint stores the adapters, their optimizer state and the base's fingerprint (`fingerprint`),
and a resume on another base is refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any

import jax
import optax
from flax import nnx

from jirl import experiment, models, sharding
from jirl.errors import ConfigError
from jirl.experiment import Run
from jirl.models import lora as lora_lib
from jirl.train.state import TrainState

_SAMPLE = 1 << 20  # bytes hashed at the start, middle and end of each weights file


@dataclasses.dataclass(frozen=True, eq=False)
class Targets:
    """Restore targets and shardings of a LoRA run: the adapter state and the frozen base."""

    graphdef: nnx.GraphDef
    state: TrainState  # ShapeDtypeStructs carrying shardings
    shardings: TrainState
    base: Any  # the base params as ShapeDtypeStructs (base dtype) carrying shardings
    base_shardings: Any


def fresh_state(
    model_cfg: models.ModelConfig, lora: lora_lib.LoraConfig, tx: optax.GradientTransformation, seed: int
):
    """Step 0: fresh adapters (B = 0, so the model is the base) and their optimizer state."""
    import jax.numpy as jnp

    adapters = lora_lib.init_adapters(model_cfg, lora, seed)
    return TrainState(step=jnp.zeros((), jnp.int32), params=adapters, opt_state=tx.init(adapters))


def targets(run: Run) -> Targets:
    """The adapter state's and the base's shapes and shardings, without allocating anything."""
    cfg, lora, mesh, rules = run.model, run.lora, run.mesh, run.rules
    abstract_model = nnx.eval_shape(lambda: models.create(cfg, seed=0))
    graphdef, base_shapes = models.split(abstract_model)
    base_shardings = sharding.param_shardings(models.logical_axes(abstract_model), base_shapes, mesh, rules)
    dtype = jax.numpy.dtype(lora.base_dtype)
    base = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(
            x.shape, dtype if jax.numpy.issubdtype(x.dtype, jax.numpy.floating) else x.dtype, sharding=s
        ),
        base_shapes,
        base_shardings,
    )
    shapes = jax.eval_shape(lambda: fresh_state(cfg, lora, run.tx, 0))
    shardings = sharding.state_shardings(shapes, lora_lib.adapter_axes(cfg, lora), mesh, run.tx, rules)
    state = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), shapes, shardings)
    return Targets(graphdef, state, shardings, base, base_shardings)


def initial_state(run: Run, t: Targets) -> TrainState:
    """Fresh adapters from `train.seed`, made sharded by one jit."""
    seed = int(run.config.train.seed)
    return jax.jit(lambda: fresh_state(run.model, run.lora, run.tx, seed), out_shardings=t.shardings)()


def load_base(run: Run, t: Targets) -> Any:
    """The frozen base params in the base dtype, placed on the run's shardings: `model.init_from`
    (a Hugging Face folder or a jirl workdir) or, without one, the model made from `train.seed`."""
    config, lora = run.config, run.lora
    init_from = os.path.expanduser(config.model.get("init_from") or "")
    cast = jax.jit(lambda p: lora_lib.base_params(p, lora), out_shardings=t.base_shardings)
    if init_from and experiment.saved_run_config(init_from) is not None:  # a jirl workdir
        from jirl.train.workdir import load_trained

        return cast(load_trained(init_from).params)
    if init_from:
        from jirl.models import hf

        _, params = hf.load_params(init_from, run.model, t.base_shardings)
        return cast(params)
    seed = int(config.train.seed)
    make = lambda: lora_lib.base_params(models.split(models.create(run.model, seed=seed))[1], lora)  # noqa: E731
    return jax.jit(make, out_shardings=t.base_shardings)()


def merger(run: Run, t: Targets, float32: bool = False):
    """A jitted (base, adapters) -> merged params (W + (alpha / r) A B in float32, the other weights in
    the base dtype; `float32`: every weight in float32, as a full run holds them), placed as the base
    is: what sampling, evaluation and export read."""
    lora = run.lora

    def merge(base, adapters):
        merged = lora_lib.merge(base, adapters, lora)
        return jax.tree.map(lambda x: x.astype("float32"), merged) if float32 else merged

    return jax.jit(merge, out_shardings=t.base_shardings)


def _file_digest(path: str) -> list[Any]:
    """[size, sha256 of the first, middle and last MiB]: a cheap identity of a large weights file."""
    size = os.path.getsize(path)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for offset in sorted({0, max(size // 2 - _SAMPLE // 2, 0), max(size - _SAMPLE, 0)}):
            f.seek(offset)
            digest.update(f.read(_SAMPLE))
    return [size, digest.hexdigest()]


def fingerprint(config: Any) -> dict[str, Any]:
    """A small identity of the run's base: a Hugging Face folder's config.json and weights files
    (sizes and sampled hashes), a jirl workdir's config and newest checkpoint step, or the seed and
    model of a base made from the seed."""
    init_from = os.path.expanduser(config.model.get("init_from") or "")
    if not init_from:
        return {"seed": int(config.train.seed), "preset": str(config.model.get("preset", ""))}
    if experiment.saved_run_config(init_from) is not None:
        steps = [int(p) for p in os.listdir(os.path.join(init_from, "checkpoints")) if p.isdigit()]
        with open(os.path.join(init_from, "config.json"), "rb") as f:
            config_hash = hashlib.sha256(f.read()).hexdigest()
        return {"workdir_config": config_hash, "workdir_step": max(steps, default=-1)}
    files = sorted(n for n in os.listdir(init_from) if n.endswith(".safetensors") or n == "config.json")
    return {"files": {n: _file_digest(os.path.join(init_from, n)) for n in files}}


def check_fingerprint(saved: dict[str, Any] | None, config: Any, step: int) -> None:
    """Refuses to resume adapters trained on another base than this run's."""
    if saved is None:
        return
    if saved != json.loads(json.dumps(fingerprint(config))):
        raise ConfigError(
            f"the checkpoint at step {step} holds LoRA adapters trained on another base than "
            f"model.init_from={config.model.get('init_from') or '(none: the seed)'!r}; resume with the base "
            "it was trained on, or use a new --workdir."
        )
