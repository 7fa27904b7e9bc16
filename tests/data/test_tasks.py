"""Local tasks: each shipped fixture prepares into ArrayRecord and reads back formatted; bad sources fail."""

import json
import os

import numpy as np
import pytest

from jirl import data
from jirl.data import tasks

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("local_tasks"))
    for name, config, source, fields in [
        ("gsm8k", "default", "gsm8k", {}),
        ("xsum", "default", "xsum", {}),
        ("tldr", "default", "tldr", {}),
        ("wmt", "de-en", "wmt", {}),
        ("jsonl", "qa", "jsonl/qa.jsonl", dict(prompt_field="instruction", response_field="meta.answer")),
    ]:
        data.get_task(name).prepare(path, config, os.path.join(FIXTURES, source), **fields)
    return path


def _records(task, split, data_dir, config="default"):
    source = task.source(split, data_dir, config)
    return [source[i] for i in range(len(source))]


@pytest.mark.parametrize(
    "name, config, sizes",
    [
        ("gsm8k", "default", {"train": 6, "test": 2}),
        ("xsum", "default", {"train": 3, "validation": 1, "test": 1}),
        ("tldr", "default", {"train": 2, "validation": 1, "test": 1}),
        ("wmt", "de-en", {"train": 4, "validation": 1, "test": 1}),
        ("jsonl", "qa", {"train": 5, "validation": 1}),  # one of six held out for validation
    ],
)
def test_prepared_split_sizes(data_dir, name, config, sizes):
    task = data.get_task(name)
    assert {split: len(_records(task, split, data_dir, config)) for split in sizes} == sizes


def test_gsm8k_prompt_response_reference(data_dir):
    task = data.get_task("gsm8k")
    examples = {
        task.prompt_response(r)[0]: (task.prompt_response(r)[1], task.reference(r))
        for r in _records(task, "test", data_dir)
    }
    question = (
        "Ava has 5 bags with 7 marbles each. She gives 10 marbles to Ben. How many marbles does Ava have"
    )
    response, reference = examples[question + " now?\n"]
    assert response.endswith("#### 25") and reference == "25"
    assert task.metric == "answer_accuracy"


def test_summarisation_and_translation_formats(data_dir):
    xsum = data.get_task("xsum")
    (record,) = _records(xsum, "validation", data_dir)
    prompt, response = xsum.prompt_response(record)
    assert prompt.startswith("Summarize the article in one sentence.\n\nResidents bought shares")
    assert prompt.endswith("\n\nSummary:") and response.startswith(" A Welsh village")
    assert xsum.reference(record) == response.strip()
    tldr = data.get_task("tldr")
    (record,) = _records(tldr, "test", data_dir)
    prompt, response = tldr.prompt_response(record)
    assert prompt.startswith(
        "SUBREDDIT: r/cooking\nTITLE: Why does my bread come out dense?\nPOST: I've tried"
    )
    assert (
        prompt.endswith("TL;DR:")
        and response == " homemade bread keeps coming out dense, maybe my cold kitchen is the problem?"
    )
    wmt = data.get_task("wmt")
    (record,) = _records(wmt, "test", data_dir, "de-en")
    assert wmt.prompt_response(record) == (
        "Translate de to en:\nSie liest ein neues Buch.\n",
        "She is reading a new book.",
    )
    assert wmt.reference(record) == "She is reading a new book."


def test_jsonl_holdout_is_disjoint_and_complete(data_dir):
    task = data.get_task("jsonl")
    train = {task.prompt_response(r) for r in _records(task, "train", data_dir, "qa")}
    validation = {task.prompt_response(r) for r in _records(task, "validation", data_dir, "qa")}
    assert not train & validation
    assert train | validation == {
        (q + "\n", a)
        for q, a in [
            ("What colour is a ripe banana?", "yellow"),
            ("How many legs does a spider have?", "eight"),
            ("What is the capital of Italy?", "Rome"),
            ("What gas do plants take in?", "carbon dioxide"),
            ("How many days are in a leap year?", "366"),
            ("What is frozen water called?", "ice"),
        ]
    }


