"""Policy batches built on the devices (unpacked expert batches) against the host path."""

import jax
import numpy as np
import pytest
from configs import tiny_config

from jirl import data, experiment, losses, models
from jirl.train import device_policy, online


def _examples(batch) -> list[tuple]:
    """Each example of a packed or padded batch: (inputs, targets, loss mask[, example id, group id])."""
    batch = jax.tree.map(np.asarray, dict(batch))
    out = []
    for row in range(batch["inputs"].shape[0]):
        segments = batch["segment_ids"][row]
        for seg in np.unique(segments[segments > 0]):
            where = segments == seg
            example = tuple(tuple(batch[k][row][where].tolist()) for k in ("inputs", "targets", "loss_mask"))
            if "group_ids" in batch:  # the group is the prompt's; example ids number examples in order
                example += (int(batch["example_ids"][row][where][0]), int(batch["group_ids"][row][where][0]))
            out.append(example)
    return sorted(out)


def _setup(tiny_data_dir):
    config = tiny_config(tiny_data_dir)
    config.task.pack = False
    run = experiment.build(config)
    batches = data.make_batches(run.task, "train", data_dir=run.data_dir, tokenizer=run.tokenizer,
                                seq_len=128, batch_size=4, pack=False, seed=0,
                                task_config="tiny")  # fmt: skip
    expert = next(batches)
    data.pop_stats(expert)
    graphdef, params = models.split(models.create(run.model, seed=0))
    return run, graphdef, params, expert


@pytest.mark.parametrize("samples_per_prompt", [0, 2])
def test_the_device_batch_holds_the_host_batchs_examples(tiny_data_dir, samples_per_prompt):
    """Same seed and step: the same responses (row keys by global example number), the same examples
    (the host packs them first-fit, the devices one per row), the same online IQLearn loss."""
    run, graphdef, params, expert = _setup(tiny_data_dir)
    options = dict(every=1, max_new_tokens=24, temperature=1.0, seed=3, samples_per_prompt=samples_per_prompt)
    host, host_stats = online.PolicySampler(graphdef, run.tokenizer, **options)(params, expert, 2)
    device, device_stats = online.PolicySampler(graphdef, run.tokenizer, on_device=True, **options)(
        params, expert, 2
    )
    assert _examples(device) == _examples(host)
    assert len(_examples(host)) == 4  # a response to each of the 4 rows, or 2 to each of 2 prompts
    assert device_stats["sample_tokens"] == host_stats["sample_tokens"] > 0
    assert device_stats["policy_examples_dropped"] == host_stats["policy_examples_dropped"] == 0
    if samples_per_prompt == 0:
        objective = losses.get("iqlearn", lam=0.1, gamma=0.99, alpha=0.1)
        loss_of = lambda policy: objective(  # noqa: E731
            losses.head.from_logits(models.forward_batch(graphdef, params, expert), expert),
            expert,
            policy=losses.Stream(
                losses.head.from_logits(models.forward_batch(graphdef, params, policy), policy), policy
            ),
        )[0]
        np.testing.assert_allclose(loss_of(device), loss_of(dict(host)), rtol=1e-5)


def test_a_row_whose_prompt_fills_it_is_dropped_and_empty_rows_stay_empty():
    inputs = np.arange(1, 9, dtype=np.int32)[None].repeat(3, 0)
    expert = {
        "inputs": inputs,
        "loss_mask": np.array([[0, 0, 0, 1, 1, 1, 0, 0], [0] * 8, [0] * 8], np.float32),
        "segment_ids": np.array([[1, 1, 1, 1, 1, 1, 0, 0], [1] * 8, [0] * 8], np.int32),
    }
    tokens = np.array([[20, 21, 2, 0], [30, 31, 32, 33], [40, 2, 0, 0]], np.int32)
    batch, dropped, sampled = device_policy.policy_rows(expert, tokens, eos_id=2)
    batch = jax.tree.map(np.asarray, batch)
    # row 0: prompt BOS + p1..p3 = inputs[0:4] = 1 2 3 4, response 20 21 EOS: seq 1 2 3 4 20 21 2
    np.testing.assert_array_equal(batch["inputs"][0], [1, 2, 3, 4, 20, 21, 0, 0])
    np.testing.assert_array_equal(batch["targets"][0], [2, 3, 4, 20, 21, 2, 0, 0])
    np.testing.assert_array_equal(batch["loss_mask"][0], [0, 0, 0, 1, 1, 1, 0, 0])
    np.testing.assert_array_equal(batch["segment_ids"][0], [1, 1, 1, 1, 1, 1, 0, 0])
    assert not batch["segment_ids"][1:].any()  # row 1's prompt (9 tokens) leaves no room; row 2 is empty
    assert int(dropped) == 1 and int(sampled) == 3 + 4


def test_the_loop_builds_policy_batches_on_the_devices_for_unpacked_data(tiny_data_dir, tmp_path):
    from jirl.train import train
    from jirl.train.metrics_writer import read_metrics

    config = tiny_config(tiny_data_dir, steps=2)
    config.task.pack = False
    config.loss.alpha = 0.1
    config.online.update(sample_every=1, max_new_tokens=16)
    config.train.log_every = 1
    config.eval.every = 0
    train(config, str(tmp_path), progress=False)
    records = read_metrics(str(tmp_path))
    assert len(records) == 2
    for r in records:
        assert r["policy_tokens"] > 0 and r["sample_tokens"] > 0 and np.isfinite(r["value_gap"])
