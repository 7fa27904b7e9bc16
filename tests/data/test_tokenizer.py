"""Tokenizers: ids, round trips, specials, training, discovery and errors."""

import json
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jirl.data import ByteTokenizer
from jirl.data.pipeline import tokenize_example
from jirl.data.tokenizer import (
    HFTokenizer,
    SentencePieceTokenizer,
    Tokenizer,
    check_vocab,
    get_tokenizer,
    stop_ids,
    train_sentencepiece,
)

tok = ByteTokenizer()


def test_special_ids_and_vocab():
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.vocab_size) == (0, 1, 2, 259)
    assert tok.encode("A") == [ord("A") + 3]
    assert tok.encode("") == []


@pytest.mark.parametrize("text", ["hello, world\n#### 12", "héllo → 世界 🙂", ""])
def test_round_trip(text):
    ids = tok.encode(text)
    assert all(3 <= i < 259 for i in ids)
    assert len(ids) == len(text.encode("utf-8"))
    assert tok.decode(ids) == text


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",))))
def test_round_trip_any_text(text):
    assert tok.decode(tok.encode(text)) == text


def test_decode_stops_at_eos_and_skips_pad_and_bos():
    ids = [tok.bos_id] + tok.encode("ab") + [tok.pad_id] + tok.encode("c")
    assert tok.decode(ids + [tok.eos_id] + tok.encode("ignored")) == "abc"


def test_decode_accepts_numpy_ids():
    import numpy as np

    assert tok.decode(np.asarray(tok.encode("xyz"), np.int32)) == "xyz"


def test_invalid_utf8_is_replaced():
    assert tok.decode([0xFF + 3, ord("a") + 3]) == "\ufffda"


@pytest.mark.parametrize("bad", [259, -1, 1000])
def test_decode_rejects_out_of_range_ids(bad):
    with pytest.raises(ValueError, match=rf"{bad}.*\[0, 259\)"):
        tok.decode([5, bad])


# --- shared protocol, SentencePiece, Hugging Face tokenizers, get_tokenizer and check_vocab ---


def arith_sentences(n=400, seed=0):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        out.append(f"{a} + {b} = {a + b}" if rng.random() < 0.5 else f"{a} times {b} is {a * b}")
    return out


@pytest.fixture(scope="module")
def sp_path(tmp_path_factory):
    return train_sentencepiece(arith_sentences(), str(tmp_path_factory.mktemp("sp") / "arith"), 300)


@pytest.fixture(scope="module")
def sp(sp_path):
    return SentencePieceTokenizer(sp_path)


def test_train_sentencepiece_writes_the_model_with_fixed_special_ids(sp_path, sp):
    assert sp_path.endswith("arith.model")
    assert (sp.pad_id, sp.bos_id, sp.eos_id, sp.vocab_size) == (0, 1, 2, 300)
    assert sp.sp.unk_id() == 3
    assert [sp.sp.id_to_piece(i) for i in range(4)] == ["<pad>", "<s>", "</s>", "<unk>"]
    assert isinstance(sp, Tokenizer)


@pytest.mark.parametrize("text", ["12 + 30 = 42", "7 times 8 is 56", "  two  spaces\tand\nlines ", ""])
def test_sentencepiece_round_trip_without_specials(sp, text):
    ids = sp.encode(text)
    assert all(4 <= i < sp.vocab_size for i in ids)
    assert sp.decode(ids) == text


def test_sentencepiece_merges_frequent_text(sp):
    # Trained pieces cover the corpus, so it costs fewer ids than its UTF-8 bytes.
    text = "12 + 30 = 42"
    assert len(sp.encode(text)) < len(text.encode("utf-8"))


def test_sentencepiece_byte_fallback_on_unseen_characters(sp):
    text = "🙂 héllo 世界"
    ids = sp.encode(text)
    assert sp.sp.unk_id() not in ids
    pieces = [sp.sp.id_to_piece(i) for i in sp.encode("🙂")]
    assert pieces[-4:] == ["<0xF0>", "<0x9F>", "<0x99>", "<0x82>"]
    assert sp.decode(ids) == text


