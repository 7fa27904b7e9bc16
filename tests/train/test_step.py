"""The jitted step: generic over the loss, two named streams, non-finite steps skipped; host-side
batch checks name what is wrong."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from configs import load_arith

from jirl import losses, models
from jirl.optimizer import make_optimizer
from jirl.train import check_batch, create_train_state, make_eval_step, make_train_step

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


def test_bad_batches_name_the_problem():
    batch = _batch()
    check_batch(batch, 259)
    with pytest.raises(ValueError, match=r"missing key\(s\) \['loss_mask'\]"):
        check_batch({k: v for k, v in batch.items() if k != "loss_mask"}, 259)
    with pytest.raises(ValueError, match="token id 300, outside the model vocabulary \\[0, 259\\)"):
        check_batch(dict(batch, targets=np.full_like(batch["targets"], 300)), 259)
    with pytest.raises(ValueError, match="token id -1"):
        check_batch(dict(batch, inputs=np.full_like(batch["inputs"], -1)), 259)
    with pytest.raises(ValueError, match=r"batch\['loss_mask'\] has shape \(2, 15\)"):
        check_batch(dict(batch, loss_mask=batch["loss_mask"][:, 1:]), 259)


def test_microbatches_give_the_full_batch_step():
    """M = 4 slices, one of them without loss tokens: same loss, metrics and params as M = 1."""
    train = load_arith().train
    train.update(learning_rate=1e-3, warmup_steps=0)  # Adam scales rounding noise by the lr
    tx, schedule = make_optimizer(train)
    loss_fn = losses.get("iqlearn", lam=0.5, gamma=0.9)
    cfg = models.get_config("tiny")
    results = []
    for microbatches in (1, 4):
        graphdef, state = create_train_state(cfg, tx, seed=0)
        step = make_train_step(graphdef, loss_fn, tx, schedule, microbatches=microbatches)
        history = []
        for seed in range(2):
            batch = _batch(b=8, seed=seed)
            batch["loss_mask"][[1, 5]] = 0  # slice 1 = rows 1 and 5: no tokens
            batch["loss_mask"][0, :5] = 1  # uneven token counts across slices
            state, metrics = step(state, {k: jnp.asarray(v) for k, v in batch.items()})
            history.append(jax.device_get(metrics))
        results.append((history, jax.device_get(state)))
    (full_history, full_state), (micro_history, micro_state) = results
    for full, micro in zip(full_history, micro_history):
        assert sorted(full) == sorted(micro)
        for key in full:
            np.testing.assert_allclose(micro[key], full[key], rtol=1e-5, atol=1e-6, err_msg=key)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), micro_state, full_state)


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
    with pytest.raises(ValueError, match="does not combine with train.microbatches=2"):
        make_train_step(graphdef, objective, tx, schedule, microbatches=2)


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
