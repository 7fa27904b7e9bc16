"""The decoder: packing, caching, scan/remat equivalence, logical axes, presets."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jirl import models

CFG = models.get_config("tiny", scan_layers=True)  # explicitly scanned: the options tests compare against it


@pytest.fixture(scope="module")
def model():
    return models.split(models.create(CFG, seed=0))


def test_packed_rows_give_the_logits_of_the_examples_unpacked(model):
    graphdef, params = model
    rng = np.random.default_rng(0)
    examples = [rng.integers(3, CFG.vocab_size, n) for n in (5, 7, 3)]
    tokens = np.concatenate(examples + [np.zeros(4, int)])[None]
    segments = np.concatenate([np.full(len(e), i + 1) for i, e in enumerate(examples)] + [np.zeros(4, int)])[
        None
    ]
    positions = np.concatenate([np.arange(len(e)) for e in examples] + [np.zeros(4, int)])[None]
    packed = models.apply(
        graphdef,
        params,
        jnp.asarray(tokens),
        positions=jnp.asarray(positions),
        segment_ids=jnp.asarray(segments),
    )
    start = 0
    for example in examples:
        alone = models.apply(graphdef, params, jnp.asarray(example[None]))
        np.testing.assert_allclose(packed[0, start : start + len(example)], alone[0], rtol=1e-5, atol=1e-5)
        start += len(example)
    assert np.all(np.isfinite(packed))  # padding rows attend to padding only


def test_incremental_decoding_with_cache_matches_full_forward(model):
    graphdef, params = model
    tokens = jnp.asarray(np.random.default_rng(1).integers(3, CFG.vocab_size, (2, 9)))
    full = models.apply(graphdef, params, tokens)
    cache = models.init_cache(CFG, 2, 12)
    prefill, cache = models.apply(graphdef, params, tokens[:, :4], cache=cache)
    steps = [prefill]
    for t in range(4, 9):
        logits, cache = models.apply(graphdef, params, tokens[:, t : t + 1], cache=cache)
        steps.append(logits)
    np.testing.assert_allclose(jnp.concatenate(steps, 1), full, rtol=1e-5, atol=1e-5)
    assert int(cache["index"]) == 9


@pytest.mark.parametrize(
    "overrides",
    [dict(scan_layers=False), dict(remat="full", scan_layers=True), dict(remat="dots", scan_layers=False)],
)
def test_scan_and_remat_options_compute_the_same_function(model, overrides):
    graphdef, params = model
    other, _ = models.split(models.create(models.get_config("tiny", **overrides)))
    tokens = jnp.asarray(np.random.default_rng(2).integers(3, CFG.vocab_size, (2, 8)))
    loss = lambda g, p: jnp.mean(models.apply(g, p, tokens) ** 2)  # noqa: E731
    np.testing.assert_allclose(loss(other, params), loss(graphdef, params), rtol=1e-6)
    grads = jax.grad(loss, argnums=1)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-6),
        grads(other, params),
        grads(graphdef, params),
    )


def test_bfloat16_compute_is_close_to_float32(model):
    graphdef, params = model
    bf16, _ = models.split(models.create(models.get_config("tiny", dtype="bfloat16")))
    tokens = jnp.asarray(np.random.default_rng(3).integers(3, CFG.vocab_size, (2, 8)))
    lo = models.apply(bf16, params, tokens)
    assert lo.dtype == jnp.bfloat16
    np.testing.assert_allclose(lo.astype(jnp.float32), models.apply(graphdef, params, tokens), atol=0.1)


def test_every_parameter_has_logical_axes_of_its_rank():
    model = models.create(models.get_config("tiny", tie_embeddings=False))
    axes = models.logical_axes(model)
    _, params = models.split(model)
    known = {"vocab", "embed", "heads", "kv", "mlp", "layers"}
    flat_axes = jax.tree_util.tree_leaves_with_path(axes, is_leaf=lambda x: isinstance(x, tuple))
    flat_params = jax.tree_util.tree_leaves_with_path(params)
    assert [p for p, _ in flat_axes] == [p for p, _ in flat_params]
    for (_, names), (path, value) in zip(flat_axes, flat_params):
        assert len(names) == value.ndim and set(names) <= known, (path, names)


def test_tied_embeddings_have_no_unembed():
    tied = models.split(models.create(models.get_config("tiny", tie_embeddings=True)))[1]
    untied = models.split(models.create(models.get_config("tiny", tie_embeddings=False)))[1]
    assert "unembed" not in tied and "unembed" in untied


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_num_params_counts_the_real_parameters(preset):
    cfg = models.get_config(preset)
    _, params = models.split(models.create(cfg))
    assert sum(p.size for p in jax.tree.leaves(params)) == cfg.num_params()


def test_shape_only_presets_have_their_sizes_without_allocating():
    for preset, low, high in [("llama_1b", 1.0e9, 1.5e9), ("llama_7b", 6.5e9, 7.0e9)]:
        cfg = models.get_config(preset)
        abstract = jax.eval_shape(lambda: models.split(models.create(cfg))[1])
        n = sum(np.prod(x.shape) for x in jax.tree.leaves(abstract))
        assert n == cfg.num_params() and low < n < high


def test_bad_presets_and_options_are_named():
    with pytest.raises(ValueError, match="unknown model preset 'huge'.*'small'"):
        models.get_config("huge")
    with pytest.raises(ValueError, match=r"no option\(s\) \['layers'\]"):
        models.get_config("tiny", layers=3)
    with pytest.raises(ValueError, match="model.dtype='float16'.*bfloat16"):
        models.get_config("tiny", dtype="float16")


def test_llama_layout_keeps_its_init_order():
    """Init keys are drawn in this order: changing it would change every seed's initial parameters."""
    from jirl.models.transformer import layer_specs

    order = ["attn_norm", "wq", "wk", "wv", "wo", "mlp_norm", "w_gate", "w_up", "w_down"]
    assert list(layer_specs(models.get_config("small"))) == order