def test_sentencepiece_decode_stops_at_eos_and_skips_pad_and_bos(sp):
    ids = [sp.bos_id] + sp.encode("1 + 2") + [sp.pad_id] + sp.encode(" = 3")
    assert sp.decode(ids + [sp.eos_id] + sp.encode("ignored")) == "1 + 2 = 3"


@pytest.mark.parametrize("bad", [300, -1])
def test_sentencepiece_decode_rejects_out_of_range_ids(sp, bad):
    with pytest.raises(ValueError, match=rf"{bad}.*\[0, 300\)"):
        sp.decode([5, bad])


def test_sentencepiece_feeds_the_pipeline(sp):
    ex = tokenize_example("3 + 4 =", " 7", sp)
    assert ex["inputs"][0] == sp.bos_id and ex["targets"][-1] == sp.eos_id
    assert sp.decode(ex["targets"][ex["loss_mask"] > 0]) == " 7"


def test_train_sentencepiece_is_deterministic(tmp_path, sp_path):
    again = train_sentencepiece(arith_sentences(), str(tmp_path / "other" / "name"), 300)
    assert open(again, "rb").read() == open(sp_path, "rb").read()
    different = train_sentencepiece(arith_sentences(seed=1), str(tmp_path / "seed1"), 300)
    assert open(different, "rb").read() != open(sp_path, "rb").read()


def test_train_sentencepiece_vocab_too_large(tmp_path):
    with pytest.raises(
        ValueError, match=r"^vocab_size=5000 is too large for this corpus; it allows at most \d+\.$"
    ):
        train_sentencepiece(arith_sentences(50), str(tmp_path / "m"), 5000)
    assert not (tmp_path / "m.model").exists()


def test_train_sentencepiece_vocab_too_small_and_empty_corpus(tmp_path):
    with pytest.raises(
        ValueError, match=r"vocab_size=100 is too small for this corpus; it needs at least \d+"
    ):
        train_sentencepiece(arith_sentences(50), str(tmp_path / "m"), 100)
    with pytest.raises(ValueError, match="the corpus is empty"):
        train_sentencepiece([], str(tmp_path / "m"), 300)


def test_sentencepiece_model_without_pad_uses_eos(tmp_path):
    path = train_sentencepiece(arith_sentences(100), str(tmp_path / "nopad"), 300, pad_id=-1, unk_id=0)
    tok = SentencePieceTokenizer(path)
    assert (tok.pad_id, tok.bos_id, tok.eos_id) == (2, 1, 2)
    # Left padding (pad == EOS) before BOS is skipped; the EOS after the text still stops decoding.
    ids = [tok.pad_id, tok.pad_id, tok.bos_id] + tok.encode("1 + 1 = 2") + [tok.eos_id] + tok.encode("9")
    assert tok.decode(ids) == "1 + 1 = 2"


def test_sentencepiece_model_without_eos_or_bos_is_an_error(tmp_path):
    no_eos = train_sentencepiece(arith_sentences(100), str(tmp_path / "noeos"), 300, eos_id=-1, pad_id=2)
    with pytest.raises(ValueError, match=r"noeos\.model has no EOS id"):
        SentencePieceTokenizer(no_eos)
    neither = train_sentencepiece(
        arith_sentences(100), str(tmp_path / "none"), 300, bos_id=-1, eos_id=-1, pad_id=1, unk_id=0
    )
    with pytest.raises(ValueError, match=r"none\.model has no BOS and no EOS id"):
        SentencePieceTokenizer(neither)
    with pytest.raises(ValueError, match="does not exist"):
        SentencePieceTokenizer(tmp_path / "missing.model")


LINES = [f"{a} plus {b} is {a + b}" for a in range(20) for b in range(20)]


def byte_level_bpe(special_tokens, template=None):
    """A small byte-level BPE trained on LINES, optionally adding specials in its post-processor."""
    from tokenizers import Tokenizer as HF
    from tokenizers import decoders, models, pre_tokenizers, processors, trainers

    tok = HF(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=special_tokens, initial_alphabet=alphabet, show_progress=False
    )
    tok.train_from_iterator(LINES, trainer)
    if template:
        bos, eos = template
        specials = [(bos, tok.token_to_id(bos)), (eos, tok.token_to_id(eos))]
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A {eos}", special_tokens=specials)
    return tok


