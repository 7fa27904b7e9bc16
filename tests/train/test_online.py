"""Online IQLearn: prompts recovered from packed batches, policy batches packed right, the loop samples."""

import json
import shutil

import jax
import numpy as np
import pytest
from configs import tiny_config

from jirl import data, experiment
from jirl.train import online, train
from jirl.train.metrics_writer import read_metrics
from jirl.train.workdir import load_trained


def test_prompts_of_a_packed_batch_are_bos_plus_prompt(tiny_data_dir):
    task, tok = data.get_task("arith"), data.ByteTokenizer()
    batch = next(
        data.make_batches(
            task, "train", data_dir=tiny_data_dir, tokenizer=tok, seq_len=256, batch_size=4, seed=0,
            task_config="tiny",
        )
    )  # fmt: skip
    source = task.source("train", tiny_data_dir, "tiny")
    every_prompt = {
        tuple([tok.bos_id] + tok.encode(task.prompt_response(source[i])[0])) for i in range(len(source))
    }
    prompts = online.prompts_of(batch)
    assert len(prompts) == int(sum(batch["segment_ids"][r].max() for r in range(4)))
    assert all(tuple(p) in every_prompt for p in prompts)


def test_prompts_of_an_encoder_decoder_batch_are_its_encoder_segments(tiny_data_dir):
    task, tok = data.get_task("arith"), data.ByteTokenizer()
    batch = next(
        data.make_batches(
            task, "train", data_dir=tiny_data_dir, tokenizer=tok, seq_len=256, batch_size=4, seed=0,
            task_config="tiny", decoder_start_id=0,
        )
    )  # fmt: skip
    source = task.source("train", tiny_data_dir, "tiny")
    every_prompt = {
        tuple(tok.encode(task.prompt_response(source[i])[0]) + [tok.eos_id]) for i in range(len(source))
    }
    prompts = online.prompts_of(batch)
    assert len(prompts) == int(sum(batch["segment_ids"][r].max() for r in range(4))) > 4  # packed
    assert all(tuple(p) in every_prompt for p in prompts)


