"""The head stage: vocabulary-chunked statistics from hidden states equal the full-logit reference,
in value and in gradient (w.r.t. the hidden states and the projection), for every objective."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from batches import random_batch

from jirl import losses
from jirl.losses import head

# (V, chunk, vocab_axis, softcap): V not a multiple of the chunk, a chunk at least V, a tied [V, D]
# table, Gemma 2's soft-cap, and chunks aligned to 128 entries.
HEADS = [
    (37, 8, 1, 0.0),
    (37, 8, 0, 5.0),
    (40, 64, 1, 0.0),
    (40, 40, 0, 0.0),
    (300, 128, 0, 0.0),
    (259, 100, 1, 3.0),
]
# Every objective and option: gamma < 1, the target-network variant, label smoothing, z-loss, online.
OBJECTIVES = [
    ("mle", {}),
    ("mle", dict(label_smoothing=0.1, z_loss=1e-3)),
    ("iqlearn", dict(lam=0.3, gamma=1.0)),
    ("iqlearn", dict(lam=0.5, gamma=0.9, stop_grad_next_value=True)),
    ("iqlearn", dict(lam=0.2, gamma=0.95, alpha=0.3)),
]
D = 6


def _inputs(seed, v, vocab_axis, b=3, t=12):
    """Hidden states, a projection and a packed batch (prompts, padding, several segments)."""
    rng = np.random.default_rng(seed)
    _, batch = random_batch(rng, b=b, t=t, v=v)
    h = jnp.asarray(rng.normal(size=(b, t, D)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(D, v) if vocab_axis == 1 else (v, D)) / np.sqrt(D) * 3, jnp.float32)
    return h, w, batch


def _full(h, w, batch, vocab_axis, softcap, mean_logit):
    z = h @ (w if vocab_axis == 1 else w.T)
    if softcap:
        z = softcap * jnp.tanh(z / softcap)
    return head.from_logits(z, batch, mean_logit=mean_logit)


def _loss(objective, stats_fn, vocab_axis, softcap, expert, policy):
    def loss(h, w, hp):
        mean = objective.needs_mean_logit
        stats = stats_fn(h, w, expert, vocab_axis, softcap, mean)
        if objective.options.get("alpha"):
            pstats = stats_fn(hp, w, policy, vocab_axis, softcap, mean)
            return objective(stats, expert, policy=losses.Stream(pstats, policy))
        return objective(stats, expert)

    return loss


def _assert_close(got, want, rtol=1e-5):
    """|got - want| <= rtol (|want| + max|want|) entry by entry: 1e-5 relative to each array's
    scale (a tiny entry of a large gradient carries float32 reduction-order noise of that scale)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    scale = float(np.max(np.abs(want), initial=0.0))
    np.testing.assert_array_less(np.abs(got - want), rtol * (np.abs(want) + scale) + 1e-30)


# Each head with two objectives; each objective with two or three heads.
CASES = [(*h, *o) for i, h in enumerate(HEADS) for o in (OBJECTIVES[i % 5], OBJECTIVES[(i + 2) % 5])]


@pytest.mark.parametrize("v,chunk,vocab_axis,softcap,name,opts", CASES)
def test_chunked_equals_full_in_value_and_gradient(v, chunk, vocab_axis, softcap, name, opts):
    h, w, expert = _inputs(0, v, vocab_axis)
    hp, _, policy = _inputs(1, v, vocab_axis, b=2)
    objective = losses.get(name, **opts)

    def chunked(h, w, batch, vocab_axis, softcap, mean_logit):
        return head.from_hidden(
            h, w, batch, chunk=chunk, vocab_axis=vocab_axis, softcap=softcap, mean_logit=mean_logit
        )

    grad = lambda fn: jax.value_and_grad(fn, argnums=(0, 1, 2), has_aux=True)(h, w, hp)  # noqa: E731
    (loss, metrics), grads = grad(_loss(objective, chunked, vocab_axis, softcap, expert, policy))
    (ref_loss, ref_metrics), ref_grads = grad(_loss(objective, _full, vocab_axis, softcap, expert, policy))
    _assert_close(loss, ref_loss)
    assert metrics.keys() == ref_metrics.keys()
    for key in metrics:
        _assert_close(metrics[key], ref_metrics[key])
    used = 3 if objective.options.get("alpha") else 2  # the policy's hidden states: online only
    for g, ref in zip(grads[:used], ref_grads[:used]):
        assert np.any(np.asarray(ref) != 0)
        _assert_close(g, ref)
    if used == 2:
        assert not np.any(np.asarray(grads[2]))


