"""Task registry: a TFDS dataset plus how its examples become prompt/response."""

import contextlib
import dataclasses
import io
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from jirl.data import arith_builder
from jirl.evaluation.answers import extract_answer


@contextlib.contextmanager
def _quiet_tfds():
    """Silences TFDS's messages while it builds: they speak of downloads a generated task never makes."""
    tfds.disable_progress_bar()
    verbosity = logging.get_verbosity()
    logging.set_verbosity(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.set_verbosity(verbosity)


def _text(value: Any) -> str:
    """A TFDS Text feature (bytes, numpy bytes or str) as str."""
    if isinstance(value, np.ndarray):
        value = value.item()
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


@dataclasses.dataclass(frozen=True)
class Task:
    """A question/answer task stored as TFDS ArrayRecord.

    prompt = question + "\\n"; response = the answer text, GSM8K-style, so the
    reference answer is the number on its `#### N` line.
    """

    name: str
    builder: type[tfds.core.DatasetBuilder]
    splits: tuple[str, ...]
    prompt_key: str = "question"
    response_key: str = "answer"

    @property
    def configs(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.builder.BUILDER_CONFIGS)

    def _builder(self, data_dir: str, config: str) -> tfds.core.DatasetBuilder:
        if config not in self.configs:
            raise ValueError(
                f"Unknown config {config!r} for task {self.name!r}; accepted"
                f" configs are {list(self.configs)}."
            )
        return self.builder(config=config, data_dir=data_dir, file_format="array_record")

    def prepare(self, data_dir: str, config: str = "default") -> None:
        """Builds the dataset under `data_dir` unless it is already there."""
        with _quiet_tfds():
            builder = self._builder(data_dir, config)
            if builder.is_prepared():
                return
            print(
                f"jirl: writing task '{self.name}' ({config}) as ArrayRecord under {data_dir} (once)",
                file=sys.stderr,
            )
            builder.download_and_prepare()

    def source(self, split: str, data_dir: str, config: str = "default") -> Sequence[Mapping[str, Any]]:
        """Random-access records of `split` (run `prepare` first)."""
        if split not in self.splits:
            raise ValueError(
                f"Unknown split {split!r} for task {self.name!r}; accepted splits are {list(self.splits)}."
            )
        builder = self._builder(data_dir, config)
        if not builder.is_prepared():
            raise FileNotFoundError(
                f"Task {self.name!r} (config {config!r}) is not prepared under"
                f" {data_dir}; call prepare() or run `jirl prepare` first."
            )
        return builder.as_data_source(split=split)

    def prompt_response(self, example: Mapping[str, Any]) -> tuple[str, str]:
        """(question + "\\n", answer text)."""
        return (_text(example[self.prompt_key]) + "\n", _text(example[self.response_key]))

    def reference(self, example: Mapping[str, Any]) -> str:
        """The final answer: the number on the `#### N` line of the response."""
        response = _text(example[self.response_key])
        answer = extract_answer(response)
        if answer is None:
            raise ValueError(f"Task {self.name!r} example has no '#### N' answer line: {response[-80:]!r}.")
        return answer


_TASKS = {
    "arith": Task(name="arith", builder=arith_builder.JirlArith, splits=("train", "validation", "test")),
}


def task_names() -> tuple[str, ...]:
    return tuple(_TASKS)


def get_task(name: str) -> Task:
    """The registered task called `name`."""
    if name not in _TASKS:
        raise ValueError(f"Unknown task {name!r}; accepted tasks are {list(_TASKS)}.")
    return _TASKS[name]
