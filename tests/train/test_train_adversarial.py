"""Adversarial imitation in the framework: the sampler's groups, the state with both networks, one
step's updates and metrics, the loop, a SIGKILL resume, and refusals of bad options."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from configs import ARITH, ROOT, tiny_config

from jirl import cli, experiment, sharding
from jirl.errors import ConfigError
from jirl.train import adversarial, online, train
from jirl.train.checkpoint import Checkpointer
from jirl.train.metrics_writer import read_metrics
from jirl.train.state import create_sharded_train_state


def test_pack_with_groups_labels_examples_and_their_prompts():
    examples = [([1, 5], [7, 2]), ([1, 5], [8, 8, 2]), ([1, 6], [9, 2])]
    batch, dropped = online.pack(examples, 2, 8, groups=[0, 0, 1])
    assert dropped == 0
    np.testing.assert_array_equal(batch["example_ids"][0], [1, 1, 1, 2, 2, 2, 2, 0])
    np.testing.assert_array_equal(batch["group_ids"][0], [1, 1, 1, 1, 1, 1, 1, 0])
    np.testing.assert_array_equal(batch["example_ids"][1], [3, 3, 3, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(batch["group_ids"][1], [2, 2, 2, 0, 0, 0, 0, 0])
    plain, _ = online.pack(examples, 2, 8)
    assert "example_ids" not in plain and "group_ids" not in plain


def _run(data_dir, **loss):
    config = tiny_config(data_dir, "gail", steps=2)
    config.loss.update(loss)
    config.online.update(max_new_tokens=8)
    config.train.warmup_steps = 0  # the first step moves both networks
    return experiment.build(config)


def _state(run):
    graphdef, disc_graphdef, target, shardings = adversarial.state_target(run)
    _, policy, _ = create_sharded_train_state(run.model, run.tx, 0, run.mesh, run.rules)
    return graphdef, disc_graphdef, shardings, adversarial.initial_state(run, policy, shardings, 0)


def test_the_state_holds_the_policy_its_start_and_the_discriminator(tiny_data_dir):
    run = _run(tiny_data_dir)
    _, _, _, state = _state(run)
    jax.tree.map(np.testing.assert_array_equal, state.reference, state.params)
    differs = jax.tree.map(lambda a, b: not np.array_equal(a, b), state.discriminator, state.params)
    assert any(jax.tree.leaves(differs))  # the preset's discriminator is fresh (seed + 1)
    own = _run(tiny_data_dir, discriminator="policy")
    _, _, _, copied = _state(own)
    assert own.discriminator.copies_policy and own.discriminator.model == own.model
    jax.tree.map(np.testing.assert_array_equal, copied.discriminator, copied.params)
    leaves = [x.unsafe_buffer_pointer() for x in jax.tree.leaves((copied.params, copied.discriminator))]
    assert len(set(leaves)) == len(leaves)  # copies, not aliases: the step donates the state


def _policy_batch(run, graphdef, state, expert):
    sampler = online.PolicySampler(
        graphdef, run.tokenizer, every=1, max_new_tokens=8, temperature=1.0, seed=0, samples_per_prompt=2,
        sample_logp=adversarial.make_sample_logp(graphdef),
    )  # fmt: skip
    return sampler(state.params, expert, 1)


def _expert_batch(run):
    from jirl import data

    expert = next(data.make_batches(run.task, "train", data_dir=run.data_dir, tokenizer=run.tokenizer,
                                    seq_len=128, batch_size=4, task_config="tiny", seed=0))  # fmt: skip
    return {k: v for k, v in expert.items() if not k.startswith("_")}


def test_one_step_moves_the_policy_and_the_discriminator_but_not_the_start(tiny_data_dir):
    run = _run(tiny_data_dir)
    graphdef, disc_graphdef, shardings, state = _state(run)
    expert = _expert_batch(run)
    policy, stats = _policy_batch(run, graphdef, state, expert)
    assert stats["sample_tokens"] > 0
    ids = policy["example_ids"][policy["loss_mask"] > 0]
    groups = policy["group_ids"][policy["loss_mask"] > 0]
    assert ids.min() >= 1 and groups.min() >= 1
    for group in np.unique(groups):  # two samples of each prompt
        assert len(np.unique(ids[groups == group])) == 2
    # Sampled at these params: log pi of the sampled tokens is theirs, so every ratio is 1 (to a
    # few float32 ulps: decoding and the forward pass sum in different orders).
    np.testing.assert_allclose(
        policy["sample_logp"], adversarial.sequence_logp(graphdef, state.params, policy), rtol=1e-6, atol=1e-6
    )
    before = vars(jax.device_get(state))
    step = adversarial.make_adversarial_step(graphdef, disc_graphdef, run, shardings)
    put = lambda b: sharding.shard_batch(b, run.mesh, run.rules)  # noqa: E731
    state, metrics = step(state, put(expert), put(policy))
    metrics = jax.device_get(metrics)
    after = vars(jax.device_get(state))
    assert int(after["step"]) == 1
    for name in ("params", "discriminator"):
        moved = jax.tree.map(lambda a, b: not np.array_equal(a, b), before[name], after[name])
        assert any(jax.tree.leaves(moved)), name
    jax.tree.map(np.testing.assert_array_equal, before["reference"], after["reference"])
    incomplete = {k: v for k, v in policy.items() if k != "group_ids"}
    with pytest.raises(ValueError, match=r"missing \['group_ids'\]"):  # refused while tracing
        step(state, put(expert), put(incomplete))
    for key in ("disc_expert_accuracy", "disc_policy_accuracy", "reward_mean", "reward_std", "kl",
                "policy_entropy", "pg_loss", "nll", "disc_loss", "clip_fraction"):  # fmt: skip
        assert np.isfinite(metrics[key]), key
    assert metrics["clip_fraction"] == 0.0  # fresh samples: rho = 1
    assert metrics["disc_nonfinite_steps"] == 0 and "td_reg" not in metrics
    assert metrics["kl"] == pytest.approx(0.0, abs=1e-6)  # the policy is still its start
    assert metrics["loss"] == pytest.approx(metrics["pg_loss"] + metrics["nll"], abs=1e-5)  # mle_weight 1


def test_the_discriminator_reads_each_conversations_last_turn(tiny_data_dir):
    """An earlier turn added to every expert conversation changes the MLE term but not the
    discriminator's loss: the sampler answers the last turn, and so the discriminator compares that."""
    run = _run(tiny_data_dir)
    graphdef, disc_graphdef, shardings, state = _state(run)
    expert = _expert_batch(run)
    policy, _ = _policy_batch(run, graphdef, state, expert)
    multi_turn = dict(expert, loss_mask=expert["loss_mask"].copy())
    added = 0
    for row, segments in enumerate(expert["segment_ids"]):
        for segment in np.unique(segments[segments > 0]):
            where = np.flatnonzero(segments == segment)
            first_response = where[np.argmax(expert["loss_mask"][row, where] > 0)]
            if first_response - where[0] >= 4:  # two prompt tokens become a turn of their own
                multi_turn["loss_mask"][row, where[1:3]] = 1.0
                added += 1
    assert added > 0
    step = adversarial.make_adversarial_step(graphdef, disc_graphdef, run, shardings)
    put = lambda b: sharding.shard_batch(b, run.mesh, run.rules)  # noqa: E731
    metrics = []
    for batch in (expert, multi_turn):
        fresh = _state(run)[3]  # the step donates its state
        metrics.append(jax.device_get(step(fresh, put(batch), put(policy))[1]))
    for key in ("disc_loss", "disc_expert_accuracy", "disc_policy_accuracy", "reward_mean", "pg_loss"):
        assert metrics[0][key] == metrics[1][key], key
    assert metrics[0]["nll"] != metrics[1]["nll"]  # the MLE term reads every turn