@pytest.mark.parametrize("v,chunk", [(37, 8), (300, 128), (9, 20)])
def test_statistics_equal_the_logits_reductions(v, chunk):
    """Q, V, argmax-correct and the mean logit, position by position (ties go to the lowest id)."""
    h, w, batch = _inputs(2, v, 1)
    w = w.at[:, v - 1].set(w[:, 0])  # entries 0 and V-1 tie everywhere: argmax must say 0
    batch = dict(batch, targets=np.where(np.arange(12) % 3 == 0, 0, batch["targets"]))
    z = np.asarray(h @ w, np.float64)
    stats = head.from_hidden(h, w, batch, chunk=chunk, mean_logit=True)
    m = batch["loss_mask"] > 0
    targets = batch["targets"]
    q = np.take_along_axis(z, targets[..., None], -1)[..., 0]
    np.testing.assert_allclose(np.asarray(stats.q)[m], q[m], rtol=1e-5, atol=1e-6)
    lse = np.log(np.sum(np.exp(z - z.max(-1, keepdims=True)), -1)) + z.max(-1)
    np.testing.assert_allclose(np.asarray(stats.value)[m], lse[m], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(stats.mean_logit)[m], z.mean(-1)[m], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(stats.correct)[m], (np.argmax(z, -1) == targets)[m])


# Several chunks of a [D, V] head, one chunk of a tied [V, D] head, every position; a tied head
# and a [D, V] head (both soft-capped, with a vocabulary not a multiple of the chunk) gathered.
@pytest.mark.parametrize(
    "v,chunk,vocab_axis,softcap,row_budget",
    [(37, 8, 1, 0.0, 0), (40, 40, 0, 0.0, 0), (37, 8, 0, 5.0, 14), (259, 100, 1, 3.0, 14)],
)
def test_chunked_expected_logit_equals_full_in_value_and_gradient(v, chunk, vocab_axis, softcap, row_budget):
    """E_t = sum_v softmax(z_t)[v] z_t[v] from chunks equals the full logits' at every response
    position, and so does the gradient of sum_t g_t E_t w.r.t. h and W (every position, or the
    gathered response positions: the rows hold at most 13 of 16)."""
    h, w, batch = _inputs(7, v, vocab_axis, t=16)
    assert batch["loss_mask"].sum(1).tolist() == [13, 3, 5]
    m = batch["loss_mask"] > 0
    g = jnp.asarray(np.random.default_rng(8).normal(size=m.shape) * m, jnp.float32)

    def chunked(h, w):
        return head.from_hidden(
            h, w, batch, chunk=chunk, vocab_axis=vocab_axis, softcap=softcap, expected_logit=True,
            row_budget=row_budget,
        ).expected_logit  # fmt: skip

    def full(h, w):
        z = h @ (w if vocab_axis == 1 else w.T)
        if softcap:
            z = softcap * jnp.tanh(z / softcap)
        return head.from_logits(z, batch, expected_logit=True).expected_logit

    grad = lambda fn: jax.grad(lambda h, w: jnp.sum(g * fn(h, w)), argnums=(0, 1))(h, w)  # noqa: E731
    got, want = np.asarray(chunked(h, w)), np.asarray(full(h, w))
    z = np.asarray(h, np.float64) @ np.asarray(w if vocab_axis == 1 else w.T, np.float64)
    if softcap:
        z = softcap * np.tanh(z / softcap)
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    _assert_close(want[m], np.sum(p * z, -1)[m])  # the reference against float64
    _assert_close(got[m], want[m])
    for got_g, want_g in zip(grad(chunked), grad(full)):
        assert np.any(np.asarray(want_g) != 0)
        _assert_close(got_g, want_g)
    assert head.from_hidden(h, w, batch, chunk=chunk, vocab_axis=vocab_axis).expected_logit is None


