"""The tokenizer a run uses, including a SentencePiece vocabulary trained on a task's own training text.

`tokenizer.kind=sentencepiece` with no `tokenizer.path` means: the model trained on the prompts and
responses of the task's train split, with `tokenizer.vocab_size` pieces, kept under
DATA_DIR/tokenizers/ and trained once (by `jirl prepare --vocab_size N` or on the first `jirl train`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from typing import Any

from jirl.data.tasks import Task
from jirl.data.tokenizer import Tokenizer, get_tokenizer, train_sentencepiece
from jirl.errors import ConfigError


def sentencepiece_path(task: Task, data_dir: str, config: str, vocab_size: int) -> str:
    """Where the SentencePiece model of `task` with `vocab_size` pieces lives."""
    return os.path.join(data_dir, "tokenizers", f"{task.name}-{config}-sp{vocab_size}.model")


def training_text(task: Task, data_dir: str, config: str) -> Iterator[str]:
    """Prompt and response of every train example, or each turn of a conversation (the task must be
    prepared)."""
    source = task.source("train", data_dir, config)
    for i in range(len(source)):
        messages = task.messages(source[i])
        if messages is not None:
            yield from (m["content"] for m in messages)
            continue
        prompt, response = task.prompt_response(source[i])
        yield prompt
        yield response


def task_sentencepiece(task: Task, data_dir: str, config: str, vocab_size: int) -> str:
    """The path of the task's SentencePiece model, trained now when it is not there yet."""
    if vocab_size < 8:
        raise ConfigError(f"tokenizer.vocab_size={vocab_size} is too small; give at least 8 (e.g. 8000).")
    path = sentencepiece_path(task, data_dir, config, vocab_size)
    if not os.path.exists(path):
        print(
            f"jirl: training a {vocab_size}-piece SentencePiece model on '{task.name}' train text",
            file=sys.stderr,
        )
        train_sentencepiece(training_text(task, data_dir, config), path.removesuffix(".model"), vocab_size)
    return path


def make_tokenizer(cfg: Mapping[str, Any] | None, task: Task, data_dir: str, config: str) -> Tokenizer:
    """The tokenizer that the config block `tokenizer` (kind, path, vocab_size, ...) names."""
    cfg = dict(cfg or {})
    if cfg.get("kind") == "sentencepiece" and not cfg.get("path"):
        cfg["path"] = task_sentencepiece(task, data_dir, config, int(cfg.get("vocab_size") or 0))
    return get_tokenizer(cfg)
