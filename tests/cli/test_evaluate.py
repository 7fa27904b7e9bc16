"""`jirl eval` on a tiny trained run: the report, its file and plot, and bad input in one line."""

import json
import os
import subprocess
import sys

import pytest

from jirl import cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARITH = os.path.join(ROOT, "experiments", "arith.py")


@pytest.fixture(scope="module")
def workdir(tiny_data_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("evalrun") / "run"
    code = cli.main(
        [
            "train", f"--config={ARITH}:iqlearn", f"--workdir={path}", "--progress=false",
            "--config.model.preset=tiny", "--config.task.config=tiny",
            f"--config.task.data_dir={tiny_data_dir}",
            "--config.task.seq_len=128", "--config.train.steps=2", "--config.train.batch_size=2",
            "--config.eval.every=0", "--config.eval.num_examples=2", "--config.eval.max_new_tokens=4",
        ]
    )  # fmt: skip
    assert code == 0
    return path


def test_eval_reports_quality_diversity_and_rerank(workdir, capsys):
    code = cli.main(
        ["eval", f"--workdir={workdir}", "--samples=3", "--temperature=0.5,1.0", "--num_prompts=4",
         "--max_new_tokens=8", "--rerank=3", "--greedy"]
    )  # fmt: skip
    assert code == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    with open(workdir / "eval_validation.json") as f:
        saved = json.load(f)
    assert saved == {k: v for k, v in printed.items() if k != "plot"}
    assert saved["step"] == 2 and saved["prompts"] == 4 and saved["samples"] == 3
    assert [r["temperature"] for r in saved["by_temperature"]] == [0.5, 1.0]
    for row in saved["by_temperature"]:
        assert 0 <= row["answer_accuracy"] <= 1 and 0 <= row["self_bleu"] <= 100.01
        assert 0 < row["distinct_1"] <= 1 and row["mean_token_entropy"] > 0
        correct = row["correct_per_prompt"]
        assert len(correct) == 4 and all(0 <= c <= 3 for c in correct)
        assert sum(correct) / (3 * 4) == pytest.approx(row["answer_accuracy"], abs=1e-9)
        assert list(row["pass_at_k"]) == ["1", "3"]
        assert row["pass_at_k"]["1"] == pytest.approx(row["answer_accuracy"], abs=1e-9)
        assert row["pass_at_k"]["1"] <= row["pass_at_k"]["3"] <= 1 and 0 <= row["majority_vote"] <= 1
    greedy = saved["greedy"]
    assert len(greedy["correct"]) == 4 and set(greedy["correct"]) <= {0, 1}
    assert greedy["accuracy"] == pytest.approx(sum(greedy["correct"]) / 4)
    rerank = saved["rerank"]
    across = rerank["spearman_reward_metric_across_prompts"]
    assert across is None or -1 <= across <= 1  # None: every prompt's fraction right is the same
    assert rerank["n"] == 3 and set(rerank["best_of_n"]) == {
        "reward",
        "log_likelihood",
        "random",
        "oracle",
        "mean",
    }
    assert os.path.exists(printed["plot"])


def test_eval_of_every_prompt(workdir, capsys):
    code = cli.main(["eval", f"--workdir={workdir}", "--split=test", "--samples=1", "--num_prompts=-1",
                     "--max_new_tokens=2"])  # fmt: skip
    assert code == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["prompts"] == 16 and "greedy" not in report  # the tiny test split, all of it


def _eval(*args):
    return subprocess.run(
        [sys.executable, "-m", "jirl.cli", "eval", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--split=dev"], "split 'dev' is not a split of task 'arith'"),
        (["--samples=0"], "--samples=0 must be at least 1"),
        (["--num_prompts=-2"], "--num_prompts=-2 must be -1 (all)"),
        (["--top_p=1.5"], "top_p=1.5 must be in (0, 1]"),
        (["--temperature=hot"], "--temperature=hot must be numbers"),
        (["--max_new_tokens=400"], "exceeds the model's maximum length 256"),
    ],
)
def test_bad_eval_input_is_one_line(workdir, args, message, capsys):
    assert cli.main(["eval", f"--workdir={workdir}", "--num_prompts=2", *args]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("jirl: error:")]
    assert len(errors) == 1 and message in errors[0], err


def test_a_workdir_without_checkpoint(tmp_path):
    """Through the `jirl` command: exit 2, one line, no traceback."""
    result = _eval(f"--workdir={tmp_path}")
    assert result.returncode == 2 and f"no checkpoint in {tmp_path}" in result.stderr
    assert "Traceback" not in result.stderr
    assert os.listdir(tmp_path) == []  # nothing written there