@pytest.mark.parametrize("v,chunk,vocab_axis,softcap", [HEADS[1], HEADS[4]])
def test_entropy_bonus_loss_through_chunks_equals_full_logits(v, chunk, vocab_axis, softcap):
    h, w, batch = _inputs(9, v, vocab_axis)
    for opts in (dict(entropy_bonus=0.2), dict(entropy_bonus=0.1, label_smoothing=0.1, z_loss=1e-3)):
        objective = losses.get("mle", **opts)
        assert objective.needs_expected_logit

        def loss(h, w, chunked):
            if chunked:
                stats = head.from_hidden(
                    h, w, batch, chunk=chunk, vocab_axis=vocab_axis, softcap=softcap,
                    mean_logit=objective.needs_mean_logit, expected_logit=True,
                )  # fmt: skip
            else:
                z = h @ (w if vocab_axis == 1 else w.T)
                if softcap:
                    z = softcap * jnp.tanh(z / softcap)
                stats = head.from_logits(z, batch, mean_logit=objective.needs_mean_logit, expected_logit=True)
            return objective(stats, batch)

        grad = lambda chunked: jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(h, w, chunked)  # noqa: E731
        (got, metrics), grads = grad(True)
        (want, want_metrics), want_grads = grad(False)
        _assert_close(got, want)
        assert metrics.keys() == want_metrics.keys() and "entropy" in metrics
        for key in metrics:
            _assert_close(metrics[key], want_metrics[key])
        for got_g, want_g in zip(grads, want_grads):
            assert np.any(np.asarray(want_g) != 0)
            _assert_close(got_g, want_g)


def test_chunk_layout_covers_the_vocabulary_once():
    for vocab, chunk in [(7, 3), (259, 64), (259, 16384), (50_257, 16384), (256_000, 16384), (128, 128)]:
        layout = head.ChunkLayout.of(vocab, chunk)
        ids = np.concatenate([np.asarray(layout.entries(k)) for k in range(layout.chunks)])
        real = np.sort(ids[ids < vocab])
        np.testing.assert_array_equal(real, np.arange(vocab))
        aligned = 128 if chunk >= 128 and layout.chunks > 1 else 1
        assert layout.size * layout.chunks - vocab < layout.chunks * aligned  # little padding
        assert layout.size % aligned == 0
    assert head.ChunkLayout.of(256_000, 16384).chunks == 16
    assert head.ChunkLayout.of(259, 4096) == (259, 1, 259)  # one chunk: the vocabulary as it is
    w = jnp.arange(5 * 7, dtype=jnp.float32).reshape(5, 7)
    layout = head.ChunkLayout.of(7, 3)
    np.testing.assert_array_equal(layout.merge(layout.split(w, 1, jnp.float32), 1), w)
    np.testing.assert_array_equal(layout.merge(layout.split(w.T, 0, jnp.float32), 0), w.T)


@pytest.mark.parametrize("row_budget", [12, 11, 8])
def test_gathered_response_positions_give_the_same_statistics(row_budget):
    """Rows hold 11, 0 and 8 response positions of 16: budgets 12 and 11 gather, 8 falls back to
    every position; value and gradients are those of every position either way."""
    h, w, batch = _inputs(11, 37, 1, t=16)
    batch["loss_mask"][1] = 0  # a row with no response at all
    objective = losses.get("iqlearn", lam=0.3, gamma=0.9)

    def loss(h, w, budget):
        return objective(head.from_hidden(h, w, batch, chunk=8, row_budget=budget), batch)[0]

    grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)), static_argnums=2)
    ref, ref_grads = grad(h, w, 0)
    got, grads = grad(h, w, row_budget)
    _assert_close(got, ref)
    for g, r in zip(grads, ref_grads):
        _assert_close(g, r)
    stats = head.from_hidden(h, w, batch, chunk=8, row_budget=row_budget)
    m = batch["loss_mask"] > 0
    every = head.from_hidden(h, w, batch, chunk=8)
    np.testing.assert_allclose(np.asarray(stats.value)[m], np.asarray(every.value)[m], rtol=1e-6)
    assert batch["loss_mask"].sum(1).tolist() == [11, 0, 8]
    # Which branch ran: a gathered row has no statistics past its budget (log V without gathering).
    assert (float(stats.value[1, 15]) == 0.0) == (row_budget >= 11)


