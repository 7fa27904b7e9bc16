"""MLE against a float64 NumPy reference, value and gradient."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference
from batches import on_logits, random_batch

from jirl import losses
from jirl.errors import ConfigError


@pytest.mark.parametrize("label_smoothing,z_loss", [(0.0, 0.0), (0.1, 0.0), (0.0, 1e-3), (0.2, 1e-2)])
def test_mle_matches_reference(label_smoothing, z_loss):
    logits, batch = random_batch(np.random.default_rng(1), b=2, t=8, v=5)
    fn = on_logits(losses.get("mle", label_smoothing=label_smoothing, z_loss=z_loss))
    (loss, metrics), grad = jax.value_and_grad(lambda z: fn(z, batch), has_aux=True)(jnp.asarray(logits))

    def ref(z):
        return reference.mle(
            z, batch["targets"], batch["loss_mask"], label_smoothing=label_smoothing, z_loss=z_loss
        )

    np.testing.assert_allclose(loss, ref(logits.astype(np.float64)), rtol=1e-5)
    np.testing.assert_allclose(grad, reference.numerical_grad(ref, logits), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        metrics["nll"],
        reference.mle(logits.astype(np.float64), batch["targets"], batch["loss_mask"]),
        rtol=1e-5,
    )


def test_all_masked_batch_is_zero_not_nan():
    logits, batch = random_batch(np.random.default_rng(2))
    batch = dict(batch, loss_mask=np.zeros_like(batch["loss_mask"]))
    loss, metrics = on_logits(losses.get("mle"))(jnp.asarray(logits), batch)
    assert float(loss) == 0.0 and float(metrics["tokens"]) == 0.0


def _entropy_ref(logits, mask):
    """Per masked position, float64: H_t = -sum_v p_t[v] log p_t[v], p_t = softmax z_t."""
    out = []
    for b, t in zip(*np.nonzero(mask)):
        z = logits[b, t].astype(np.float64)
        log_p = z - reference._lse(z)
        out.append(-np.sum(np.exp(log_p) * log_p))
    return np.array(out)


def _mle_entropy_ref(logits, targets, mask, *, entropy_bonus, label_smoothing=0.0, z_loss=0.0):
    """E_E[MLE terms] - beta E_E[H], float64."""
    mle = reference.mle(logits, targets, mask, label_smoothing=label_smoothing, z_loss=z_loss)
    return mle - entropy_bonus * np.mean(_entropy_ref(logits, mask))


def _mle_entropy_grad(logits, targets, mask, *, entropy_bonus, label_smoothing=0.0, z_loss=0.0):
    """The analytic gradient, float64: per masked position, divided by their count,
    (1 - eps)(p - onehot(a)) + eps (p - 1/V) + 2 z V p + beta p (log p + H)  (dH/dz = -p (log p + H))."""
    grad = np.zeros(logits.shape, np.float64)
    positions = list(zip(*np.nonzero(mask)))
    for b, t in positions:
        z = logits[b, t].astype(np.float64)
        value = reference._lse(z)
        log_p = z - value
        p = np.exp(log_p)
        entropy = -np.sum(p * log_p)
        onehot = np.eye(z.size)[targets[b, t]]
        g = (1 - label_smoothing) * (p - onehot) + label_smoothing * (p - 1.0 / z.size)
        g += 2 * z_loss * value * p + entropy_bonus * p * (log_p + entropy)
        grad[b, t] = g / len(positions)
    return grad


def _with_garbage(logits, mask):
    """Huge, -inf and NaN logits at masked positions (the head must read zeros there)."""
    logits = logits.copy()
    masked = np.argwhere(mask == 0)
    for i, (b, t) in enumerate(masked):
        logits[b, t, i % logits.shape[-1]] = (3e38, -np.inf, np.nan)[i % 3]
    assert len(masked) >= 3
    return logits


def _on_logits(objective):
    """objective(from_logits(z, batch, with the statistics it asks for), batch)."""
    from jirl.losses import head

    def fn(logits, batch):
        stats = head.from_logits(
            logits,
            batch,
            mean_logit=objective.needs_mean_logit,
            expected_logit=objective.needs_expected_logit,
        )
        return objective(stats, batch)

    return fn


@pytest.mark.parametrize(
    "entropy_bonus,label_smoothing,z_loss", [(0.1, 0.0, 0.0), (0.5, 0.0, 0.0), (0.3, 0.1, 1e-3)]
)
def test_entropy_bonus_matches_reference_in_value_gradient_and_entropy_metric(
    entropy_bonus, label_smoothing, z_loss
):
    logits, batch = random_batch(np.random.default_rng(3), b=2, t=8, v=5)
    targets, mask = batch["targets"], batch["loss_mask"]
    opts = dict(entropy_bonus=entropy_bonus, label_smoothing=label_smoothing, z_loss=z_loss)
    objective = losses.get("mle", **opts)
    assert objective.needs_expected_logit
    garbage = _with_garbage(logits, mask)
    (loss, metrics), grad = jax.value_and_grad(lambda z: _on_logits(objective)(z, batch), has_aux=True)(
        jnp.asarray(garbage)
    )

    def ref(z):
        return _mle_entropy_ref(z, targets, mask, **opts)

    np.testing.assert_allclose(loss, ref(logits.astype(np.float64)), rtol=1e-5)
    analytic = _mle_entropy_grad(logits, targets, mask, **opts)
    np.testing.assert_allclose(grad, analytic, rtol=1e-4, atol=1e-6)  # 0 at masked positions
    np.testing.assert_allclose(analytic, reference.numerical_grad(ref, logits), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(metrics["entropy"], np.mean(_entropy_ref(logits, mask)), rtol=1e-5)
    np.testing.assert_allclose(
        metrics["nll"], reference.mle(logits.astype(np.float64), targets, mask), rtol=1e-5
    )


@pytest.mark.parametrize("label_smoothing,z_loss", [(0.0, 0.0), (0.1, 1e-3)])
def test_zero_entropy_bonus_is_todays_loss_bit_for_bit(label_smoothing, z_loss):
    logits, batch = random_batch(np.random.default_rng(4), b=2, t=8, v=5)
    today = losses.get("mle", label_smoothing=label_smoothing, z_loss=z_loss)
    zero = losses.get("mle", label_smoothing=label_smoothing, z_loss=z_loss, entropy_bonus=0.0)
    assert not zero.needs_expected_logit and not today.needs_expected_logit
    run = lambda fn: jax.value_and_grad(lambda z: fn(z, batch), has_aux=True)(jnp.asarray(logits))  # noqa: E731
    (want, want_metrics), want_grad = run(on_logits(today))
    for fn in (on_logits(zero), _on_logits(zero)):
        (got, metrics), grad = run(fn)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(grad, want_grad)
        assert metrics.keys() == want_metrics.keys() and "entropy" not in metrics


@pytest.mark.parametrize("value", [-1, -0.1, float("nan"), "0.1", True])
def test_a_bad_entropy_bonus_is_refused_by_name(value):
    with pytest.raises(ConfigError, match=re.escape(f"loss.entropy_bonus={value!r} is not accepted")):
        losses.get("mle", entropy_bonus=value)


def test_entropy_bonus_without_the_expected_logit_is_refused():
    from jirl.losses import head

    logits, batch = random_batch(np.random.default_rng(5))
    with pytest.raises(ValueError, match=r"entropy_bonus=0.1 needs the expected logit"):
        losses.get("mle", entropy_bonus=0.1)(head.from_logits(jnp.asarray(logits), batch), batch)
