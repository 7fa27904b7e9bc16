"""The parts the decoder and T5 share: stacked parameters, the layer loop, the KV-cache write."""

import ast
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jirl import models
from jirl.models import blocks, layers, stack

SPECS = {
    "norm": ((4,), ("embed",), None),
    "w": ((4, 4), ("embed", "mlp"), 0.5),
    "b": ((4,), ("mlp",), 0.0),
}


def test_stacked_layers_draw_one_key_per_spec_in_order_and_add_the_layers_axis():
    stacked_layers = stack.StackedLayers(SPECS, 3, rngs=nnx.Rngs(params=7))
    params = stacked_layers.stacked()
    assert list(params) == ["norm", "w", "b"]
    rngs = nnx.Rngs(params=7)
    keys = [rngs.params() for _ in SPECS]
    np.testing.assert_array_equal(params["norm"], np.ones((3, 4)))
    np.testing.assert_array_equal(params["w"], 0.5 * jax.random.normal(keys[1], (3, 4, 4)))
    np.testing.assert_array_equal(params["b"], np.zeros((3, 4)))
    axes = models.logical_axes(stacked_layers)
    assert axes == {"norm": ("layers", "embed"), "w": ("layers", "embed", "mlp"), "b": ("layers", "mlp")}


def _toy_layers():
    rng = np.random.default_rng(0)
    stacked = {"w": jnp.asarray(rng.normal(size=(3, 4, 4)), jnp.float32)}
    extra = jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)
    x = jnp.asarray(rng.normal(size=(2, 4)), jnp.float32)

    def body(x, layer):
        p, e = layer
        y = jnp.tanh(x @ p["w"] + e)
        return y, jnp.sum(y, axis=-1)

    return body, x, stacked, extra