def test_garbage_at_masked_positions_gives_no_nan():
    h, w, batch = _inputs(3, 37, 0)
    masked = batch["loss_mask"] == 0
    h = h.at[masked].set(jnp.nan)
    h = h.at[masked & (np.arange(12) % 2 == 0)].set(3e38)
    for name, opts in [
        ("iqlearn", dict(gamma=0.9, lam=0.5)),
        ("mle", dict(label_smoothing=0.1, z_loss=1e-4)),
        ("mle", dict(entropy_bonus=0.1)),
    ]:
        objective = losses.get(name, **opts)

        def loss(h, w):
            stats = head.from_hidden(
                h, w, batch, chunk=8, vocab_axis=0, mean_logit=objective.needs_mean_logit,
                expected_logit=objective.needs_expected_logit,
            )  # fmt: skip
            return objective(stats, batch)

        (value, metrics), (g_h, g_w) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(h, w)
        assert np.isfinite(value) and all(np.isfinite(v) for v in jax.tree.leaves(metrics)), name
        assert np.all(np.isfinite(g_h)) and np.all(np.isfinite(g_w)), name
        assert np.all(np.asarray(g_h)[masked] == 0), name


def test_bfloat16_compute_accumulates_in_float32():
    h, w, batch = _inputs(4, 300, 1)
    objective = losses.get("iqlearn", lam=0.1)

    def loss(h, w, chunk):
        if chunk:
            stats = head.from_hidden(h, w, batch, chunk=chunk)
        else:
            stats = head.from_logits(h @ w.astype(h.dtype), batch)
        return objective(stats, batch)[0]

    ref, (ref_h, ref_w) = jax.value_and_grad(loss, argnums=(0, 1))(h, w, 0)
    got, (g_h, g_w) = jax.value_and_grad(loss, argnums=(0, 1))(h.astype(jnp.bfloat16), w, 64)
    assert g_h.dtype == jnp.bfloat16 and g_w.dtype == jnp.float32
    np.testing.assert_allclose(got, ref, rtol=2e-2)
    np.testing.assert_allclose(np.asarray(g_w), ref_w, atol=2e-2 * float(jnp.max(jnp.abs(ref_w))))
    np.testing.assert_allclose(np.asarray(g_h, np.float32), ref_h, atol=2e-2 * float(jnp.max(jnp.abs(ref_h))))


def test_jit_and_no_jit_agree():
    h, w, batch = _inputs(5, 37, 1)
    fn = lambda h, w: head.from_hidden(h, w, batch, chunk=8)  # noqa: E731
    np.testing.assert_allclose(jax.jit(fn)(h, w).value, fn(h, w).value, rtol=1e-6)


def test_bad_arguments_are_named():
    h, w, batch = _inputs(6, 37, 1)
    with pytest.raises(ValueError, match=r"chunk=0 must be a positive integer"):
        head.from_hidden(h, w, batch, chunk=0)
    with pytest.raises(ValueError, match=r"does not match the hidden size"):
        head.from_hidden(h, w.T, batch, chunk=8)
    with pytest.raises(ValueError, match=r"hidden states must be \[B, T, D\]"):
        head.from_hidden(h[0], w, batch, chunk=8)
    with pytest.raises(ValueError, match=r"'targets'\] has shape"):
        head.from_hidden(h, w, dict(batch, targets=batch["targets"][:, :-1]), chunk=8)
    with pytest.raises(ValueError, match=r"label_smoothing=0.1 needs the mean logit"):
        losses.get("mle", label_smoothing=0.1)(head.from_hidden(h, w, batch, chunk=8), batch)
    with pytest.raises(ValueError, match=r"entropy_bonus=0.1 needs the expected logit"):
        losses.get("mle", entropy_bonus=0.1)(head.from_hidden(h, w, batch, chunk=8), batch)
