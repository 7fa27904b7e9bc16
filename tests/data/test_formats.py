"""Readers of downloaded formats: the shipped fixtures read back, and malformed files fail clearly."""

import json
import os
import shutil

import pytest

from jirl.data import formats

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def _read(records):
    return {split: list(rows) for split, rows in records.items()}


def test_gsm8k_official_files():
    splits = _read(formats.gsm8k(os.path.join(FIXTURES, "gsm8k")))
    assert {k: len(v) for k, v in splits.items()} == {"train": 6, "test": 2}
    assert splits["train"][0]["question"].startswith("Mia bakes 24 cookies")
    assert splits["train"][0]["answer"].endswith("#### 12")


def test_xsum_release_extracts_drop_page_furniture():
    splits = _read(formats.xsum(os.path.join(FIXTURES, "xsum")))
    assert {k: len(v) for k, v in splits.items()} == {"train": 3, "validation": 1, "test": 1}
    first = splits["train"][0]
    assert first["summary"] == (
        "A lighthouse on the Isle of Lorn has been switched back on after a three-year restoration."
    )
    assert first["document"].startswith("The lamp, first lit in 1857")
    assert "Share this with" not in first["document"] and "Facebook" not in first["document"]
    assert first["document"].endswith("museum next spring.")


def test_xsum_jsonl_variant(tmp_path):
    rows = [{"document": "Doc one.", "summary": "One.", "id": "1"}]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    assert _read(formats.xsum(str(tmp_path))) == {"train": [{"document": "Doc one.", "summary": "One."}]}


def test_tldr_split_names_valid_means_validation():
    splits = _read(formats.tldr(os.path.join(FIXTURES, "tldr")))
    assert {k: len(v) for k, v in splits.items()} == {"train": 2, "validation": 1, "test": 1}
    assert splits["validation"][0]["subreddit"] == "running"


def test_wmt_parallel_text_and_jsonl(tmp_path):
    splits = _read(formats.wmt(os.path.join(FIXTURES, "wmt"), "de", "en"))
    assert {k: len(v) for k, v in splits.items()} == {"train": 4, "validation": 1, "test": 1}
    assert splits["train"][0] == {"source": "Das Haus ist klein.", "target": "The house is small."}
    reverse = _read(formats.wmt(os.path.join(FIXTURES, "wmt"), "en", "de"))
    assert reverse["train"][0] == {"source": "The house is small.", "target": "Das Haus ist klein."}
    row = {"translation": {"de": "Guten Morgen.", "en": "Good morning."}}
    (tmp_path / "train.jsonl").write_text(json.dumps(row) + "\n")
    assert _read(formats.wmt(str(tmp_path), "de", "en")) == {
        "train": [{"source": "Guten Morgen.", "target": "Good morning."}]
    }


def test_jsonl_dotted_fields_and_single_file():
    path = os.path.join(FIXTURES, "jsonl", "qa.jsonl")
    splits = _read(formats.jsonl(path, {"prompt": "instruction", "response": "meta.answer"}))
    assert list(splits) == ["train"] and len(splits["train"]) == 6
    assert splits["train"][2] == {"prompt": "What is the capital of Italy?", "response": "Rome"}


def test_missing_field_names_file_line_and_field(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"q": "a", "a": "b"}\n\n{"q": "c"}\n')
    with pytest.raises(ValueError, match=r"data.jsonl:3 has no field 'a' \(it has \['q'\]\)"):
        _read(formats.jsonl(str(path), {"prompt": "q", "response": "a"}))


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"q": "a", "a": ', r"data.jsonl:1 is not valid JSON"),
        ('["q", "a"]', r"data.jsonl:1 is a JSON list; each line must be an object"),
        ('{"q": "a", "a": {"x": 1}}', r"data.jsonl:1 field 'a' is a dict; text or a number is accepted"),
    ],
)
def test_malformed_lines(tmp_path, line, message):
    path = tmp_path / "data.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(ValueError, match=message):
        _read(formats.jsonl(str(path), {"prompt": "q", "response": "a"}))


def test_numbers_are_text(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"q": "2+2", "a": 4}\n')
    assert _read(formats.jsonl(str(path), {"prompt": "q", "response": "a"}))["train"] == [
        {"prompt": "2+2", "response": "4"}
    ]


def test_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="no split file in .*train.jsonl"):
        formats.gsm8k(str(tmp_path))
    with pytest.raises(ValueError, match="is not a folder; the gsm8k format expects a folder"):
        formats.gsm8k(str(tmp_path / "missing"))


def test_wmt_unpaired_and_uneven_files(tmp_path):
    (tmp_path / "train.de").write_text("a\nb\n")
    with pytest.raises(ValueError, match=r"split train .* has a \.de or a \.en file, but not both"):
        formats.wmt(str(tmp_path), "de", "en")
    (tmp_path / "train.en").write_text("a\n")
    with pytest.raises(ValueError, match=r"train.de has 2 lines but .*train.en has 1"):
        _read(formats.wmt(str(tmp_path), "de", "en"))


def test_xsum_missing_extract_and_bad_extract(tmp_path):
    source = tmp_path / "xsum"
    shutil.copytree(os.path.join(FIXTURES, "xsum"), source)
    os.remove(source / "30001002.data")
    with pytest.raises(ValueError, match=r"1 of 3 articles .* no ID.data file .*first: 30001002.data"):
        _read(formats.xsum(str(source)))
    (source / "30001002.data").write_text("[XSUM]URL[XSUM]\nhttp://x\n")
    with pytest.raises(ValueError, match=r"30001002.data has no \[XSUM\]INTRODUCTION\[XSUM\] section"):
        _read(formats.xsum(str(source)))
