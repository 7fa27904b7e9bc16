"""The loop: the loss goes down, the same seed gives the same run, outputs land in the workdir."""

import json
import os

import jax
import numpy as np
from configs import tiny_config

from jirl.train import train
from jirl.train.metrics_writer import read_metrics


def test_short_training_lowers_the_loss(tiny_data_dir, tmp_path):
    config = tiny_config(tiny_data_dir, steps=30)
    config.train.log_every = 1
    config.eval.every = 0
    train(config, str(tmp_path), progress=False)
    losses = [r["loss"] for r in read_metrics(str(tmp_path))]
    assert len(losses) == 30
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses


def test_same_seed_same_run_another_seed_another_and_outputs_written(tiny_data_dir, tmp_path):
    runs = []
    for name in ("a", "b"):
        workdir = str(tmp_path / name)
        summary = train(tiny_config(tiny_data_dir), workdir, progress=False)
        runs.append([{k: v for k, v in r.items() if k != "tokens_per_sec"} for r in read_metrics(workdir)])
    assert runs[0] == runs[1]  # bitwise: every metric of every logged step
    record = runs[0][-1]
    for key in ("step", "loss", "nll", "td_reg", "reward", "value", "accuracy", "tokens", "eval_loss"):
        assert key in record, key
    assert [r["step"] for r in runs[0]] == [2, 4, 6, 8]
    for name in ("metrics.jsonl", "summary.json", "samples.jsonl", "curves.png", "config.json"):
        assert os.path.exists(os.path.join(workdir, name)), name
    assert os.listdir(os.path.join(workdir, "tensorboard"))
    assert 0.0 <= summary["answer_accuracy"] <= 1.0
    with open(os.path.join(workdir, "summary.json")) as f:
        written = json.load(f)
    assert written["answer_examples"] == 4
    assert written["devices"] == f"{jax.device_count()} x {jax.devices()[0].device_kind}"  # "1 x cpu"
    config = tiny_config(tiny_data_dir)
    config.train.seed = 1
    config.eval.update(answers_every=0)  # its first loss is all this run is for
    train(config, str(tmp_path / "c"), progress=False)
    assert read_metrics(str(tmp_path / "c"))[0]["loss"] != runs[0][0]["loss"]


def test_a_finished_run_started_again_resumes_at_its_end(tiny_data_dir, tmp_path):
    config = tiny_config(tiny_data_dir, steps=4)
    first = train(config, str(tmp_path), progress=False)
    again = train(config, str(tmp_path), progress=False)
    assert [r["step"] for r in read_metrics(str(tmp_path))] == [2, 4]
    assert again["answer_accuracy"] == first["answer_accuracy"]


def test_vocabulary_chunks_train_like_full_logits(tiny_data_dir, tmp_path):
    """8 steps with loss.vocab_chunk=64 (259 entries: 5 chunks) log the losses of full logits."""
    logged = {}
    for chunk in (0, 64):
        config = tiny_config(tiny_data_dir, steps=8)
        config.loss.vocab_chunk = chunk
        config.train.log_every = 1
        config.eval.update(every=4, answers_every=0)
        workdir = str(tmp_path / str(chunk))
        train(config, workdir, progress=False)
        logged[chunk] = read_metrics(workdir)
    assert [r["step"] for r in logged[64]] == list(range(1, 9))
    for full, chunked in zip(logged[0], logged[64]):
        for key in ("loss", "nll", "td_reg", "eval_loss"):
            if key in full:
                np.testing.assert_allclose(
                    chunked[key], full[key], rtol=1e-5, err_msg=f"{key} {full['step']}"
                )
