"""The grain pipeline: tokenization, truncation, packing, sharding, seeds."""

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jirl.data import (
    ByteTokenizer,
    eval_prompts,
    get_task,
    make_batches,
    pop_stats,
    tokenize_example,
    tokenize_seq2seq_example,
    truncate,
)
from jirl.data.answers import extract_answer

tok = ByteTokenizer()
task = get_task("arith")
KEYS = {
    "inputs": np.int32,
    "targets": np.int32,
    "loss_mask": np.float32,
    "segment_ids": np.int32,
    "positions": np.int32,
    "truncated": np.float32,
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("tfds"))
    task.prepare(path, "tiny")
    return path


def _batches(data_dir, n=None, **kwargs):
    args = dict(data_dir=data_dir, tokenizer=tok, seq_len=256, batch_size=4, seed=0, task_config="tiny")
    args.update(kwargs)
    it = make_batches(task, args.pop("split", "train"), **args)
    return list(itertools.islice(it, n))


def _examples(data_dir, split="train"):
    """Tokenized examples of `split`, keyed by their inputs."""
    source = task.source(split, data_dir, "tiny")
    out = {}
    for i in range(len(source)):
        ex = tokenize_example(*task.prompt_response(source[i]), tok)
        out[tuple(ex["inputs"].tolist())] = ex
    return out


def _segments(batch):
    """Every (row, segment) of a batch as a dict of 1-D arrays."""
    for row in range(batch["inputs"].shape[0]):
        seg = batch["segment_ids"][row]
        for s in range(1, seg.max() + 1):
            yield {k: batch[k][row][seg == s] for k in KEYS}


# --- tokenize_example and truncate -------------------------------------------


def test_tokenize_example_layout():
    ex = tokenize_example("Q?\n", "A", tok)
    seq = [1] + tok.encode("Q?\n") + tok.encode("A") + [2]
    np.testing.assert_array_equal(ex["inputs"], seq[:-1])
    np.testing.assert_array_equal(ex["targets"], seq[1:])
    np.testing.assert_array_equal(ex["loss_mask"], [0, 0, 0, 1, 1])
    assert [ex[k].dtype for k in ("inputs", "targets", "loss_mask")] == [np.int32, np.int32, np.float32]


