"""How arrays are laid out on a device mesh: the mesh, the logical-axis rules and the shardings.

One mesh with axes ("data", "fsdp", "tensor"). Arrays name their dimensions with logical axes
(`embed`, `mlp`, `heads`, `kv`, `vocab`, `layers` for parameters, `batch` and `activation_*` for
data); one rules table maps each logical name to a mesh axis, a tuple of mesh axes, or None
(replicated). A dimension is split over its mesh axes only when its size divides their product;
otherwise it is replicated and a warning says so once. A mesh axis is used at most once per array:
a later dimension mapped to an axis already taken by an earlier one is replicated.

    mesh = make_mesh({"data": 2, "fsdp": -1, "tensor": 1})
    rules = make_rules(config.mesh.get("rules"))
    shardings = state_shardings(abstract_state, logical_axes, mesh, tx, rules)
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Iterable, Mapping, Sequence

import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jirl.errors import ConfigError

MESH_AXES = ("data", "fsdp", "tensor")
DATA_AXES = ("data", "fsdp")  # the batch dimension is split over both

# logical name -> mesh axis, tuple of mesh axes, or None (replicated).
DEFAULT_RULES: dict[str, str | tuple[str, ...] | None] = {
    # parameters
    "vocab": "tensor",
    "embed": "fsdp",
    "mlp": "tensor",
    "heads": "tensor",
    "kv": None,  # head_dim: `heads` already takes the tensor axis in q/k/v/o
    "layers": None,
    # data and activations
    "batch": DATA_AXES,
    "activation_batch": DATA_AXES,
    "activation_length": None,
    "activation_embed": None,
    "activation_vocab": "tensor",
}

Rules = Mapping[str, "str | tuple[str, ...] | None"]

_warned: set[str] = set()


def make_mesh(mesh_cfg: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A ("data", "fsdp", "tensor") mesh with Auto axis types; one size may be -1 (the remaining devices)."""
    unknown = sorted(set(mesh_cfg) - set(MESH_AXES))
    if unknown:
        raise ConfigError(f"mesh has no axis/axes {unknown}; accepted axes: {list(MESH_AXES)}.")
    devices = list(jax.devices() if devices is None else devices)
    sizes = [int(mesh_cfg.get(name, 1)) for name in MESH_AXES]
    shape = " x ".join(f"{name}={size}" for name, size in zip(MESH_AXES, sizes))
    if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
        raise ConfigError(f"mesh {shape} is invalid; sizes must be positive, with at most one -1 (the rest).")
    if -1 in sizes:
        known = math.prod(s for s in sizes if s != -1)
        if len(devices) % known:
            raise ConfigError(
                f"mesh {shape} cannot take the rest of {len(devices)} devices, as {known} does not divide "
                f"{len(devices)}; sizes must multiply to the device count (-1 takes the rest)."
            )
        sizes[sizes.index(-1)] = len(devices) // known
    if math.prod(sizes) != len(devices):
        raise ConfigError(
            f"mesh {shape} = {math.prod(sizes)} devices, but {len(devices)} are available; "
            "sizes must multiply to the device count (-1 takes the rest)."
        )
    return jax.make_mesh(
        tuple(sizes), MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * 3, devices=devices
    )


def make_rules(overrides: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None) -> dict[str, Any]:
    """DEFAULT_RULES updated by `overrides` (config `mesh.rules`: a mapping or a list of (name, axes) pairs).

    Axes are a mesh axis name, a list/tuple of them, or None; new logical names may be added.
    """
    rules = dict(DEFAULT_RULES)
    if overrides is None:
        return rules
    pairs = overrides.items() if isinstance(overrides, Mapping) else overrides
    for name, axes in pairs:
        if axes is None or isinstance(axes, str):
            value = axes
        else:
            value = tuple(axes)
        for axis in (value,) if isinstance(value, str) else value or ():
            if axis not in MESH_AXES:
                raise ConfigError(
                    f"mesh.rules maps '{name}' to unknown mesh axis {axis!r}; accepted: "
                    f"{list(MESH_AXES)} (a name, a list of names, or None)."
                )
        rules[str(name)] = value
    return rules


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, stacklevel=3)


def logical_to_spec(
    names: Sequence[str | None], shape: Sequence[int] | None, mesh: Mesh, rules: Rules | None = None
) -> PartitionSpec:
    """The PartitionSpec of an array of `shape` whose dimensions are named `names`.

    Dimension i goes to rules[names[i]] when its size divides the product of those mesh axes'
    sizes (not checked when shape is None) and none of them is taken by an earlier dimension;
    otherwise it is replicated.
    """
    rules = DEFAULT_RULES if rules is None else rules
    used: set[str] = set()
    spec = []
    for name, size in zip(names, [None] * len(names) if shape is None else shape):
        if name is None:
            spec.append(None)
            continue
        if name not in rules:
            raise ConfigError(
                f"logical axis '{name}' has no sharding rule; known names: {sorted(rules)} "
                "(add it to mesh.rules)."
            )
        axes = rules[name]
        axes = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
        axes = tuple(a for a in axes if a not in used)
        parts = math.prod(mesh.shape[a] for a in axes)
        if parts > 1 and size is not None and size % parts:
            _warn_once(
                f"logical axis '{name}' of size {size} is not divisible by mesh {axes} = {parts}; "
                "that dimension is replicated."
            )
            axes = ()
        used.update(axes)
        spec.append(None if not axes else axes[0] if len(axes) == 1 else axes)
    return PartitionSpec(*spec)


