"""Blocked causal attention against the dense form and a float64 NumPy reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jirl import models
from jirl.errors import ConfigError
from jirl.models import blocked_attention, layers


def _inputs(seed=0, b=2, t=256, h=4, kv=2, d=16):
    """Queries/keys/values, and segment ids with two packed examples and padding in row 0 and a
    segment boundary on a block boundary in row 1 (so whole blocks are masked there)."""
    rng = np.random.default_rng(seed)
    q = jnp.asarray(rng.normal(size=(b, t, h, d)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(b, t, kv, d)), jnp.float32)
    v = jnp.asarray(rng.normal(size=(b, t, kv, d)), jnp.float32)
    segments = np.ones((b, t), np.int32)
    segments[0, 100:] = 2
    segments[0, 200:] = 0
    segments[1, 128:] = 3
    slots = jnp.broadcast_to(jnp.arange(t), (b, t))
    mask = layers.attention_mask(slots, jnp.asarray(segments), slots, jnp.asarray(segments))
    return q, k, v, mask


def _numpy_attention(q, k, v, mask, scale):
    """softmax(q k^T scale, masked) v in float64, grouped-query heads repeated."""
    q, k, v, mask = (np.asarray(x, np.float64) for x in (q, k, v, mask))
    group = q.shape[2] // k.shape[2]
    k, v = np.repeat(k, group, axis=2), np.repeat(v, group, axis=2)
    scores = np.einsum("bthd,bshd->bhts", q, k) * scale
    scores = np.where(mask[:, None] > 0, scores, -np.inf)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return np.einsum("bhts,bshd->bthd", probs, v)


@pytest.mark.parametrize("block", [32, 64, 128])
def test_blocked_attention_equals_a_float64_reference(block):
    q, k, v, mask = _inputs()
    out = blocked_attention.causal_attention(q, k, v, mask, 0.3, block)
    np.testing.assert_allclose(out, _numpy_attention(q, k, v, mask, 0.3), atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("block", [32, 64])
def test_blocked_attention_gradients_equal_the_dense_form(block):
    q, k, v, mask = _inputs(seed=1)
    weights = jnp.asarray(np.random.default_rng(2).normal(size=q.shape), jnp.float32)

    def loss(attention):
        return lambda q, k, v: jnp.sum(weights * attention(q, k, v, mask, 0.3))

    dense = jax.grad(loss(layers.dot_product_attention), argnums=(0, 1, 2))(q, k, v)
    blocked = jax.jit(
        jax.grad(loss(lambda *a: blocked_attention.causal_attention(*a, block)), argnums=(0, 1, 2))
    )(q, k, v)
    for want, got in zip(dense, blocked):
        np.testing.assert_allclose(got, want, atol=1e-5 * float(jnp.max(jnp.abs(want))), rtol=1e-5)


def test_blocked_attention_in_bfloat16_stays_close_to_float32():
    q, k, v, mask = _inputs(seed=3)
    exact = blocked_attention.causal_attention(q, k, v, mask, 0.25, 64)
    low = blocked_attention.causal_attention(*(x.astype(jnp.bfloat16) for x in (q, k, v)), mask, 0.25, 64)
    assert low.dtype == jnp.bfloat16
    np.testing.assert_allclose(low.astype(jnp.float32), exact, atol=5e-2)


def test_block_size_needs_two_whole_blocks_and_at_most_sixteen():
    assert blocked_attention.block_size(256) == 64
    assert blocked_attention.block_size(128) == 64
    assert blocked_attention.block_size(1024) == 64
    assert blocked_attention.block_size(2048) == 128  # 16 blocks: the traced loops stay small
    assert blocked_attention.block_size(64 * 17) == 0  # 17 x 64 has no divisor giving <= 16 blocks
    assert blocked_attention.block_size(64) == 0  # one block: the dense form
    assert blocked_attention.block_size(200) == 0  # not a multiple of 64


def test_blocked_attention_refuses_keys_on_other_slots():
    q, k, v, mask = _inputs(t=128)
    with pytest.raises(ValueError, match="same slots"):
        blocked_attention.causal_attention(q, k[:, :64], v[:, :64], mask[:, :, :64], 0.3, 64)
    with pytest.raises(ValueError, match="blocks of 48"):
        blocked_attention.causal_attention(q, k, v, mask, 0.3, 48)


@pytest.mark.parametrize("overrides", [{}, dict(sliding_window=100, sliding_pattern=2)])
def test_the_decoder_with_blocked_attention_computes_what_it_does_dense(monkeypatch, overrides):
    """Logits and parameter gradients of a 128-token packed batch (GQA; a sliding window on every
    other layer) are those of the same model with the dense attention."""
    rng = np.random.default_rng(4)
    tokens = jnp.asarray(rng.integers(0, 259, (2, 128)), jnp.int32)
    segments = np.ones((2, 128), np.int32)
    segments[0, 50:] = 2
    segments[1, 90:] = 0
    positions = np.concatenate([np.arange(50), np.arange(78)])[None].repeat(2, 0)
    kwargs = dict(segment_ids=jnp.asarray(segments), positions=jnp.asarray(positions, jnp.int32))
    calls = []
    causal_attention = blocked_attention.causal_attention
    spy = lambda *args: calls.append(args[-1]) or causal_attention(*args)  # noqa: E731
    monkeypatch.setattr(blocked_attention, "causal_attention", spy)
    outputs = {}
    for form in ("blocked", "dense"):
        before = len(calls)
        cfg = models.get_config("tiny", attention=form, **overrides)
        graphdef, params = models.split(models.create(cfg, seed=0))

        def loss(params, graphdef=graphdef):
            logits = nnx.merge(graphdef, params)(tokens, **kwargs)
            return jnp.sum(jnp.sin(logits)), logits

        outputs[form] = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
        traced_blocked = len(calls) > before  # the blocked form was traced (in blocks of 64) or not
        assert traced_blocked == (form == "blocked") and set(calls) == {64}, (form, calls)
    (_, blocked_logits), blocked_grads = outputs["blocked"]
    (_, dense_logits), dense_grads = outputs["dense"]
    np.testing.assert_allclose(blocked_logits, dense_logits, atol=2e-5, rtol=1e-5)
    for got, want in zip(jax.tree.leaves(blocked_grads), jax.tree.leaves(dense_grads)):
        np.testing.assert_allclose(got, want, atol=1e-4 * (1 + float(np.max(np.abs(want)))), rtol=1e-4)


def test_auto_means_blocked_attention_and_unrolled_layers_on_cpu_only():
    cfg = models.get_config("tiny")
    assert (cfg.attention, cfg.scan_layers) == ("auto", None)
    assert (cfg.attention_form("cpu"), cfg.scans_layers("cpu")) == ("blocked", False)
    assert (cfg.attention_form("tpu"), cfg.scans_layers("gpu")) == ("dense", True)
    assert cfg.attention_form() == cfg.attention_form(jax.default_backend())
    fixed = cfg.for_platform("tpu")
    assert (fixed.attention, fixed.scan_layers) == ("dense", True)
    explicit = models.get_config("tiny", attention="dense", scan_layers=True).for_platform("cpu")
    assert (explicit.attention, explicit.scan_layers) == ("dense", True)
    with pytest.raises(ConfigError, match="model.attention='flash'"):
        models.get_config("tiny", attention="flash")
