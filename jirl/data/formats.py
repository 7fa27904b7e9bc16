"""Readers of the files users download, in each dataset's own published format.

Each reader takes the `--source` a user gives `jirl prepare` and returns, per split, an iterable of
raw records (dicts of str). A malformed file is a ConfigError naming the file, the line and what was
expected, never a traceback from deep inside a JSON parser.

Formats:
- jsonl: one JSON object per line; any field names (dotted paths reach nested fields), or chat rows
  `{"messages": [{"role": ..., "content": ...}, ...]}` (`jirl.data.chat`).
- gsm8k: the official `train.jsonl` / `test.jsonl` (`question`, `answer` ending in `#### N`).
- xsum: the release's split file `XSum-TRAINING-DEV-TEST-SPLIT-90-5-5.json` and one `ID.data`
  extract per article (`[XSUM]URL[XSUM] ... [XSUM]INTRODUCTION[XSUM] ... [XSUM]RESTBODY[XSUM] ...`),
  or JSON lines with `document` / `summary`.
- tldr: OpenAI's filtered Reddit TL;DR `train.jsonl` / `valid.jsonl` / `test.jsonl`
  (`subreddit`, `title`, `post`, `summary`).
- wmt: parallel text (`train.de` + `train.en`, one sentence per line, the same line count), or JSON
  lines with `{"translation": {"de": ..., "en": ...}}`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from jirl.data import chat
from jirl.errors import ConfigError

# Names a split's file may have, by split.
SPLIT_FILE_NAMES = {
    "train": ("train",),
    "validation": ("validation", "valid", "dev", "val"),
    "test": ("test",),
}
XSUM_SPLIT_FILE = "XSum-TRAINING-DEV-TEST-SPLIT-90-5-5.json"
# Page furniture that the XSum extracts carry between paragraphs (whole lines, removed).
XSUM_BOILERPLATE = frozenset(
    [
        "Share this with",
        "Email",
        "Facebook",
        "Messenger",
        "Twitter",
        "Pinterest",
        "WhatsApp",
        "Linkedin",
        "LinkedIn",
        "Copy this link",
        "These are external links and will open in a new window",
    ]
)

Records = dict[str, Iterable[dict[str, str]]]


def read_jsonl(path: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSON-lines file."""
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ConfigError(
                    f"{path}:{number} is not valid JSON ({e.msg}); each line must be one object."
                ) from None
            if not isinstance(row, dict):
                raise ConfigError(
                    f"{path}:{number} is a JSON {type(row).__name__}; each line must be an object."
                )
            yield number, row


def field(row: Mapping[str, Any], name: str, where: str, fmt: str) -> str:
    """The text at `name` (a dotted path for nested objects); a clear error when it is absent."""
    value: Any = row
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            hint = (
                " (name the fields with --prompt_field / --response_field; chat rows have 'messages')"
                if fmt == "jsonl"
                else ""
            )
            raise ConfigError(
                f"{where} has no field '{name}' (it has {sorted(row)}); the {fmt} format needs it{hint}."
            )
        value = value[part]
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ConfigError(
            f"{where} field '{name}' is a {type(value).__name__}; text or a number is accepted."
        )
    return str(value)


def jsonl_records(path: str, fields: Mapping[str, str], fmt: str) -> Iterator[dict[str, str]]:
    """Records {our name: text} from a JSON-lines file, `fields` mapping our names to the file's."""
    for number, row in read_jsonl(path):
        yield {ours: field(row, theirs, f"{path}:{number}", fmt) for ours, theirs in fields.items()}


def jsonl_or_chat_records(path: str, fields: Mapping[str, str]) -> Iterator[dict[str, str]]:
    """Like `jsonl_records`; a row with a `messages` list and no prompt field is a chat row:
    {messages: the conversation as JSON, reference: the reference field or the last assistant turn}."""
    for number, row in read_jsonl(path):
        where = f"{path}:{number}"
        if "messages" in row and fields["prompt"].split(".")[0] not in row:
            messages = chat.check_messages(row["messages"], where)
            reference = messages[chat.last_assistant(messages)]["content"]
            if "reference" in fields:
                reference = field(row, fields["reference"], where, "jsonl")
            yield {"messages": json.dumps(messages, ensure_ascii=False), "reference": reference}
        else:
            yield {ours: field(row, theirs, where, "jsonl") for ours, theirs in fields.items()}


def split_files(source: str, suffix: str, splits: Sequence[str]) -> dict[str, str]:
    """{split: path} of the files named like `train.jsonl`, `valid.jsonl`, ... in folder `source`."""
    found = {}
    for split in splits:
        for name in SPLIT_FILE_NAMES.get(split, (split,)):
            path = os.path.join(source, name + suffix)
            if os.path.isfile(path):
                found[split] = path
                break
    return found


def _require_folder(source: str, fmt: str, expected: str) -> None:
    if not os.path.isdir(source):
        raise ConfigError(
            f"--source '{source}' is not a folder; the {fmt} format expects a folder with {expected}."
        )


def _jsonl_splits(source: str, fields: Mapping[str, str], fmt: str, splits: Sequence[str]) -> Records:
    _require_folder(source, fmt, "split files such as train.jsonl and test.jsonl")
    files = split_files(source, ".jsonl", splits)
    if not files:
        names = [n + ".jsonl" for s in splits for n in SPLIT_FILE_NAMES.get(s, (s,))]
        raise ConfigError(f"no split file in '{source}'; the {fmt} format expects some of {names}.")
    if fmt == "jsonl":
        return {split: _Lazy(jsonl_or_chat_records, path, fields) for split, path in files.items()}
    return {split: _Lazy(jsonl_records, path, fields, fmt) for split, path in files.items()}