@pytest.fixture
def hf_dir(tmp_path):
    """A folder with tokenizer.json whose specials are <pad> 0, <s> 1, </s> 2, and no config files."""
    byte_level_bpe(["<pad>", "<s>", "</s>"], template=("<s>", "</s>")).save(str(tmp_path / "tokenizer.json"))
    return tmp_path


def test_hf_fallback_names_and_vocab(hf_dir):
    for path in (hf_dir, hf_dir / "tokenizer.json"):
        tok = HFTokenizer(path)
        assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.vocab_size) == (0, 1, 2, 300)
        assert isinstance(tok, Tokenizer)


def test_hf_encode_adds_no_specials_and_round_trips(hf_dir):
    tok = HFTokenizer(hf_dir)
    text = "3 plus 4 is 7 🙂 héllo"
    with_specials = tok.hf.encode(text).ids
    assert with_specials[0] == tok.bos_id and with_specials[-1] == tok.eos_id
    assert tok.encode(text) == with_specials[1:-1]
    assert tok.decode(tok.encode(text)) == text


def test_hf_decode_stops_at_eos_and_skips_specials(hf_dir):
    tok = HFTokenizer(hf_dir)
    ids = [tok.pad_id, tok.bos_id] + tok.encode("1 plus 2") + [tok.pad_id] + tok.encode(" is 3")
    assert tok.decode(ids + [tok.eos_id] + tok.encode("junk")) == "1 plus 2 is 3"
    with pytest.raises(ValueError, match=r"300.*\[0, 300\)"):
        tok.decode([tok.vocab_size])


def config_specials_tokenizer(folder):
    """Has the common names <s>, </s>, <pad> and also <|start|>, <|stop|>, <|fill|> for configs to pick."""
    tok = byte_level_bpe(["<pad>", "<s>", "</s>", "<|start|>", "<|stop|>", "<|fill|>"])
    tok.save(str(folder / "tokenizer.json"))
    return tok


def test_hf_specials_from_tokenizer_config(tmp_path):
    hf = config_specials_tokenizer(tmp_path)
    config = {
        "bos_token": {"content": "<|start|>", "lstrip": False},
        "eos_token": "<|stop|>",
        "pad_token": None,
    }
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    (tmp_path / "special_tokens_map.json").write_text(json.dumps({"pad_token": {"content": "<|fill|>"}}))
    tok = HFTokenizer(tmp_path)
    ids = [hf.token_to_id(t) for t in ("<|start|>", "<|stop|>", "<|fill|>")]
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == tuple(ids)
    assert tok.decode([tok.bos_id] + tok.encode("1 plus 1") + [tok.eos_id, 5, 6]) == "1 plus 1"


