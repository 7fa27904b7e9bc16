"""The optimizer skips a step that would leave anything non-finite, whatever made it so."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jirl.experiment import base_config
from jirl.optimizer import make_optimizer, nonfinite_counts, skip_nonfinite

TRAIN = base_config(dict(name="arith", seq_len=8), "mle").train


def _step(tx, params, grads, state):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state


@pytest.mark.parametrize(
    "why, params, grads, train",
    [
        ("a NaN gradient", 1.0, np.nan, {}),
        ("a gradient whose square overflows Adam's second moment", 1.0, 3e19, dict(grad_clip=0.0)),
        ("weight decay at a huge learning rate overflowing the parameters", 1e36, 1.0,
         dict(learning_rate=1e4, warmup_steps=0, weight_decay=0.1)),
    ],
)  # fmt: skip
def test_a_step_that_would_leave_anything_non_finite_is_skipped(why, params, grads, train):
    config = TRAIN.copy_and_resolve_references()
    config.update(train)
    tx, _ = make_optimizer(config)
    params = {"w": jnp.full((3,), params, jnp.float32)}
    state = tx.init(params)
    new_params, new_state = _step(tx, params, {"w": jnp.full((3,), grads, jnp.float32)}, state)
    np.testing.assert_array_equal(new_params["w"], params["w"], err_msg=why)
    jax.tree.map(np.testing.assert_array_equal, new_state.inner_state, state.inner_state)
    counts = nonfinite_counts(new_state)
    assert (int(counts["nonfinite_streak"]), int(counts["nonfinite_steps"])) == (1, 1)
    _, again = _step(tx, params, {"w": jnp.full((3,), grads, jnp.float32)}, new_state)
    assert (int(again.streak), int(again.total)) == (2, 2)


def test_finite_steps_are_those_of_the_inner_optimizer():
    inner = optax.adam(1e-2)
    tx = skip_nonfinite(inner)
    params = {"w": jnp.arange(4.0)}
    grads = {"w": jnp.array([0.5, -1.0, 2.0, 0.0])}
    expected, _ = _step(inner, params, grads, inner.init(params))
    got, state = _step(tx, params, grads, tx.init(params))
    np.testing.assert_array_equal(got["w"], expected["w"])
    assert int(state.streak) == int(state.total) == 0


def test_no_clipping_when_grad_clip_is_zero():
    config = TRAIN.copy_and_resolve_references()
    config.update(grad_clip=0.0, warmup_steps=0, weight_decay=0.0)
    tx, _ = make_optimizer(config)
    params = {"w": jnp.ones(2)}
    new_params, state = _step(tx, params, {"w": jnp.array([100.0, 0.0])}, tx.init(params))
    assert int(state.total) == 0 and float(new_params["w"][0]) < 1.0  # a real, unclipped step
