"""The jirl_arith TFDS builder and the `arith` task, built into tmp dirs."""

import functools
import hashlib
import json
import os

import pytest
import tensorflow_datasets as tfds

from jirl.data import arith, arith_builder, get_task
from jirl.data.answers import extract_answer
from jirl.data.pipeline import tokenize_example
from jirl.data.tokenizer import ByteTokenizer

SIZES = {"train": 64, "validation": 16, "test": 16}
VERSION = str(arith_builder.JirlArith.VERSION)
CONFIGS = {c.name: c for c in arith_builder.JirlArith.BUILDER_CONFIGS}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("tfds"))
    get_task("arith").prepare(path, "tiny")
    return path


def _read(data_dir, split, config="tiny"):
    source = tfds.data_source(f"jirl_arith/{config}", split=split, data_dir=data_dir, download=False)
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
    files = sorted(os.listdir(os.path.join(data_dir, f"jirl_arith/tiny/{VERSION}")))
    assert any(f.startswith("jirl_arith-train.array_record") for f in files)
    stamp = os.path.getmtime(os.path.join(data_dir, f"jirl_arith/tiny/{VERSION}", files[0]))
    get_task("arith").prepare(data_dir, "tiny")
    assert stamp == os.path.getmtime(os.path.join(data_dir, f"jirl_arith/tiny/{VERSION}", files[0]))


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
    with pytest.raises(
        ValueError, match=r"'huge'.*\['default', 'tiny', 'shifted_1000', 'shifted_5000', 'shifted_tiny'\]"
    ):
        task.source("train", data_dir, "huge")
    with pytest.raises(ValueError, match=r"'gsm9k'.*\['arith', 'jsonl', 'gsm8k'"):
        get_task("gsm9k")
    with pytest.raises(ValueError, match="not prepared"):
        task.source("train", str(tmp_path), "tiny")


# --- Every config writes what its version pins. --------------------------------

# sha256 of each split's (question, rationale) pairs as JSON. default and tiny are as version 1.0.0
# wrote them; the shifted configs as 1.2.0 writes them (1.1.0 wrote 3-4 operations).
PINNED_VERSION = "1.2.0"
PINNED = {
    "default": {
        "train": "f8102accce4d1211aa7e191135c9b39a172638f6737b20815b5a663069177fcb",
        "validation": "8471395750ca795e88d515d911bdeffef4f81fa1f2cd0e456d7c4ade064f2c43",
        "test": "240f008ea55aaf1bbb11d35f4f4b79db365d62774f75d034f94328d2ef6677bb",
    },
    "tiny": {
        "train": "10ca85753cba5866176f3c812698dc99dc91abe95bbc1d6ffb56336b87dbb688",
        "validation": "d5a6e2e8b8b37c086c2c310330207b115a16091009b565e9987d47d104054250",
        "test": "17c23fb177baab02d63fb3026d854d9f252c03e4880f53c35591ae116081d82f",
    },
    "shifted_1000": {
        "train": "4462d9ddd6d08c5bed87ab2ea3e5d8592ab5388d872bc747a4156d0496545296",
        "validation": "2cbc491195ecfe00ce440d3e80a5e213fd771e02fce17ab3b0806554946bdbfd",
        "test": "247ea2e6732e5e65b01aecce12c7ea9b57b1433902e609df577e30f926b88b31",
    },
    "shifted_5000": {
        "train": "5a0025911bef5cadaa3408e9a2543497489029ce5b8b7b85fe6f171a7efe6276",
        "validation": "2cbc491195ecfe00ce440d3e80a5e213fd771e02fce17ab3b0806554946bdbfd",
        "test": "247ea2e6732e5e65b01aecce12c7ea9b57b1433902e609df577e30f926b88b31",
    },
    "shifted_tiny": {
        "train": "ee69fb9f18852504819eafdfd6a5784b14c40f5b173e26d55146a3de6fba0f41",
        "validation": "86b4e51868a00e9fb5ad7612b5ccd538d025b05b35f07bc2b11cae785663396f",
        "test": "100b30b843b82a9aecc313bf3ff2b65e147f49677f13b44e6ffd730bc0125d49",
    },
}


