"""The registered tasks, each with its formatting: raw fields -> prompt / response / reference.

`get_task(name)` returns one; `jirl.data.tasks` defines what a generated or a local task is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jirl.data import arith_builder, formats
from jirl.data.answers import extract_answer
from jirl.data.tasks import Catalog, GeneratedTask, LocalTask, Task
from jirl.errors import ConfigError

# --- formatting, one function per task: raw fields -> prompt / response / reference ---------------


def format_gsm8k(raw: Mapping[str, str], config: str) -> dict[str, str]:
    """GSM8K: question + "\\n" -> the worked answer; the reference is the number after `####`."""
    del config
    answer = extract_answer(raw["answer"])
    if answer is None:
        raise ConfigError(f"a gsm8k answer has no '#### N' line: {raw['answer'][-80:]!r}.")
    return {"prompt": raw["question"].strip() + "\n", "response": raw["answer"].strip(), "reference": answer}


def format_xsum(raw: Mapping[str, str], config: str) -> dict[str, str]:
    """XSum: the article, then "Summary:" -> a one-sentence summary."""
    del config
    prompt = f"Summarize the article in one sentence.\n\n{raw['document'].strip()}\n\nSummary:"
    return {"prompt": prompt, "response": " " + raw["summary"].strip(), "reference": raw["summary"].strip()}


def format_tldr(raw: Mapping[str, str], config: str) -> dict[str, str]:
    """Reddit TL;DR, in the prompt layout of OpenAI's summarize-from-feedback work."""
    del config
    prompt = (
        f"SUBREDDIT: r/{raw['subreddit']}\nTITLE: {raw['title'].strip()}\nPOST: {raw['post'].strip()}\nTL;DR:"
    )
    return {"prompt": prompt, "response": " " + raw["summary"].strip(), "reference": raw["summary"].strip()}


def _languages(config: str) -> tuple[str, str]:
    source_lang, target_lang = config.split("-")
    return source_lang, target_lang


def format_wmt(raw: Mapping[str, str], config: str) -> dict[str, str]:
    """Translation, config 'SRC-TGT': "Translate SRC to TGT:\\n<sentence>\\n" -> the translation."""
    source_lang, target_lang = _languages(config)
    prompt = f"Translate {source_lang} to {target_lang}:\n{raw['source']}\n"
    return {"prompt": prompt, "response": raw["target"], "reference": raw["target"]}


def format_jsonl(raw: Mapping[str, str], config: str) -> dict[str, str]:
    """Any JSON lines: the prompt field (a newline added unless it ends in whitespace), then the response;
    a chat row keeps its conversation (rendered with the checkpoint's chat template when tokenized)."""
    del config
    if "messages" in raw:
        return {"prompt": "", "response": "", "reference": raw["reference"], "messages": raw["messages"]}
    prompt = raw["prompt"] if raw["prompt"][-1:].isspace() else raw["prompt"] + "\n"
    return {"prompt": prompt, "response": raw["response"], "reference": raw.get("reference", raw["response"])}


def _read_jsonl(source: str, config: str, options: Mapping[str, Any]) -> formats.Records:
    del config
    fields = {
        "prompt": options.get("prompt_field") or "prompt",
        "response": options.get("response_field") or "response",
    }
    if options.get("reference_field"):
        fields["reference"] = options["reference_field"]
    return formats.jsonl(source, fields)


def _wmt_catalog_name(config: str) -> str:
    source_lang, target_lang = _languages(config)
    other = source_lang if target_lang == "en" else target_lang
    return f"wmt14_translate/{other}-en"


_TASKS: dict[str, GeneratedTask | LocalTask] = {
    "arith": GeneratedTask(
        name="arith", builder=arith_builder.JirlArith, splits=("train", "validation", "test")
    ),
    "jsonl": LocalTask(
        name="jsonl",
        read=_read_jsonl,
        format=format_jsonl,
        splits=("train", "validation", "test"),
        metric="none",
        source_help=(
            "a .jsonl file (the train split) or a folder of train/validation/test.jsonl, and "
            "--prompt_field/--response_field naming the fields (or chat rows with a 'messages' list)"
        ),
    ),
    "gsm8k": LocalTask(
        name="gsm8k",
        read=lambda source, config, options: formats.gsm8k(source),
        format=format_gsm8k,
        splits=("train", "test"),
        metric="answer_accuracy",
        source_help="the folder holding GSM8K's train.jsonl and test.jsonl",
        catalog=Catalog(
            name=lambda config: "gsm8k",
            fields=lambda config: {"question": "question", "answer": "answer"},
            splits=("train", "test"),
        ),
    ),
    "xsum": LocalTask(
        name="xsum",
        read=lambda source, config, options: formats.xsum(source),
        format=format_xsum,
        splits=("train", "validation", "test"),
        metric="rouge",
        source_help=f"the folder holding {formats.XSUM_SPLIT_FILE} and the ID.data extracts",
        catalog=Catalog(
            name=lambda config: "xsum",
            fields=lambda config: {"document": "document", "summary": "summary"},
            splits=("train", "validation", "test"),
        ),
    ),
    "tldr": LocalTask(
        name="tldr",
        read=lambda source, config, options: formats.tldr(source),
        format=format_tldr,
        splits=("train", "validation", "test"),
        metric="rouge",
        source_help="the folder holding the TL;DR train.jsonl, valid.jsonl and test.jsonl",
    ),
    "wmt": LocalTask(
        name="wmt",
        read=lambda source, config, options: formats.wmt(source, *_languages(config)),
        format=format_wmt,
        splits=("train", "validation", "test"),
        metric="bleu",
        source_help=(
            "a folder of parallel files (train.de and train.en, ...) or train.jsonl with translation pairs"
        ),
        config_pattern=r"[a-z]{2,3}-[a-z]{2,3}",
        default_config="de-en",
        catalog=Catalog(
            name=_wmt_catalog_name,
            fields=lambda config: dict(zip(("source", "target"), _languages(config))),
            splits=("train", "validation", "test"),
        ),
    ),
}


def task_names() -> tuple[str, ...]:
    return tuple(_TASKS)


def get_task(name: str) -> Task:
    """The registered task called `name`."""
    if name not in _TASKS:
        raise ConfigError(f"Unknown task {name!r}; accepted tasks are {list(_TASKS)}.")
    return _TASKS[name]