def test_truncate_keeps_prompt_end_and_response_start():
    ex = tokenize_example("abcdefgh", "ABCDEFGH", tok, seq_len=8)
    assert len(ex["inputs"]) == 8 and ex["inputs"][0] == tok.bos_id
    assert tok.decode(ex["inputs"][1:]) == "efgh" + "ABC"
    assert tok.decode(ex["targets"][ex["loss_mask"] == 1]) == "ABCD"
    short = tokenize_example("abcdefgh", "AB", tok, seq_len=6)  # prompt gives way
    assert tok.decode(short["targets"]) == "fgh" + "AB"
    np.testing.assert_array_equal(short["loss_mask"], [0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(short["truncated"], [1, 0, 0, 0, 0, 0])
    whole = tokenize_example("ab", "AB", tok, seq_len=6)  # 2 + 2 + EOS = 5 targets fit
    assert whole["truncated"].sum() == 0


@pytest.mark.parametrize("pack", [True, False])
def test_truncations_are_counted_per_example(data_dir, pack):
    """pop_stats counts the examples in a batch and those cut to fit, then removes the stats rows."""
    source = task.source("train", data_dir, "tiny")
    seq_len = 96
    expected = 0
    for i in range(len(source)):
        prompt, response = task.prompt_response(source[i])
        expected += len(tok.encode(prompt)) + len(tok.encode(response)) + 1 > seq_len
    assert 0 < expected < len(source)  # the tiny split has both kinds at this length
    examples = truncated = 0
    for batch in _batches(data_dir, pack=pack, seq_len=seq_len, num_epochs=1, shuffle=False):
        stats = pop_stats(batch)
        assert "truncated" not in batch
        examples += stats["examples"]
        truncated += stats["truncated"]
    assert (examples, truncated) == (len(source), expected)


@given(st.integers(0, 40), st.integers(1, 40), st.integers(1, 50))
def test_truncate_properties(num_prompt, num_response, seq_len):
    prompt, response = list(range(num_prompt)), list(range(100, 100 + num_response))
    p, r = truncate(prompt, response, seq_len)
    assert len(p) + len(r) == min(seq_len, num_prompt + num_response)
    assert p == prompt[len(prompt) - len(p) :] and r == response[: len(r)]
    assert len(r) >= min(num_response, (seq_len + 1) // 2)


# --- make_batches -------------------------------------------------------------


@pytest.mark.parametrize("pack", [True, False])
def test_batch_shapes_and_dtypes(data_dir, pack):
    for batch in _batches(data_dir, 3, pack=pack, seq_len=200, batch_size=3):
        assert set(batch) == set(KEYS)
        for k, dtype in KEYS.items():
            assert batch[k].shape == (3, 200) and batch[k].dtype == dtype, k


@pytest.mark.parametrize("pack", [True, False])
def test_rows_unpack_to_examples(data_dir, pack):
    examples = _examples(data_dir)
    batches = _batches(data_dir, pack=pack, num_epochs=1, batch_size=3, seq_len=400)
    seen = 0
    for batch in batches:
        seg = batch["segment_ids"]
        pad = seg == 0
        for k in KEYS:
            assert not batch[k][pad].any(), k  # padding is all zero
        for row in range(seg.shape[0]):
            ids = seg[row][seg[row] > 0]
            # Segments are 1, 2, ... in order, each contiguous, padding at the end.
            assert (np.diff(seg[row][: len(ids)]) >= 0).all() and (seg[row][len(ids) :] == 0).all()
            if len(ids):
                assert ids[0] == 1 and set(np.diff(ids).tolist()) <= {0, 1}
            if not pack:
                assert set(ids.tolist()) <= {1}
        for segment in _segments(batch):
            np.testing.assert_array_equal(segment["positions"], np.arange(len(segment["inputs"])))
            expected = examples[tuple(segment["inputs"].tolist())]
            for k in ("inputs", "targets", "loss_mask"):
                np.testing.assert_array_equal(segment[k], expected[k])
            seen += 1
    assert seen == len(examples)  # one epoch: every example exactly once
    if pack:  # two or three examples fit in 400 tokens
        assert len(batches) * 3 < 0.6 * len(examples)
    else:
        assert len(batches) == 22  # ceil(64 / 3), the last batch padded


def test_loss_mask_covers_the_response(data_dir):
    for batch in _batches(data_dir, 2):
        for segment in _segments(batch):
            mask = segment["loss_mask"] == 1
            response = tok.decode(segment["targets"][mask])
            prompt = tok.decode(segment["targets"][~mask])
            assert segment["targets"][mask][-1] == tok.eos_id
            assert prompt.endswith("?\n") and "####" not in prompt
            assert extract_answer(response) is not None
            # The mask is a single run at the end of the segment.
            assert mask[mask.argmax() :].all()


def test_truncated_batches(data_dir):
    for batch in _batches(data_dir, 2, seq_len=48):
        for segment in _segments(batch):
            assert len(segment["inputs"]) == 48 and segment["inputs"][0] == tok.bos_id
            # At least half the room for the response, unless all of it (to EOS) fits.
            assert segment["loss_mask"].sum() >= 24 or segment["targets"][-1] == tok.eos_id


def test_seeds(data_dir):
    a, b = _batches(data_dir, 3, seed=5), _batches(data_dir, 3, seed=5)
    c = _batches(data_dir, 1, seed=6)
    for x, y in zip(a, b):
        for k in KEYS:
            np.testing.assert_array_equal(x[k], y[k])
    assert not np.array_equal(a[0]["inputs"], c[0]["inputs"])


def test_each_epoch_is_reshuffled(data_dir):
    rows = [r for b in _batches(data_dir, pack=False, num_epochs=2, batch_size=8) for r in b["inputs"]]
    first = [tuple(r) for r in rows[:64]]
    second = [tuple(r) for r in rows[64:]]
    assert len(second) == 64 and sorted(first) == sorted(second)
    assert first != second


@pytest.mark.parametrize("count,shuffle,pack", [(2, False, False), (4, True, True), (4, False, True)])
def test_process_slices_partition_the_epoch(data_dir, count, shuffle, pack):
    """Simulated processes of a multi-host run: disjoint slices whose union is the whole epoch."""

    def questions(index):
        batches = _batches(
            data_dir, pack=pack, shuffle=shuffle, num_epochs=1, process_index=index, process_count=count
        )
        return [tok.decode(s["inputs"]) for b in batches for s in _segments(b)]

    slices = [questions(i) for i in range(count)]
    assert [len(s) for s in slices] == [64 // count] * count
    for a, b in itertools.combinations(slices, 2):
        assert not set(a) & set(b)
    everything = {tok.decode(k) for k in _examples(data_dir)}
    assert set().union(*slices) == everything


@pytest.mark.parametrize("prefetch", [0, 3])
def test_iterator_state_resumes(data_dir, prefetch):
    """The state after 5 batches resumes at batch 6, also with batches prepared ahead in a thread."""
    args = dict(data_dir=data_dir, tokenizer=tok, seq_len=256, batch_size=4, seed=1, task_config="tiny")
    it = make_batches(task, "train", prefetch=prefetch, **args)
    for _ in range(5):
        next(it)
    state = it.get_state()
    expected = [next(it) for _ in range(3)]
    resumed = make_batches(task, "train", prefetch=prefetch, **args)
    resumed.set_state(state)
    for want in expected:
        got = next(resumed)
        for k in KEYS:
            np.testing.assert_array_equal(got[k], want[k])


def test_bad_arguments(data_dir):
    with pytest.raises(ValueError, match="process_index"):
        _batches(data_dir, 1, process_index=2, process_count=2)
    with pytest.raises(ValueError, match="seq_len"):
        _batches(data_dir, 1, seq_len=0)
    with pytest.raises(ValueError, match="'dev'"):
        _batches(data_dir, 1, split="dev")
    with pytest.raises(ValueError, match=r"process 70 of 100 has no examples; .* 64 examples"):
        _batches(data_dir, 1, process_index=70, process_count=100)


# --- eval_prompts ---------------------------------------------------------------


def test_eval_prompts(data_dir):
    prompts = eval_prompts(task, "test", data_dir=data_dir, tokenizer=tok, task_config="tiny")
    assert len(prompts) == 16
    assert prompts == eval_prompts(task, "test", data_dir=data_dir, tokenizer=tok, task_config="tiny")
    source = task.source("test", data_dir, "tiny")
    for i, (ids, reference) in enumerate(prompts):
        assert ids[0] == tok.bos_id
        assert tok.decode(ids) == source[i]["question"].decode() + "\n"
        assert reference == extract_answer(source[i]["answer"].decode())
    limited = eval_prompts(task, "test", data_dir=data_dir, tokenizer=tok, limit=5, task_config="tiny")
    assert limited == prompts[:5]


def test_worker_processes(data_dir):
    """Grain worker processes: deterministic, and one epoch is every example once."""
    examples = _examples(data_dir)
    kwargs = dict(
        data_dir=data_dir,
        tokenizer=tok,
        seq_len=400,
        batch_size=4,
        seed=3,
        num_epochs=1,
        worker_count=2,
        task_config="tiny",
    )
    first = make_batches(task, "train", **kwargs)
    batches = list(first)
    again = make_batches(task, "train", **kwargs)
    for want in batches[:2]:
        got = next(again)
        for k in KEYS:
            np.testing.assert_array_equal(got[k], want[k])
    first.close()
    again.close()
    segments = [s for b in batches for s in _segments(b)]
    assert sorted(tuple(s["inputs"].tolist()) for s in segments) == sorted(examples)


# --- encoder-decoder batches ---------------------------------------------------


def test_seq2seq_example_layout():
    ex = tokenize_seq2seq_example("ab", "xyz", tok, start_id=0)
    enc, x, y, z = tok.encode("ab"), *tok.encode("xyz")
    assert ex["encoder_inputs"].tolist() == enc + [tok.eos_id]
    assert ex["inputs"].tolist() == [0, x, y, z]
    assert ex["targets"].tolist() == [x, y, z, tok.eos_id]
    assert ex["loss_mask"].tolist() == [1.0] * 4
    cut = tokenize_seq2seq_example("abcdef", "xyz", tok, start_id=0, seq_len=3)
    assert cut["encoder_inputs"].tolist() == tok.encode("abc")  # each side keeps its start
    assert cut["targets"].tolist() == [x, y, z] and cut["truncated"][0] == 1.0


@pytest.mark.parametrize("pack", [True, False])
def test_seq2seq_rows_pair_each_encoder_segment_with_its_decoder_segment(data_dir, pack):
    """Packed or padded, segment s of the encoder side holds the prompt whose response is segment s
    of the decoder side, with positions restarting at 0 on both sides."""
    source = task.source("train", data_dir, "tiny")
    pairs = {}
    for i in range(len(source)):
        ex = tokenize_seq2seq_example(*task.prompt_response(source[i]), tok, start_id=0)
        pairs[tuple(ex["encoder_inputs"].tolist())] = tuple(ex["targets"].tolist())
    seen = 0
    for batch in _batches(data_dir, n=4, pack=pack, decoder_start_id=0, seq_len=192):
        assert batch["encoder_inputs"].shape == batch["inputs"].shape == (4, 192)
        for row in range(4):
            enc_seg, dec_seg = batch["encoder_segment_ids"][row], batch["segment_ids"][row]
            assert set(np.unique(enc_seg)) - {0} == set(np.unique(dec_seg)) - {0}
            for s in set(np.unique(dec_seg)) - {0}:
                prompt = tuple(batch["encoder_inputs"][row][enc_seg == s].tolist())
                assert pairs[prompt] == tuple(batch["targets"][row][dec_seg == s].tolist())
                assert batch["encoder_positions"][row][enc_seg == s].tolist() == list(range(len(prompt)))
                assert batch["inputs"][row][dec_seg == s][0] == 0  # the decoder start token
                seen += 1
    assert seen >= 16 if pack else seen == 16


def test_eval_prompts_for_an_encoder_decoder(data_dir):
    prompts = eval_prompts(
        task, "test", data_dir=data_dir, tokenizer=tok, task_config="tiny", encoder_decoder=True
    )
    source = task.source("test", data_dir, "tiny")
    ids, _ = prompts[0]
    assert ids == tok.encode(source[0]["question"].decode() + "\n") + [tok.eos_id]