def _is_names(x: Any) -> bool:
    return isinstance(x, tuple) and all(n is None or isinstance(n, str) for n in x)


def logical_to_sharding(axes_tree: Any, mesh: Mesh, rules: Rules | None = None, shapes: Any = None) -> Any:
    """A tree of NamedSharding from a tree of logical-name tuples.

    `shapes`, a matching tree of arrays or ShapeDtypeStructs, enables the divisibility fallback.
    """
    if shapes is None:
        return jax.tree.map(
            lambda names: NamedSharding(mesh, logical_to_spec(names, None, mesh, rules)),
            axes_tree,
            is_leaf=_is_names,
        )
    return jax.tree.map(
        lambda names, x: NamedSharding(mesh, logical_to_spec(names, np.shape(x), mesh, rules)),
        axes_tree,
        shapes,
        is_leaf=_is_names,
    )


def param_shardings(axes_tree: Any, params: Any, mesh: Mesh, rules: Rules | None = None) -> Any:
    """Shardings of the params tree (`axes_tree` from `jirl.models.logical_axes`; params may be abstract)."""
    return logical_to_sharding(axes_tree, mesh, rules, shapes=params)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def state_shardings(
    abstract_state: Any,
    axes_tree: Any,
    mesh: Mesh,
    tx: optax.GradientTransformation,
    rules: Rules | None = None,
) -> Any:
    """Shardings of a TrainState: params by their logical axes, optimizer-state subtrees that
    mirror the params (Adam's mu, nu) likewise, everything else (step, counts) replicated."""
    params = param_shardings(axes_tree, abstract_state.params, mesh, rules)
    opt_state = optax.tree_utils.tree_map_params(
        tx,
        lambda _, sharding: sharding,
        abstract_state.opt_state,
        params,
        transform_non_params=lambda _: replicated(mesh),
    )
    return abstract_state.replace(step=replicated(mesh), params=params, opt_state=opt_state)


def data_parallel_size(mesh: Mesh, rules: Rules | None = None) -> int:
    """How many ways the batch dimension is split: the product of the mesh axes of `batch`."""
    axes = (DEFAULT_RULES if rules is None else rules)["batch"]
    axes = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
    return math.prod(mesh.shape[a] for a in axes)


def batch_sharding(mesh: Mesh, rules: Rules | None = None) -> NamedSharding:
    """[B, ...] arrays split over the batch axes (default ("data", "fsdp")), other dims replicated."""
    axes = (DEFAULT_RULES if rules is None else rules)["batch"]
    return NamedSharding(mesh, PartitionSpec(axes))


def check_batch_size(batch_size: int, mesh: Mesh, rules: Rules | None = None, microbatches: int = 1) -> None:
    """The global batch (and each microbatch) must split evenly over the data-parallel devices."""
    dp = data_parallel_size(mesh, rules)
    if microbatches < 1 or batch_size % microbatches:
        raise ConfigError(
            f"train.batch_size={batch_size} is not divisible by train.microbatches={microbatches}; "
            "microbatches must be a positive divisor of the batch size."
        )
    if (batch_size // microbatches) % dp:
        per = "" if microbatches == 1 else f" / train.microbatches={microbatches}"
        raise ConfigError(
            f"train.batch_size={batch_size}{per} is not divisible by the data-parallel size "
            f"data*fsdp={dp}; it must be a multiple of {dp * microbatches}."
        )


def shard_batch(batch: Mapping[str, Any], mesh: Mesh, rules: Rules | None = None) -> dict[str, jax.Array]:
    """Global arrays from this process's rows of the batch (all rows on a single host)."""
    sharding = batch_sharding(mesh, rules)
    return jax.tree.map(
        lambda v: jax.make_array_from_process_local_data(sharding, np.asarray(v)), dict(batch)
    )


def activation_constrainer(mesh: Mesh, rules: Rules | None = None) -> Callable:
    """`constrain(x, names)`: with_sharding_constraint of x by its logical dimension names.

    Install it for the model with `jirl.models.layers.activation_sharding(constrain)`.
    """

    def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
        spec = logical_to_spec(names, x.shape, mesh, rules)
        return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))

    return constrain


def bytes_per_device(tree: Any) -> dict[Any, int]:
    """Bytes each device holds of the arrays in `tree` (its addressable shards)."""
    out: dict[Any, int] = {}
    for leaf in jax.tree.leaves(tree):
        for shard in leaf.addressable_shards:
            out[shard.device] = out.get(shard.device, 0) + shard.data.nbytes
    return out


__all__ = [
    "DATA_AXES",
    "DEFAULT_RULES",
    "MESH_AXES",
    "activation_constrainer",
    "batch_sharding",
    "bytes_per_device",
    "check_batch_size",
    "data_parallel_size",
    "logical_to_sharding",
    "logical_to_spec",
    "make_mesh",
    "make_rules",
    "param_shardings",
    "replicated",
    "shard_batch",
    "state_shardings",
]