class _Lazy:
    """An iterable that calls `fn(*args)` afresh on each iteration (so a reader can be read twice)."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __iter__(self):
        return iter(self.fn(*self.args))


def jsonl(source: str, fields: Mapping[str, str]) -> Records:
    """Any JSON-lines data: a folder of split files, or one file (then it is the train split)."""
    if os.path.isfile(source):
        return {"train": _Lazy(jsonl_or_chat_records, source, fields)}
    return _jsonl_splits(source, fields, "jsonl", tuple(SPLIT_FILE_NAMES))


def gsm8k(source: str) -> Records:
    """The official GSM8K files: train.jsonl and test.jsonl with question / answer."""
    return _jsonl_splits(source, {"question": "question", "answer": "answer"}, "gsm8k", ("train", "test"))


def tldr(source: str) -> Records:
    """OpenAI's filtered Reddit TL;DR: train/valid/test.jsonl with subreddit, title, post, summary."""
    names = ("subreddit", "title", "post", "summary")
    return _jsonl_splits(source, {n: n for n in names}, "tldr", tuple(SPLIT_FILE_NAMES))


def xsum(source: str) -> Records:
    """XSum: the release's split file plus ID.data extracts, or document/summary JSON lines."""
    _require_folder(source, "xsum", f"{XSUM_SPLIT_FILE} and ID.data files, or split .jsonl files")
    split_file = os.path.join(source, XSUM_SPLIT_FILE)
    if not os.path.isfile(split_file):
        fields = {"document": "document", "summary": "summary"}
        return _jsonl_splits(source, fields, "xsum", tuple(SPLIT_FILE_NAMES))
    with open(split_file, encoding="utf-8") as f:
        try:
            ids = json.load(f)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{split_file} is not valid JSON ({e.msg}).") from None
    folder = source
    if os.path.isdir(os.path.join(source, "xsum-extracts-from-downloads")):
        folder = os.path.join(source, "xsum-extracts-from-downloads")
    return {split: _Lazy(_xsum_extracts, folder, ids[key]) for split, key in _xsum_keys(ids, split_file)}


def _xsum_keys(ids: Mapping[str, Any], split_file: str) -> list[tuple[str, str]]:
    keys = [
        (split, key) for split, key in (("train", "train"), ("validation", "validation"), ("test", "test"))
    ]
    missing = [key for _, key in keys if key not in ids]
    if missing:
        raise ConfigError(f"{split_file} has no {missing} list; it needs train, validation and test.")
    return keys


def _xsum_extracts(folder: str, ids: Sequence[str]) -> Iterator[dict[str, str]]:
    missing = [i for i in ids if not os.path.isfile(os.path.join(folder, f"{i}.data"))]
    if missing:
        raise ConfigError(
            f"{len(missing)} of {len(ids)} articles listed in the split file have no ID.data file in "
            f"'{folder}' (first: {missing[0]}.data)."
        )
    for article_id in ids:
        yield parse_xsum_extract(os.path.join(folder, f"{article_id}.data"))


def parse_xsum_extract(path: str) -> dict[str, str]:
    """{document, summary} of one XSum extract: the introduction is the summary, the rest the document."""
    with open(path, encoding="utf-8") as f:
        lines = [line.strip() for line in f]
    text = "\n".join(line for line in lines if line and line not in XSUM_BOILERPLATE)
    sections = {}
    parts = text.split("[XSUM]")
    for name, body in zip(parts[1::2], parts[2::2]):
        sections[name.strip()] = body.strip()
    missing = [s for s in ("INTRODUCTION", "RESTBODY") if s not in sections]
    if missing:
        raise ConfigError(f"{path} has no [XSUM]{missing[0]}[XSUM] section; it is not an XSum extract.")
    return {"document": sections["RESTBODY"], "summary": sections["INTRODUCTION"]}


def wmt(source: str, source_lang: str, target_lang: str) -> Records:
    """Translation pairs: SPLIT.SRC + SPLIT.TGT parallel text, or SPLIT.jsonl with a translation object."""
    _require_folder(source, "wmt", f"train.{source_lang} and train.{target_lang}, or train.jsonl")
    splits = tuple(SPLIT_FILE_NAMES)
    sources = split_files(source, f".{source_lang}", splits)
    targets = split_files(source, f".{target_lang}", splits)
    if sources or targets:
        unpaired = sorted(set(sources) ^ set(targets))
        if unpaired:
            raise ConfigError(
                f"split {unpaired[0]} in '{source}' has a .{source_lang} or a .{target_lang} file, "
                "but not both."
            )
        return {s: _Lazy(_parallel_lines, sources[s], targets[s]) for s in sources}
    fields = {"source": f"translation.{source_lang}", "target": f"translation.{target_lang}"}
    return _jsonl_splits(source, fields, "wmt", splits)


def _parallel_lines(source_path: str, target_path: str) -> Iterator[dict[str, str]]:
    with open(source_path, encoding="utf-8") as src, open(target_path, encoding="utf-8") as tgt:
        src_lines, tgt_lines = src.read().splitlines(), tgt.read().splitlines()
    if len(src_lines) != len(tgt_lines):
        raise ConfigError(
            f"{source_path} has {len(src_lines)} lines but {target_path} has {len(tgt_lines)}; "
            "parallel files must have one sentence per line, line for line."
        )
    for number, (s, t) in enumerate(zip(src_lines, tgt_lines), start=1):
        if not s.strip() or not t.strip():
            raise ConfigError(
                f"{source_path}:{number} or {target_path}:{number} is blank; every pair needs text."
            )
        yield {"source": s.strip(), "target": t.strip()}