def _command(workdir, data_dir, steps):
    return [
        sys.executable, "-m", "jirl.cli", "train", f"--config={ARITH}:gail", f"--workdir={workdir}",
        "--progress=false", "--config.model.preset=tiny", "--config.task.config=tiny",
        f"--config.task.data_dir={data_dir}", "--config.task.seq_len=128", f"--config.train.steps={steps}",
        "--config.train.batch_size=4", "--config.train.log_every=1", "--config.train.checkpoint_every=5",
        "--config.eval.every=0", "--config.eval.num_examples=2", "--config.eval.max_new_tokens=4",
        "--config.online.max_new_tokens=12", "--config.loss.samples_per_prompt=2",
        "--config.online.sample_every=3",  # resumed from step 5: step 6 reuses the batch of step 4
    ]  # fmt: skip


def _metrics(workdir):
    drop = ("tokens_per_sec", "sample_seconds", "sample_tokens_per_sec")
    return [{k: v for k, v in r.items() if k not in drop} for r in read_metrics(str(workdir))]


def _final_state(workdir, data_dir):
    config = tiny_config(data_dir, "gail")
    run = experiment.build(config)
    _, _, target, _ = adversarial.state_target(run)
    checkpointer = Checkpointer(str(workdir), keep=3, read_only=True)
    try:
        return checkpointer.restore_latest(target)
    finally:
        checkpointer.close()


