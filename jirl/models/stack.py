"""Parameters stacked per layer, and the loop that runs a layer body over them.

Every per-layer parameter is one [L, ...] array, so the same parameters serve a `lax.scan` over
layers (fast compiles) or an unrolled Python loop; every parameter carries logical axis names
(`vocab`, `embed`, `heads`, `kv`, `mlp`, `layers`) for sharding.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx

# A layer spec: (per-layer shape, logical axes, init std: None for ones, 0 for zeros).
LayerSpecs = dict[str, tuple[tuple[int, ...], tuple[str | None, ...], float | None]]

# model.remat -> what jax.checkpoint keeps of a layer's forward pass for the backward pass.
REMAT_POLICIES = {
    "full": None,  # save nothing but the layer inputs
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def param(
    key: jax.Array, shape: tuple[int, ...], axes: tuple[str | None, ...], std: float | None
) -> nnx.Param:
    """A float32 parameter: normal(0, std) (zeros for std 0) or ones when std is None, with logical axes."""
    value = jnp.ones(shape, jnp.float32) if std is None else std * jax.random.normal(key, shape, jnp.float32)
    return nnx.Param(value, sharding_names=axes, eager_sharding=False)


class StackedLayers(nnx.Module):
    """`num_layers` layers' parameters, each stacked as [num_layers, ...] with leading axis `layers`.

    One init key per spec, drawn in the specs' order (so the order fixes a seed's parameters).
    """

    def __init__(self, specs: LayerSpecs, num_layers: int, *, rngs: nnx.Rngs):
        for name, (shape, axes, std) in specs.items():
            setattr(self, name, param(rngs.params(), (num_layers, *shape), ("layers", *axes), std))

    def stacked(self) -> dict[str, jax.Array]:
        """name -> the [num_layers, ...] array."""
        return {n: getattr(self, n)[...] for n in vars(self) if isinstance(getattr(self, n), nnx.Param)}

    def per_layer(self) -> dict[str, list[jax.Array]]:
        """name -> [layer 0's array, ...]: `stacked` cut into separate arrays, once (see `run_layers`)."""
        return {n: list(a) for n, a in self.stacked().items()}


def run_layers(
    body: Callable[[jax.Array, tuple[dict[str, jax.Array], Any]], tuple[jax.Array, Any]],
    x: jax.Array,
    stacked: dict[str, jax.Array],
    extra: Any = None,
    *,
    remat: str,
    scan: bool,
) -> tuple[jax.Array, Any]:
    """x_{i+1}, out_i = body(x_i, (stacked[i], extra[i])) over the layers i: (x_L, outs stacked [L, ...]).

    `extra` (a pytree with leading axis L, or None) is sliced alongside the parameters; outs is None
    when body returns None. `remat` ("none" | "full" | "dots") recomputes each layer in the backward
    pass; `scan` runs one `lax.scan` (one compiled layer) instead of an unrolled loop.

    Unrolled, `stacked` and `extra` may hold per-layer lists instead of [L, ...] arrays
    (`StackedLayers.per_layer`); outs are then lists too. XLA:CPU copies a layer's slice of an [L, ...]
    array before using it (a dot of 8 rows against sliced weights ran 6x slower than against separate
    arrays), which is most of a decoding step's time: the decoder cuts the weights once per decode and
    keeps the KV cache per layer, written in place.
    """
    if remat != "none":
        body = jax.checkpoint(body, policy=REMAT_POLICIES[remat], prevent_cse=not scan)
    if scan:
        return jax.lax.scan(body, x, (stacked, extra))
    is_list = lambda a: isinstance(a, list)  # noqa: E731
    per_layer = any(is_list(a) for a in jax.tree.leaves((stacked, extra), is_leaf=is_list))
    outs = []
    for i in range(len(jax.tree.leaves(stacked, is_leaf=is_list)[0])):
        x, out = body(x, jax.tree.map(lambda a: a[i], (stacked, extra), is_leaf=is_list))
        outs.append(out)
    if outs[0] is None:
        return x, None
    return x, jax.tree.map(lambda *a: list(a) if per_layer else jnp.stack(a), *outs)