def test_batches_of_a_local_task(data_dir):
    tok = data.ByteTokenizer()
    batches = data.make_batches(
        data.get_task("wmt"),
        "train",
        data_dir=data_dir,
        tokenizer=tok,
        seq_len=128,
        batch_size=2,
        seed=0,
        num_epochs=1,
        task_config="de-en",
    )
    responses = set()
    for batch in batches:
        stats = data.pop_stats(batch)
        for row in range(2):
            for seg in range(1, batch["segment_ids"][row].max() + 1):
                where = batch["segment_ids"][row] == seg
                responses.add(tok.decode(batch["targets"][row][where & (batch["loss_mask"][row] > 0)]))
        assert stats["truncated"] == 0
    assert responses == {
        "The house is small.",
        "We are going to Berlin tomorrow.",
        "The dog is sleeping in the garden.",
        "I do not drink coffee.",
    }


def test_sentencepiece_trained_on_task_text(data_dir):
    task = data.get_task("gsm8k")
    cfg = {"kind": "sentencepiece", "vocab_size": 330}
    tokenizer = data.make_tokenizer(cfg, task, data_dir, "default")
    path = data.vocabulary.sentencepiece_path(task, data_dir, "default", 330)
    assert os.path.exists(path) and tokenizer.vocab_size == 330
    stamp = os.path.getmtime(path)
    assert data.make_tokenizer(cfg, task, data_dir, "default").vocab_size == 330  # reused, not retrained
    assert os.path.getmtime(path) == stamp
    prompt, response = task.prompt_response(_records(task, "train", data_dir)[0])
    ids = tokenizer.encode(prompt) + tokenizer.encode(response) + [tokenizer.eos_id]
    assert tokenizer.decode(ids) == prompt + response
    assert len(ids) < len((prompt + response).encode())  # pieces, not bytes
    example = data.tokenize_example(prompt, response, tokenizer)
    assert example["inputs"][0] == tokenizer.bos_id and example["targets"][-1] == tokenizer.eos_id


def test_not_prepared_says_how(tmp_path):
    with pytest.raises(
        ValueError,
        match=r"task 'tldr' \(config 'default'\) is not prepared .*jirl prepare --task tldr --source PATH",
    ):
        data.get_task("tldr").source("train", str(tmp_path))
    with pytest.raises(ValueError, match=r"is not prepared .*or with --catalog"):
        data.get_task("gsm8k").prepare(str(tmp_path))


def test_missing_split_and_bad_config(data_dir):
    with pytest.raises(
        ValueError, match=r"task 'jsonl' \(config 'qa'\) has no 'test' split .*\['train', 'validation'\]"
    ):
        data.get_task("jsonl").source("test", data_dir, "qa")
    with pytest.raises(ValueError, match=r"task.config='german' is not accepted for task 'wmt'"):
        data.get_task("wmt").source("train", data_dir, "german")
    with pytest.raises(ValueError, match=r"task 'arith' is generated by jirl; it takes no --source"):
        data.get_task("arith").prepare(data_dir, "tiny", os.path.join(FIXTURES, "gsm8k"))


def test_bad_source_leaves_nothing_prepared(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    (source / "train.jsonl").write_text(json.dumps({"question": "1+1?", "answer": "2"}) + "\n")
    (source / "test.jsonl").write_text("")
    task = data.get_task("gsm8k")
    with pytest.raises(ValueError, match="has no '#### N' line"):
        task.prepare(str(tmp_path / "data"), source=str(source))
    (source / "train.jsonl").write_text(json.dumps({"question": "1+1?", "answer": "1+1=2\n#### 2"}) + "\n")
    with pytest.raises(ValueError, match="the test split of task 'gsm8k' has no examples"):
        task.prepare(str(tmp_path / "data"), source=str(source))
    with pytest.raises(ValueError, match="is not prepared"):
        task.source("train", str(tmp_path / "data"))


def test_catalog_records_are_mapped_to_our_fields(tmp_path, monkeypatch):
    """With --catalog the TFDS catalog dataset is read (here a stand-in: tests never download)."""
    calls = []

    def fake_data_source(name, split, data_dir, builder_kwargs):
        calls.append((name, split, builder_kwargs["file_format"]))
        return [{"de": np.array(f"Satz {split}.".encode()), "en": np.array(f"Sentence {split}.".encode())}]

    monkeypatch.setattr(tasks.tfds, "data_source", fake_data_source)
    task = data.get_task("wmt")
    task.prepare(str(tmp_path), "de-en", catalog=True)
    assert calls == [("wmt14_translate/de-en", s, "array_record") for s in ("train", "validation", "test")]
    (record,) = _records(task, "test", str(tmp_path), "de-en")
    assert task.prompt_response(record) == ("Translate de to en:\nSatz test.\n", "Sentence test.")