def test_a_sigkill_then_restart_continues_bitwise(tiny_data_dir, tmp_path):
    """Both networks, both optimizers, pi_ref, the sampling keys and the policy batch in use (sampled
    at step 4, reused at steps 5 and 6; sampled anew at step 7): the killed run ends equal."""
    steps = 10
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run(_command(straight, tiny_data_dir, steps), check=True, cwd=ROOT, capture_output=True,
                   timeout=600)  # fmt: skip
    process = subprocess.Popen(_command(killed, tiny_data_dir, steps), cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 300
    while not os.path.isdir(killed / "checkpoints" / "5") and time.time() < deadline:
        assert process.poll() is None, "the run ended before it could be killed"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert 5 <= len(read_metrics(str(killed))) < steps
    restart = subprocess.run(_command(killed, tiny_data_dir, steps), cwd=ROOT, capture_output=True, text=True,
                             timeout=600)  # fmt: skip
    assert restart.returncode == 0, restart.stderr
    assert "resuming from the checkpoint at step" in restart.stdout
    assert _metrics(killed) == _metrics(straight)
    (step_a, a, _), (step_b, b, _) = (
        _final_state(straight, tiny_data_dir),
        _final_state(killed, tiny_data_dir),
    )
    assert step_a == step_b == steps
    jax.tree.map(np.testing.assert_array_equal, a, b)
    assert any(r["disc_loss"] != _metrics(straight)[0]["disc_loss"] for r in _metrics(straight))


@pytest.mark.parametrize(
    "override, named",
    [
        ("--config.loss.reward=wasserstein", "loss.reward='wasserstein' is not accepted"),
        ("--config.loss.kl=-0.1", "loss.kl=-0.1 is not accepted"),
        ("--config.loss.mle_weight=-1.0", "loss.mle_weight=-1.0 is not accepted"),
        ("--config.loss.discriminator=huge", "loss.discriminator='huge' is not accepted"),
        ("--config.online.temperature=0.0", "online.temperature=0.0 gives GAIL the same sample of a prompt"),
    ],
)
def test_bad_options_stop_with_one_line(tiny_data_dir, tmp_path, capsys, override, named):
    args = _command(tmp_path / "run", tiny_data_dir, 2)[3:] + [override]
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("jirl: error:") and len(err.splitlines()) == 1 and named in err, err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_the_loop_logs_both_networks_metrics_and_eval_reads_the_policy(tiny_data_dir, tmp_path):
    config = tiny_config(tiny_data_dir, "gail", steps=2)
    config.online.update(max_new_tokens=8)
    config.train.log_every = 1
    train(config, str(tmp_path), progress=False)
    records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert len([r for r in records if "loss" in r]) == 2
    for r in (r for r in records if "loss" in r):
        assert r["sample_seconds"] > 0 and r["policy_tokens"] > 0
        assert 0 <= r["disc_expert_accuracy"] <= 1 and 0 <= r["disc_policy_accuracy"] <= 1
    evaluated = [r for r in records if "eval_loss" in r]
    assert evaluated and evaluated[-1]["eval_loss"] == pytest.approx(evaluated[-1]["eval_nll"], abs=1e-6)
    assert (
        cli.main(["eval", f"--workdir={tmp_path}", "--samples=1", "--num_prompts=1", "--max_new_tokens=2"])
        == 0
    )


def test_gail_refuses_microbatches_by_name(tiny_data_dir):
    config = tiny_config(tiny_data_dir, "gail", steps=1)
    config.train.microbatches = 2
    with pytest.raises(ConfigError, match=r"GAIL \(loss.name='gail'\) does not combine with train.micro"):
        experiment.build(config)


def test_the_discriminator_model_learns_to_separate_two_token_distributions():
    """The discriminator as the step builds it (a tiny causal LM whose logit at the token taken is d,
    read by the head) separates expert rows of tokens 3-10 from policy rows of tokens 100-107."""
    import optax

    from jirl import forward, models
    from jirl.losses import adversarial as adv

    cfg = models.get_config("tiny")
    graphdef, params = models.split(models.create(cfg, seed=1))
    rng = np.random.default_rng(0)

    def batch(low):
        tokens = rng.integers(low, low + 8, (4, 33)).astype(np.int32)
        mask = np.ones((4, 32), np.float32)
        mask[:, :8] = 0  # a prompt, as in a real batch
        return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "loss_mask": mask}

    def loss_fn(p, expert, policy):
        d_expert = forward.token_stats(graphdef, p, expert, forward.HeadOptions(0)).q
        d_policy = forward.token_stats(graphdef, p, policy, forward.HeadOptions(0)).q
        return adv.discriminator_loss(d_expert, expert["loss_mask"], d_policy, policy["loss_mask"])

    tx = optax.adam(1e-2)
    opt_state = tx.init(params)

    @jax.jit
    def update(p, s, expert, policy):
        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, expert, policy)
        updates, s = tx.update(grads, s, p)
        return optax.apply_updates(p, updates), s, metrics

    for _ in range(60):
        params, opt_state, metrics = update(params, opt_state, batch(3), batch(100))
    _, metrics = loss_fn(params, batch(3), batch(100))  # fresh rows
    assert metrics["disc_expert_accuracy"] > 0.95 and metrics["disc_policy_accuracy"] > 0.95, metrics
    assert metrics["disc_loss"] < 0.1