def test_hf_explicit_arguments_win(tmp_path):
    hf = config_specials_tokenizer(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|stop|>"}))
    tok = HFTokenizer(tmp_path, bos="<|start|>", eos="</s>", pad="<|fill|>")
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == tuple(
        hf.token_to_id(t) for t in ("<|start|>", "</s>", "<|fill|>")
    )
    with pytest.raises(ValueError, match=r"eos token '<nope>' \(from the argument\) is not in"):
        HFTokenizer(tmp_path, eos="<nope>")


def test_hf_config_naming_an_unknown_token_is_an_error(tmp_path):
    config_specials_tokenizer(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|missing|>"}))
    with pytest.raises(ValueError, match=r"'<\|missing\|>' \(from the tokenizer config\) is not in"):
        HFTokenizer(tmp_path)


def test_hf_gpt2_style_uses_endoftext_for_bos_eos_and_pad(tmp_path):
    byte_level_bpe(["<|endoftext|>"]).save(str(tmp_path / "gpt2.json"))
    tok = HFTokenizer(tmp_path / "gpt2.json")
    assert tok.bos_id == tok.eos_id == tok.pad_id == 0
    prompt = [tok.bos_id] + tok.encode("2 plus 2")
    assert tok.decode(prompt) == "2 plus 2"
    assert tok.decode(prompt + tok.encode(" is 4") + [tok.eos_id] + tok.encode("x")) == "2 plus 2 is 4"
    ex = tokenize_example("2 plus 2", " is 4", tok)
    assert ex["inputs"][0] == 0 and ex["targets"][-1] == 0 and ex["loss_mask"][-1] == 1


def test_hf_without_eos_is_an_error(tmp_path):
    byte_level_bpe(["<unk>"]).save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(ValueError, match=r"tokenizer\.json has no EOS token; name it with the eos argument"):
        HFTokenizer(tmp_path)
    with pytest.raises(ValueError, match="does not exist; pass a tokenizer.json file or a folder"):
        HFTokenizer(tmp_path / "empty_dir_or_missing")


def test_get_tokenizer_builds_each_kind(sp_path, hf_dir):
    import ml_collections

    assert isinstance(get_tokenizer(), ByteTokenizer)
    assert isinstance(get_tokenizer({"kind": "byte", "path": ""}), ByteTokenizer)
    sp_tok = get_tokenizer({"kind": "sentencepiece", "path": sp_path})
    assert isinstance(sp_tok, SentencePieceTokenizer) and sp_tok.vocab_size == 300
    cfg = ml_collections.ConfigDict(
        {"kind": "hf", "path": str(hf_dir), "bos": "<pad>", "eos": "", "pad": None}
    )
    hf_tok = get_tokenizer(cfg)
    assert isinstance(hf_tok, HFTokenizer)
    assert (hf_tok.bos_id, hf_tok.eos_id, hf_tok.pad_id) == (0, 2, 0)


@pytest.mark.parametrize(
    "cfg, message",
    [
        ({"kind": "bpe"}, r"^tokenizer\.kind is 'bpe'; accepted values are byte, sentencepiece, hf\.$"),
        ({"kind": "hf"}, r"^tokenizer\.path is required for tokenizer\.kind 'hf'"),
        ({"kind": "sentencepiece", "path": ""}, r"^tokenizer\.path is required"),
        (
            {"kind": "sentencepiece", "path": "no/such/file.model"},
            r"^tokenizer\.path no/such/file\.model does not",
        ),
    ],
)
def test_get_tokenizer_errors(cfg, message):
    with pytest.raises(ValueError, match=message):
        get_tokenizer(cfg)


def test_check_vocab():
    check_vocab(tok, 259)
    check_vocab(tok, 512)
    msg = r"^the tokenizer has 259 ids but model\.vocab_size is 258; it must be at least the tokenizer's\.$"
    with pytest.raises(ValueError, match=msg):
        check_vocab(tok, 258)


def test_sentencepiece_encodings_concatenate(sp):
    prompt, response = "12 + 30 =", " 42"
    assert sp.decode(sp.encode(prompt) + sp.encode(response)) == prompt + response


def test_hf_stop_ids_hold_eos_the_generation_config_and_the_chat_end_of_turn(tmp_path):
    """A base checkpoint with EOS <|endoftext|>, generation_config.json's ids, and a ChatML template
    whose turns end at <|im_end|>: a sampled response stops at any of them."""
    hf = byte_level_bpe(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|fill|>"])
    hf.save(str(tmp_path / "tokenizer.json"))
    chatml = (
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )
    config = {"eos_token": "<|endoftext|>", "chat_template": chatml}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    eos, im_end, fill = (hf.token_to_id(t) for t in ("<|endoftext|>", "<|im_end|>", "<|fill|>"))
    assert HFTokenizer(tmp_path).stop_ids == (eos, im_end)
    assert stop_ids(HFTokenizer(tmp_path)) == (eos, im_end)
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [fill, eos, 10**6]}))
    assert HFTokenizer(tmp_path).stop_ids == (eos, fill, im_end)  # an id beyond the vocabulary is dropped
    assert stop_ids(ByteTokenizer()) == (ByteTokenizer.eos_id,)