@functools.cache
def _splits(name):
    config = CONFIGS[name]
    return arith_builder.generate_splits(config.split_sizes, config.distribution, config.reserved)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_config_writes_what_its_version_pins(name):
    """A change to the generator must come with a new VERSION: prepared data is found by version, so
    an unbumped change leaves every existing checkout silently training on the old data."""
    assert set(PINNED) == set(CONFIGS)
    hashes = {s: hashlib.sha256(json.dumps(ex).encode()).hexdigest() for s, ex in _splits(name).items()}
    version = str(arith_builder.JirlArith.VERSION)
    assert hashes == PINNED[name] or version != PINNED_VERSION, (
        f"config {name} generates other data than version {PINNED_VERSION} did: bump JirlArith.VERSION "
        "(with a release note), then pin the new hashes here."
    )
    assert version == PINNED_VERSION, f"pin the hashes of version {version} here (PINNED, PINNED_VERSION)."


def test_default_data_opens_as_version_1_0_0_wrote_it():
    assert CONFIGS["default"].distribution is arith.DEFAULT and not CONFIGS["default"].reserved
    assert _splits("default")["train"][:2] == [
        (
            "Zoe has 4 apples. She buys 7 more. She gives 2 to Omar. She sells 6. "
            "How many apples does Zoe have in the end?",
            "Minus: 7 - 2 = 5\nSum: 5 + 4 = 9\n9 - 6 = 3\n#### 3",
        ),
        (
            "A shop has 9 toys in stock. It gets 8 more. How many toys are in the shop now?",
            "9 + 8 = 17\n#### 17",
        ),
    ]


# --- The shifted configs. ------------------------------------------------------


def test_shifted_configs_share_held_out_and_train_avoids_it():
    small, large, tiny = _splits("shifted_1000"), _splits("shifted_5000"), _splits("shifted_tiny")
    assert {s: len(e) for s, e in small.items()} == {"train": 1000, "validation": 500, "test": 500}
    assert {s: len(e) for s, e in large.items()} == {"train": 5000, "validation": 500, "test": 500}
    assert small["validation"] == large["validation"] and small["test"] == large["test"]
    assert small["train"] == large["train"][:1000]
    assert tiny["validation"] == large["validation"][:16] and tiny["test"] == large["test"][:16]
    assert tiny["train"] == large["train"][:64]
    held_out = [q for s in ("validation", "test") for q, _ in large[s]]
    train = [q for q, _ in large["train"]]
    assert len(set(held_out)) == 1000 and len(set(train)) == 5000  # no repeats within or across
    assert not set(held_out) & set(train)
    default_held_out = {q for s in ("validation", "test") for q, _ in _splits("default")[s]}
    assert not default_held_out & set(held_out)  # different distributions, different questions


def test_shifted_examples_check_and_fit_256_byte_tokens():
    tokenizer, ops = ByteTokenizer(), []
    for examples in _splits("shifted_1000").values():
        for question, rationale in examples:
            answer = int(extract_answer(rationale))
            problem = arith.Problem(question=question, answer=answer, terms=(), noun="")
            assert arith.check_rationale(problem, rationale), rationale
            example = tokenize_example(question + "\n", rationale, tokenizer, seq_len=256)
            assert example["truncated"][0] == 0 and len(example["inputs"]) + 1 <= 256
            # Sampling: [BOS] question "\n" plus the eval's new tokens fit the model's 256 positions.
            assert len(question) <= arith.SHIFTED.max_question_chars
            assert len(rationale) + 1 <= 256 - 2 - arith.SHIFTED.max_question_chars
            ops.append(rationale.count("\n"))
    assert set(ops) == {2, 3}


@pytest.fixture(scope="module")
def shifted_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("tfds_shifted"))
    get_task("arith").prepare(path, "shifted_tiny")
    return path


def test_shifted_tiny_builds(shifted_dir):
    for split, size in SIZES.items():
        records = _read(shifted_dir, split, "shifted_tiny")
        stored = [(r["question"].decode(), r["answer"].decode()) for r in records]
        assert sorted(stored) == sorted(_splits("shifted_tiny")[split]) and len(stored) == size
    assert os.path.isdir(os.path.join(shifted_dir, f"jirl_arith/shifted_tiny/{VERSION}"))
    source = get_task("arith").source("validation", shifted_dir, "shifted_tiny")
    assert len(source) == 16