def test_gemma3_windows_and_local_rope_agree_scanned_unrolled_blocked_and_cached():
    """Gemma 3's options (a window on 2 of every 3 layers here, the local layers' own RoPE base, linear
    scaling on the global ones) give one function whether the layers are scanned (a traced layer index
    picks the mask and the RoPE) or unrolled, attention blocked or dense, a sequence whole or decoded
    one token at a time through a scanned cache (as on accelerators; unrolled, decoding matches
    transformers' generate in tests/models/hf)."""
    gemma3 = dict(norm="rms_plus_one", embed_scale=True, post_norms=True, qk_norm=True, num_layers=3,
                  sliding_window=5, sliding_pattern=3, rope_local_theta=100.0, rope_scaling="linear",
                  rope_factor=4.0)  # fmt: skip
    cfg = models.get_config("tiny", **gemma3)
    build = lambda **options: nnx.split(  # noqa: E731
        nnx.eval_shape(lambda: models.model_class(cfg)(dataclasses.replace(cfg, **options), rngs=nnx.Rngs(0)))
    )
    apply = jax.jit(models.apply, static_argnums=0)
    # Random parameters of scale 0.2 (norm weights too: (1 + w) != 1), drawn in numpy: nothing to compile.
    rng = np.random.default_rng(1)
    params = jax.tree.map(lambda x: jnp.asarray(0.2 * rng.standard_normal(x.shape), jnp.float32), build()[1])
    tokens = jnp.asarray(np.random.default_rng(3).integers(3, cfg.vocab_size, (2, 128)))
    dense = apply(build(scan_layers=False, attention="dense")[0], params, tokens)
    blocked = apply(build(scan_layers=False, attention="blocked")[0], params, tokens)
    np.testing.assert_allclose(blocked, dense, rtol=1e-5, atol=1e-5)
    scanned = build(scan_layers=True)[0]
    np.testing.assert_allclose(apply(scanned, params, tokens[:, :12]), dense[:, :12], rtol=1e-5, atol=1e-5)
    cache, steps = models.init_cache(cfg, 2, 16), []
    for t in range(12):  # past the window of 5
        logits, cache = apply(scanned, params, tokens[:, t : t + 1], cache=cache)
        steps.append(logits)
    np.testing.assert_allclose(jnp.concatenate(steps, 1), dense[:, :12], rtol=1e-5, atol=1e-5)
