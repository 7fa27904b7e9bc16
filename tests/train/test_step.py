"""The jitted step: generic over the loss, two named streams, non-finite steps skipped; host-side
batch checks name what is wrong."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from configs import load_arith

from jirl import losses, models
from jirl.optimizer import make_optimizer
from jirl.train import create_train_state, make_eval_step, make_train_step

TRAIN = load_arith().train
TRAIN.update(learning_rate=1e-2, warmup_steps=0)


def _batch(b=2, t=16, vocab=259, seed=0):
    tokens = np.random.default_rng(seed).integers(3, vocab, (b, t + 1)).astype(np.int32)
    mask = np.zeros((b, t), np.float32)
    mask[:, t // 2 :] = 1
    return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "loss_mask": mask}


@pytest.mark.parametrize(
    "name,opts", [("mle", {}), ("mle", dict(entropy_bonus=0.1)), ("iqlearn", dict(lam=0.5, gamma=0.9))]
)
def test_step_updates_params_and_reports_the_loss_metrics(name, opts):
    cfg = models.get_config("tiny")
    tx, schedule = make_optimizer(TRAIN)
    graphdef, state = create_train_state(cfg, tx, seed=0)
    loss_fn = losses.get(name, **opts)
    before = jax.tree.map(np.array, state.params)
    batch = {k: jnp.asarray(v) for k, v in _batch().items()}
    expected = make_eval_step(graphdef, loss_fn)(state.params, batch)
    state, metrics = make_train_step(graphdef, loss_fn, tx, schedule)(state, batch)
    assert int(state.step) == 1
    np.testing.assert_allclose(metrics["loss"], expected["loss"], rtol=1e-6)
    for key in ("nll", "td_reg", "reward", "value", "accuracy", "tokens", "grad_norm", "learning_rate"):
        assert key in metrics
    changed = jax.tree.map(lambda a, b: not np.allclose(a, b), before, state.params)
    assert all(jax.tree.leaves(changed))


def test_norm_scales_are_not_weight_decayed():
    tx, _ = make_optimizer(TRAIN)
    _, state = create_train_state(models.get_config("tiny"), tx, seed=0)
    zero_grads = jax.tree.map(jnp.zeros_like, state.params)
    updates, _ = tx.update(zero_grads, state.opt_state, state.params)
    assert float(jnp.abs(updates["layers"]["attn_norm"]).max()) == 0.0
    assert float(jnp.abs(updates["final_norm"]).max()) == 0.0
    assert float(jnp.abs(updates["layers"]["wq"]).max()) > 0.0  # decay alone moves the matrices


def _packed_batch(b=8, t=24, vocab=259, seed=0):
    """Rows packed with several examples, each a prompt (mask 0) then a response (mask 1); row 0 ends
    in a response cut by the row's end, row b - 1 has no response tokens."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(3, vocab, (b, t + 1)).astype(np.int32)
    mask, segments, positions = (
        np.zeros((b, t), np.float32),
        np.zeros((b, t), np.int32),
        np.zeros((b, t), np.int32),
    )
    for row in range(b):
        pos, seg = 0, 0
        while pos < t:
            length = min(int(rng.integers(3, 10)), t - pos) if row == 0 else int(rng.integers(3, 10))
            if pos + length > t or length < 2:
                break
            seg += 1
            segments[row, pos : pos + length] = seg
            positions[row, pos : pos + length] = np.arange(length)
            mask[row, pos + int(rng.integers(1, length)) : pos + length] = row < b - 1
            pos += length
    batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "loss_mask": mask}
    return dict(batch, segment_ids=segments, positions=positions)


def _recording(tx):
    """tx after a transformation whose state is the last gradient (so that tests can read it)."""
    record = optax.GradientTransformation(lambda params: params, lambda g, state, params=None: (g, g))
    return optax.chain(record, tx)


def _steps(objective, expert, policy=None, microbatches=(1, 2, 4)):
    """{M: (metrics, gradients, params after one step)} of the step with M microbatches."""
    train = load_arith().train
    train.update(learning_rate=1e-4, warmup_steps=0)  # Adam's first step, lr g / |g|: rounding noise x lr
    tx, schedule = make_optimizer(train)
    tx = _recording(tx)
    cfg = models.get_config("tiny")
    expert = {k: jnp.asarray(v) for k, v in expert.items()}
    policy = None if policy is None else {k: jnp.asarray(v) for k, v in policy.items()}
    results = {}
    for m in microbatches:
        graphdef, state = create_train_state(cfg, tx, seed=0)
        state, metrics = make_train_step(graphdef, objective, tx, schedule, microbatches=m)(
            state, expert, policy
        )
        results[m] = jax.device_get((metrics, state.opt_state[0], state.params))
    return results


def _assert_same_steps(results):
    (full_metrics, full_grads, full_params), *micro = results.values()
    for metrics, grads, params in micro:
        assert sorted(metrics) == sorted(full_metrics)
        for key in full_metrics:
            # atol 1e-5: value_gap (~6e-3) is a difference of means of V (~5), so float32 rounding of
            # those means, which moves with the number of threads, shows at ~1e-6 in it.
            np.testing.assert_allclose(metrics[key], full_metrics[key], rtol=1e-5, atol=1e-5, err_msg=key)
        for got, want in ((grads, full_grads), (params, full_params)):
            jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), got, want)