@pytest.mark.parametrize("remat", ["none", "full", "dots"])
def test_run_layers_scanned_and_unrolled_compute_the_same_function(remat):
    body, x, stacked, extra = _toy_layers()
    expected_x, expected_outs = x, []
    for i in range(3):
        expected_x, out = body(expected_x, ({"w": stacked["w"][i]}, extra[i]))
        expected_outs.append(out)

    def loss(stacked, scan):
        y, outs = stack.run_layers(body, x, stacked, extra, remat=remat, scan=scan)
        return jnp.sum(y**2) + jnp.sum(outs), (y, outs)

    grads = {}
    for scan in (True, False):
        (_, (y, outs)), grads[scan] = jax.value_and_grad(loss, has_aux=True)(stacked, scan)
        # float32 through programs compiled differently (eager, scan, unrolled): a few ulps apart
        np.testing.assert_allclose(y, expected_x, rtol=1e-5)
        np.testing.assert_allclose(outs, jnp.stack(expected_outs), rtol=1e-5)
    np.testing.assert_allclose(grads[False]["w"], grads[True]["w"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("scan", [True, False])
def test_run_layers_without_extra_or_outputs_gives_none(scan):
    body, x, stacked, _ = _toy_layers()
    y, outs = stack.run_layers(
        lambda x, layer: (body(x, (layer[0], 0.0))[0], None), x, stacked, remat="none", scan=scan
    )
    assert outs is None and y.shape == x.shape


def test_write_kv_writes_the_new_slots_in_the_cache_dtype():
    cache_k = jnp.zeros((2, 6, 1, 3), jnp.bfloat16)
    cache_v = jnp.ones((2, 6, 1, 3), jnp.bfloat16)
    k = jnp.full((2, 2, 1, 3), 5.0, jnp.float32)
    v = jnp.full((2, 2, 1, 3), 7.0, jnp.float32)
    new_k, new_v = layers.write_kv(cache_k, cache_v, k, v, jnp.asarray(3, jnp.int32))
    assert new_k.dtype == new_v.dtype == jnp.bfloat16
    np.testing.assert_array_equal(new_k[:, 3:5], 5.0)
    np.testing.assert_array_equal(new_v[:, 3:5], 7.0)
    np.testing.assert_array_equal(new_k[:, :3], 0.0)
    np.testing.assert_array_equal(new_v[:, 5:], 1.0)


def test_project_heads_adds_the_bias_only_when_present():
    rng = np.random.default_rng(1)
    h = jnp.asarray(rng.normal(size=(2, 3, 4)), jnp.float32)
    p = {"wq": jnp.asarray(rng.normal(size=(4, 2, 5)), jnp.float32)}
    plain = layers.project_heads(h, p, "q")
    np.testing.assert_allclose(plain, np.einsum("btd,dhk->bthk", h, p["wq"]), rtol=1e-5)
    bias = jnp.asarray(rng.normal(size=(2, 5)), jnp.float32)
    np.testing.assert_allclose(layers.project_heads(h, {**p, "bq": bias}, "q"), plain + bias, rtol=1e-6)


def test_causal_context_over_a_cache_masks_future_slots_and_other_segments():
    cache = {"segment_ids": jnp.asarray([[1, 1, 1, 0, 0, 0]]), "index": jnp.asarray(3, jnp.int32)}
    ctx = blocks.causal_context(1, 2, None, jnp.asarray([[1, 2]]), cache)
    np.testing.assert_array_equal(ctx.q_slots_BT, [[3, 4]])
    np.testing.assert_array_equal(ctx.kv_segments_BS, [[1, 1, 1, 1, 2, 0]])
    np.testing.assert_array_equal(ctx.mask_BTS[0], [[1, 1, 1, 1, 0, 0], [0, 0, 0, 0, 1, 0]])


def test_model_families_share_parts_downward_only():
    """T5 and the decoder are siblings: neither imports the other; shared parts live below them."""
    folder = pathlib.Path(models.__file__).parent
    for family, sibling in (("t5", "transformer"), ("transformer", "t5")):
        tree = ast.parse((folder / f"{family}.py").read_text())
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        for node in (n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)):
            imported |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        assert f"jirl.models.{sibling}" not in imported, family


def test_dense_is_the_einsum_it_replaces_and_checks_the_contracted_dims():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, 3, 4, 5)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(4, 5, 6)), jnp.float32)
    np.testing.assert_allclose(layers.dense(x, w, contract=2), jnp.einsum("btkd,kdo->bto", x, w), rtol=1e-5)
    np.testing.assert_allclose(layers.dense(x[..., 0, :], w[0]), x[..., 0, :] @ w[0], rtol=1e-5)
    with pytest.raises(ValueError, match="contracted"):
        layers.dense(x, w)


@pytest.mark.parametrize("scaled", [False, True])
def test_rope_rotates_each_pair_like_a_float64_reference(scaled):
    rng = np.random.default_rng(1)
    head_dim, theta = 8, 500.0
    x = rng.normal(size=(2, 5, 3, head_dim)).astype(np.float32)
    positions = rng.integers(0, 1000, (2, 5))
    inv_freq = layers.llama3_inv_freq(head_dim, theta, 8.0, 1.0, 4.0, 64) if scaled else None
    tables = layers.rope_tables(jnp.asarray(positions), head_dim, theta, inv_freq)
    got = layers.apply_rope(jnp.asarray(x), tables)
    freq = (
        np.asarray(inv_freq, np.float64) if scaled else theta ** (-np.arange(head_dim // 2) / (head_dim // 2))
    )
    angles = positions[..., None, None].astype(np.float64) * freq  # [B, T, 1, D/2]
    x1, x2 = x[..., : head_dim // 2].astype(np.float64), x[..., head_dim // 2 :].astype(np.float64)
    want = np.concatenate(
        [x1 * np.cos(angles) - x2 * np.sin(angles), x2 * np.cos(angles) + x1 * np.sin(angles)], -1
    )
    np.testing.assert_allclose(got, want, atol=2e-5)
