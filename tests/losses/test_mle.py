"""MLE against a float64 NumPy reference, value and gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference
from batches import on_logits, random_batch

from jirl import losses


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