@pytest.mark.parametrize(
    "name,opts", [("iqlearn", dict(lam=0.5, gamma=0.9)), ("mle", dict(entropy_bonus=0.1))]
)
def test_microbatches_give_the_full_batch_step(name, opts):
    """M = 4 slices, one of them without loss tokens: same loss, metrics, gradients and params as
    M = 1; packed rows with uneven token and episode counts across slices."""
    batch = _packed_batch(seed=0)
    batch["loss_mask"][[1, 5]] = 0  # with M = 4, slice 1 = rows 1 and 5: no tokens
    _assert_same_steps(_steps(losses.get(name, **opts), batch, microbatches=(1, 4)))


def test_online_iqlearn_microbatches_give_the_full_batch_step():
    """Online IQLearn's four means (expert and policy tokens, expert and policy episodes) divide by the
    whole batch's counts in every slice: M = 2 and 4 give the M = 1 loss, metrics (value_gap too),
    gradients and parameters, though the slices' token and episode counts differ (at gamma < 1, so
    that the next-state values enter too)."""
    expert, policy = _packed_batch(seed=1), _packed_batch(seed=2)
    counts = [(policy["loss_mask"][i::4].sum(), expert["loss_mask"][i::4].sum()) for i in range(4)]
    assert len(set(counts)) == 4  # unequal token counts per slice, and across the streams
    objective = losses.get("iqlearn", lam=0.1, gamma=0.99, alpha=0.1)
    results = _steps(objective, expert, policy)
    assert {"value_gap", "policy_tokens", "policy_td_reg"} <= set(results[1][0])
    assert results[4][0]["policy_tokens"] == policy["loss_mask"].sum()
    _assert_same_steps(results)


def test_microbatches_must_divide_the_batch():
    tx, schedule = make_optimizer(TRAIN)
    graphdef, state = create_train_state(models.get_config("tiny"), tx, seed=0)
    with pytest.raises(ValueError, match=r"train.microbatches=0 must be a positive integer"):
        make_train_step(graphdef, losses.get("mle"), tx, schedule, microbatches=0)
    step = make_train_step(graphdef, losses.get("mle"), tx, schedule, microbatches=4)
    batch = {k: jnp.asarray(v) for k, v in _batch(b=6).items()}
    with pytest.raises(ValueError, match=r"batch size 6 is not divisible by train.microbatches=4"):
        step(state, batch)


def test_the_policy_stream_is_an_input_of_the_step():
    """step(state, expert, policy): the loss is the objective's on both streams, each through the head;
    an offline objective refuses a policy batch and an online one needs it."""
    cfg = models.get_config("tiny")
    tx, schedule = make_optimizer(TRAIN)
    graphdef, state = create_train_state(cfg, tx, seed=0)
    expert = {k: jnp.asarray(v) for k, v in _batch(seed=0).items()}
    policy = {k: jnp.asarray(v) for k, v in _batch(seed=1).items()}
    objective = losses.get("iqlearn", lam=0.1, alpha=0.5)

    def stream(batch):
        logits = models.forward_batch(graphdef, state.params, batch)
        return losses.Stream(losses.head.from_logits(logits, batch), batch)

    expected, _ = objective(*stream(expert), policy=stream(policy))
    offline, _ = objective.offline()(*stream(expert))
    step = make_train_step(graphdef, objective, tx, schedule)
    new_state, metrics = step(state, expert, policy)
    np.testing.assert_allclose(metrics["loss"], expected, rtol=1e-5)
    assert abs(float(expected) - float(offline)) > 1e-3  # the policy terms count
    assert "policy_tokens" in metrics and int(new_state.step) == 1
    with pytest.raises(ValueError, match="reads policy batch, but the step was not given one"):
        step(new_state, expert)
    offline_step = make_train_step(graphdef, losses.get("iqlearn"), tx, schedule)
    with pytest.raises(ValueError, match="reads no policy batch, but the step was given one"):
        offline_step(new_state, expert, policy)
    custom = lambda stats, batch, policy=None: objective(stats, batch, policy=policy)  # noqa: E731
    custom.needs_policy = True  # online, but its means divide by its own batch's counts
    with pytest.raises(ValueError, match="does not combine with train.microbatches=2"):
        make_train_step(graphdef, custom, tx, schedule, microbatches=2)


def test_a_step_with_non_finite_gradients_changes_nothing_and_is_counted():
    """A NaN in the batch leaves the parameters and the optimizer state as they were, and is counted."""
    cfg = models.get_config("tiny")
    tx, schedule = make_optimizer(TRAIN)
    graphdef, state = create_train_state(cfg, tx, seed=0)
    step = make_train_step(graphdef, losses.get("iqlearn"), tx, schedule)
    good = {k: jnp.asarray(v) for k, v in _batch().items()}
    poisoned = dict(good, loss_mask=good["loss_mask"].at[0, -1].set(jnp.nan))
    before = jax.tree.map(np.array, (state.params, state.opt_state.inner_state))
    state, metrics = step(state, poisoned)
    assert not np.isfinite(float(metrics["loss"]))
    assert (int(metrics["nonfinite_streak"]), int(metrics["nonfinite_steps"])) == (1, 1)
    after = jax.tree.map(np.array, (state.params, state.opt_state.inner_state))
    assert all(jax.tree.leaves(jax.tree.map(np.array_equal, before, after)))
    state, metrics = step(state, good)
    assert (int(metrics["nonfinite_streak"]), int(metrics["nonfinite_steps"])) == (0, 1)
    assert not np.array_equal(np.array(state.params["embed"]), before[0]["embed"])