def test_pack_seq2seq_pairs_each_prompt_with_its_response_in_one_row():
    examples = [([5, 6, 2], [7, 8, 2]), ([9, 2], [3, 2]), ([4] * 9, [2]), ([1, 2], [3])]
    batch, dropped = online.pack_seq2seq(examples, 2, 6, 0)
    assert dropped == 1  # the prompt of 9 is cut to 6 and fills row 1; row 0 has 1 encoder slot left
    np.testing.assert_array_equal(batch["encoder_inputs"][0], [5, 6, 2, 9, 2, 0])
    np.testing.assert_array_equal(batch["encoder_segment_ids"][0], [1, 1, 1, 2, 2, 0])
    np.testing.assert_array_equal(batch["encoder_positions"][0], [0, 1, 2, 0, 1, 0])
    np.testing.assert_array_equal(batch["inputs"][0], [0, 7, 8, 0, 3, 0])
    np.testing.assert_array_equal(batch["targets"][0], [7, 8, 2, 3, 2, 0])
    np.testing.assert_array_equal(batch["loss_mask"][0], [1, 1, 1, 1, 1, 0])
    np.testing.assert_array_equal(batch["segment_ids"][0], [1, 1, 1, 2, 2, 0])
    np.testing.assert_array_equal(batch["encoder_inputs"][1], [4] * 6)
    np.testing.assert_array_equal(batch["targets"][1], [2, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(batch["segment_ids"][1], [1, 0, 0, 0, 0, 0])


def test_pack_places_examples_with_the_mask_on_responses():
    batch, dropped = online.pack([([1, 5, 6], [7, 8, 2]), ([1, 9], [3, 2]), ([1] + [4] * 9, [2])], 2, 8)
    assert dropped == 1  # 10 + 1 tokens need 10 positions: no row of 8 takes it
    np.testing.assert_array_equal(batch["inputs"][0], [1, 5, 6, 7, 8, 1, 9, 3])
    np.testing.assert_array_equal(batch["targets"][0], [5, 6, 7, 8, 2, 9, 3, 2])
    np.testing.assert_array_equal(batch["loss_mask"][0], [0, 0, 1, 1, 1, 0, 1, 1])
    np.testing.assert_array_equal(batch["segment_ids"][0], [1, 1, 1, 1, 1, 2, 2, 2])
    np.testing.assert_array_equal(batch["positions"][0], [0, 1, 2, 3, 4, 0, 1, 2])
    assert not batch["segment_ids"][1].any()


def test_the_loop_trains_on_its_own_samples(tiny_data_dir, tmp_path):
    config = tiny_config(tiny_data_dir, steps=2)
    config.loss.alpha = 0.1
    config.online.update(sample_every=1, max_new_tokens=16)
    config.train.log_every = 1
    config.eval.update(every=2, loss_batches=1)  # evaluated on the expert stream, offline terms
    train(config, str(tmp_path), progress=False)
    with open(tmp_path / "metrics.jsonl") as f:
        records = [json.loads(line) for line in f]
    last = records[-1]
    assert "eval_policy_tokens" not in last
    assert last["eval_loss"] == pytest.approx(last["eval_nll"] + 0.1 * last["eval_td_reg"], abs=1e-5)
    for r in records:
        assert r["policy_tokens"] > 0 and r["sample_tokens"] > 0 and r["sample_seconds"] > 0
        assert "value_gap" in r  # the online form of the loss ran
        online_part = r["loss"] - r["nll"] - 0.1 * (0.9 * r["td_reg"] + 0.1 * r["policy_td_reg"])
        assert online_part == pytest.approx(0.1 * r["value_gap"], abs=1e-4)


def test_the_loop_trains_a_t5_on_its_own_samples(tiny_data_dir, tmp_path):
    config = tiny_config(tiny_data_dir, steps=2)
    config.model.preset = "t5_tiny"
    config.loss.alpha = 0.1
    config.online.update(sample_every=1, max_new_tokens=16)
    config.train.log_every = 1
    config.eval.every = 0
    train(config, str(tmp_path), progress=False)
    with open(tmp_path / "metrics.jsonl") as f:
        records = [json.loads(line) for line in f]
    assert len(records) == 2
    for r in records:
        assert r["policy_tokens"] > 0 and r["sample_tokens"] > 0 and "value_gap" in r
        assert np.isfinite(r["loss"])


def test_online_iqlearn_builds_with_microbatches(tiny_data_dir):
    """Online IQLearn accumulates over microbatches (each slice divides by the whole batch's counts);
    GAIL still refuses them (tests/train/test_train_adversarial.py)."""
    config = tiny_config(tiny_data_dir, steps=1)
    config.loss.alpha = 0.1
    config.train.microbatches = 2
    run = experiment.build(config)
    assert run.microbatches == 2 and run.objective.needs_policy and run.objective.reads_counts


def test_a_resumed_run_reuses_the_policy_batch_in_use_bit_for_bit(tiny_data_dir, tmp_path):
    """sample_every=3 samples at steps 1, 4, 7. Resumed from the checkpoint at step 4, steps 5 and 6
    reuse the batch sampled at step 4 (saved with the checkpoint), as the straight run does: every
    step's metrics and the final parameters equal, bit for bit."""
    config = tiny_config(tiny_data_dir, steps=7)
    config.loss.alpha = 0.1
    config.online.update(sample_every=3, max_new_tokens=12)
    config.train.update(log_every=1, checkpoint_every=4, microbatches=2)  # the loop with slices, too
    config.eval.update(every=0, num_examples=2, max_new_tokens=4)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(config, str(straight), progress=False)
    shutil.copytree(straight, resumed)
    shutil.rmtree(resumed / "checkpoints" / "7")
    train(config, str(resumed), progress=False)

    timing = ("tokens_per_sec", "sample_seconds", "sample_tokens_per_sec")
    metrics = lambda path: [  # noqa: E731
        {k: v for k, v in r.items() if k not in timing} for r in read_metrics(str(path))
    ]
    assert [r["step"] for r in metrics(resumed)] == list(range(1, 8))
    assert metrics(resumed) == metrics(straight)
    assert "sample_tokens" not in metrics(straight)[4] and "sample_tokens" in metrics(straight)[6]
    jax.tree.map(
        np.testing.assert_array_equal, load_trained(str(straight)).params, load_trained(str(resumed)).params
    )
