"""The jirl_arith TFDS builder and the `arith` task, built into tmp dirs."""

import os

import pytest
import tensorflow_datasets as tfds

from jirl.data import arith_builder, get_task
from jirl.data.answers import extract_answer

SIZES = {"train": 64, "validation": 16, "test": 16}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("tfds"))
    get_task("arith").prepare(path, "tiny")
    return path


def _read(data_dir, split):
    source = tfds.data_source("jirl_arith/tiny", split=split, data_dir=data_dir, download=False)
    return [source[i] for i in range(len(source))]


def test_split_sizes_and_features(data_dir):
    for split, size in SIZES.items():
        records = _read(data_dir, split)
        assert len(records) == size
        assert set(records[0]) == {"question", "answer"}
        for r in records:
            assert r["question"].decode().endswith("?")
            assert extract_answer(r["answer"].decode()) is not None


def test_held_out_questions_not_in_train(data_dir):
    questions = {s: {r["question"] for r in _read(data_dir, s)} for s in SIZES}
    assert all(len(questions[s]) == SIZES[s] for s in SIZES)
    assert not questions["train"] & questions["validation"]
    assert not questions["train"] & questions["test"]
    assert not questions["validation"] & questions["test"]


def test_build_is_deterministic(data_dir):
    for split in SIZES:
        stored = {(r["question"].decode(), r["answer"].decode()) for r in _read(data_dir, split)}
        assert stored == set(arith_builder.generate_split(SIZES, split))


def test_prepare_is_idempotent(data_dir):
    files = sorted(os.listdir(os.path.join(data_dir, "jirl_arith/tiny/1.0.0")))
    assert any(f.startswith("jirl_arith-train.array_record") for f in files)
    stamp = os.path.getmtime(os.path.join(data_dir, "jirl_arith/tiny/1.0.0", files[0]))
    get_task("arith").prepare(data_dir, "tiny")
    assert stamp == os.path.getmtime(os.path.join(data_dir, "jirl_arith/tiny/1.0.0", files[0]))


def test_task_source_and_text(data_dir):
    task = get_task("arith")
    source = task.source("validation", data_dir, "tiny")
    assert len(source) == 16
    prompt, response = task.prompt_response(source[0])
    assert prompt == source[0]["question"].decode() + "\n"
    assert response == source[0]["answer"].decode()
    assert task.reference(source[0]) == response.split("#### ")[-1]


def test_task_errors(data_dir, tmp_path):
    task = get_task("arith")
    with pytest.raises(ValueError, match=r"'nope'.*\['train', 'validation', 'test'\]"):
        task.source("nope", data_dir, "tiny")
    with pytest.raises(ValueError, match=r"'huge'.*\['default', 'tiny'\]"):
        task.source("train", data_dir, "huge")
    with pytest.raises(ValueError, match=r"'gsm9k'.*\['arith', 'jsonl', 'gsm8k'"):
        get_task("gsm9k")
    with pytest.raises(ValueError, match="not prepared"):
        task.source("train", str(tmp_path), "tiny")
