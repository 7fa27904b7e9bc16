"""The CLI: bad input is one line on stderr and exit 2, a bug keeps its traceback; tiny runs go end to end."""

import json
import os
import subprocess
import sys

import pytest

from jirl import cli
from jirl.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARITH = os.path.join(ROOT, "experiments", "arith.py")
GSM8K = os.path.join(ROOT, "experiments", "gsm8k.py")
JSONL = os.path.join(ROOT, "experiments", "jsonl.py")
FIXTURES = os.path.join(ROOT, "tests", "data", "fixtures")


def _run(*args):
    return subprocess.run(
        [sys.executable, "-m", "jirl.cli", *args], capture_output=True, text=True, cwd=ROOT, timeout=300
    )


@pytest.mark.parametrize(
    "args,message",
    [
        (["fly"], "unknown command 'fly'; accepted: ['train', 'prepare', 'plan', 'eval', 'export']"),
        (["train", f"--config={ARITH}:iqlearn", "--workdir=w", "--config.train.stepz=3"], "stepz"),
        (["train", f"--config={ARITH}:ppo", "--workdir=w"], "unknown objective 'ppo'"),
        (
            ["train", f"--config={ARITH}", "--workdir=w", "--config.model.preset=huge"],
            "unknown model preset 'huge'",
        ),
        (["train", f"--config={ARITH}", "--workdir=w", "--config.loss.name=ppo"], "unknown loss 'ppo'"),
        (["train", f"--config={ARITH}", "--workdir=w", "--config.task.name=imagenet"], "imagenet"),
        (["train", f"--config={ARITH}"], "--workdir is required"),
        (
            ["train", f"--config={GSM8K}", "--workdir=w", "--config.task.data_dir=w_data"],
            "task 'gsm8k' (config 'default') is not prepared under w_data; run `jirl prepare --task gsm8k",
        ),
        (
            ["train", f"--config={ARITH}", "--workdir=w", "--config.eval.split=dev"],
            "eval.split='dev' is not a split of task 'arith'",
        ),
        (
            ["train", f"--config={ARITH}", "--workdir=w", "--config.loss.vocab_chunk=-5"],
            "loss.vocab_chunk=-5 is not accepted; give an integer >= 0: 0 for full logits",
        ),
        (
            ["train", f"--config={ARITH}", "--workdir=w", "--config.loss.vocab_chunk=2.5"],
            "bad value '2.5' for --config.loss.vocab_chunk: that key takes an integer.",
        ),
        (
            ["train", f"--config={ARITH}", "--workdir=w", "--config.loss.response_budget=1.5"],
            "loss.response_budget=1.5 is not accepted; give a number in (0, 1]",
        ),
        (
            ["train", f"--config={ARITH}", "--workdir=w", "--config.loss.sample_every=2"],
            "bad config override --config.loss.sample_every: that key has moved to "
            "--config.online.sample_every; set it there.",
        ),
        (
            ["train", f"--config={ARITH}:iqlearn_online", "--workdir=w", "--config.online.sample_every=0"],
            "online.sample_every=0 is not accepted; give an integer >= 1.",
        ),
        (
            [
                "train",
                f"--config={ARITH}",
                "--workdir=w",
                "--config.model.lora.rank=4",
                "--config.model.lora.targets=q_proj,c_attn",
            ],
            "model.lora.targets names ['c_attn'], which LoRA cannot adapt; accepted: ['q_proj', 'k_proj',",
        ),  # fmt: skip
        (
            ["train", f"--config={ARITH}", "--workdir=w", "--config.model.lora.targets=q_proj,o_proj"],
            "model.lora.rank=0 turns LoRA off; give a rank >= 1 to use model.lora.targets=('q_proj', 'o_",
        ),
        (
            [
                "train",
                f"--config={ARITH}",
                "--workdir=w",
                "--config.model.lora.rank=8",
                "--config.model.lora.base_dtype=float16",
            ],
            "model.lora.base_dtype='float16' is not accepted; accepted: ['float32', 'bfloat16'].",
        ),  # fmt: skip
        (["prepare", "--source=x"], "--task is required"),
        (["prepare", "--task=mnist"], "Unknown task 'mnist'"),
        (["prepare", "--task=tldr", "--data_dir=w_data"], "run `jirl prepare --task tldr --source PATH`"),
        (
            ["prepare", "--task=gsm8k", f"--source={FIXTURES}/tldr", "--data_dir=w_data"],
            "tldr/train.jsonl:1 has no field 'question'",
        ),
        (
            ["prepare", "--task=jsonl", f"--source={FIXTURES}/jsonl/qa.jsonl", "--data_dir=w_data"],
            "qa.jsonl:1 has no field 'prompt' (it has ['instruction', 'meta', 'source'])",
        ),
        (["prepare", "--task=gsm8k", "--prompt_field=q"], "--prompt_field is for task jsonl only"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path, capsys):
    """In this process (`cli.main`, what the `jirl` command calls); the command itself: below."""
    args = [a.replace("--workdir=w", f"--workdir={tmp_path / 'w'}") for a in args]
    args = [a.replace("=w_data", f"={tmp_path / 'w_data'}") for a in args]
    message = message.replace("w_data", str(tmp_path / "w_data"))
    assert cli.main(args) == 2  # any other exception than the one-line kinds would propagate here
    err = capsys.readouterr().err
    error_lines = [line for line in err.splitlines() if line.startswith("jirl: error:")]
    assert len(error_lines) == 1 and message in error_lines[0], err
    assert not (tmp_path / "w").exists()  # nothing written for a config that does not validate


@pytest.mark.parametrize(
    "args,message",
    [
        (["train", f"--config={ARITH}", "--workdir=w", "--config.model.preset=huge"], "unknown model preset"),
        (["prepare", "--task=mnist"], "Unknown task 'mnist'"),
    ],
)
def test_the_command_exits_2_with_one_line_and_no_traceback(args, message, tmp_path):
    args = [a.replace("--workdir=w", f"--workdir={tmp_path / 'w'}") for a in args]
    result = _run(*args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("jirl: error:")]
    assert len(error_lines) == 1 and message in error_lines[0], result.stderr
    assert not (tmp_path / "w").exists()


def test_a_bug_keeps_its_traceback(monkeypatch, capsys):
    """Only ConfigError (input a user can fix) becomes one line and exit 2; any other error propagates."""

    def raises(error):
        def command(args):
            raise error

        return command

    monkeypatch.setitem(cli.COMMANDS, "train", raises(ConfigError("train.steps=0 must be at least 1.")))
    assert cli.main(["train"]) == 2
    assert capsys.readouterr().err == "jirl: error: train.steps=0 must be at least 1.\n"
    for bug in (ValueError("a shape mismatch inside jirl"), KeyError("params"), TypeError("bad call")):
        monkeypatch.setitem(cli.COMMANDS, "train", raises(bug))
        with pytest.raises(type(bug)):
            cli.main(["train"])


def test_train_end_to_end_in_process(tiny_data_dir, tmp_path, capsys):
    workdir = tmp_path / "run"
    code = cli.main(
        [
            "train",
            f"--config={ARITH}:mle",
            f"--workdir={workdir}",
            "--progress=false",
            "--config.model.preset=tiny",
            "--config.task.config=tiny",
            f"--config.task.data_dir={tiny_data_dir}",
            "--config.task.seq_len=128",
            "--config.train.steps=4",
            "--config.train.batch_size=2",
            "--config.train.log_every=2",
            "--config.eval.every=0",
            "--config.eval.num_examples=2",
            "--config.eval.max_new_tokens=4",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "validation answer accuracy:" in out and str(workdir) in out
    with open(workdir / "summary.json") as f:
        assert json.load(f)["steps"] == 4


def test_prepare_then_train_a_local_task_with_its_own_sentencepiece(tmp_path, capsys):
    """`jirl prepare` reads the shipped GSM8K files and trains a vocabulary; `jirl train` then uses both."""
    data_dir = tmp_path / "data"
    code = cli.main(
        [
            "prepare",
            "--task=gsm8k",
            f"--source={FIXTURES}/gsm8k",
            f"--data_dir={data_dir}",
            "--vocab_size=330",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "gsm8k train: 6 examples" in out and "gsm8k test: 2 examples" in out
    assert (
        "--config.tokenizer.path=" in out and (data_dir / "tokenizers" / "gsm8k-default-sp330.model").exists()
    )
    workdir = tmp_path / "run"
    code = cli.main(
        [
            "train",
            f"--config={GSM8K}:iqlearn",
            f"--workdir={workdir}",
            "--progress=false",
            "--config.model.preset=tiny",
            f"--config.task.data_dir={data_dir}",
            "--config.tokenizer.vocab_size=330",
            "--config.task.seq_len=128",
            "--config.train.steps=2",
            "--config.train.batch_size=2",
            "--config.train.log_every=1",
            "--config.eval.every=0",
            "--config.eval.num_examples=2",
            "--config.eval.max_new_tokens=4",
        ]
    )
    assert code == 0
    assert "test answer accuracy:" in capsys.readouterr().out
    with open(workdir / "config.json") as f:
        assert json.load(f)["model"]["vocab_size"] == -1
    with open(workdir / "metrics.jsonl") as f:
        records = [json.loads(line) for line in f]
    assert [r["step"] for r in records if "loss" in r] == [1, 2]
    assert all(0 <= r["truncated_fraction"] <= 1 for r in records if "loss" in r)


def test_train_jsonl_from_source_counts_truncations(tmp_path, capsys):
    """task.source prepares a jsonl file on the first run; a short seq_len truncates and is counted."""
    workdir = tmp_path / "run"
    code = cli.main(
        [
            "train",
            f"--config={JSONL}:mle",
            f"--workdir={workdir}",
            "--progress=false",
            "--config.model.preset=tiny",
            f"--config.task.data_dir={tmp_path / 'data'}",
            f"--config.task.source={FIXTURES}/jsonl/qa.jsonl",
            "--config.task.config=qa",
            "--config.task.prompt_field=instruction",
            "--config.task.response_field=meta.answer",
            "--config.task.seq_len=24",
            "--config.task.pack=false",
            "--config.train.steps=2",
            "--config.train.batch_size=5",
            "--config.train.log_every=2",
            "--config.eval.every=2",
            "--config.eval.loss_batches=1",
        ]
    )
    assert code == 0
    assert "answer accuracy" not in capsys.readouterr().out  # jsonl has no answer metric
    with open(workdir / "metrics.jsonl") as f:
        (record,) = [json.loads(line) for line in f]
    # Prompts of the five train questions are 29-34 bytes: with BOS, EOS and the answer all exceed 24.
    assert record["truncated_examples"] == 10 and record["truncated_fraction"] == 1.0
    assert "eval_loss" in record


def _chat_file(path, messages):
    path.write_text((json.dumps({"messages": messages}) + "\n") * 2)  # one for train, one for validation
    return str(path)


@pytest.mark.parametrize(
    "case, message",
    [
        ("role", "chat.jsonl:1 message 1 has the unknown role 'bot'; accepted roles are"),
        ("no_assistant", "chat.jsonl:1 has no assistant turn; a chat row needs at least one (the response)."),
        ("no_template", "the data holds chat conversations but the tokenizer at "),
    ],
)
def test_chat_data_refusals_are_one_line_and_exit_2(case, message, tmp_path, capsys):
    """A chat row with an unknown role or no assistant turn; chat data and a checkpoint without a template."""
    from tokenizers import Tokenizer, models

    user = {"role": "user", "content": "1 plus 1?"}
    turns = {"role": [user, {"role": "bot", "content": "2"}], "no_assistant": [user]}
    source = _chat_file(
        tmp_path / "chat.jsonl", turns.get(case, [user, {"role": "assistant", "content": "2"}])
    )
    if case != "no_template":
        argv = ["prepare", "--task=jsonl", f"--source={source}", f"--data_dir={tmp_path / 'data'}"]
    else:
        checkpoint = tmp_path / "checkpoint"  # a tokenizer folder without chat_template
        checkpoint.mkdir()
        Tokenizer(models.WordLevel({"<unk>": 0, "</s>": 1}, unk_token="<unk>")).save(
            str(checkpoint / "tokenizer.json")
        )
        argv = [
            "train", f"--config={JSONL}:mle", f"--workdir={tmp_path / 'run'}", "--config.model.preset=tiny",
            f"--config.task.data_dir={tmp_path / 'data'}", f"--config.task.source={source}",
            "--config.task.config=chat", "--config.tokenizer.kind=hf",
            f"--config.tokenizer.path={checkpoint}",
        ]  # fmt: skip
    assert cli.main(argv) == 2
    error_lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("jirl: error:")]
    assert len(error_lines) == 1 and message in error_lines[0], error_lines
