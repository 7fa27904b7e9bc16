"""ByteTokenizer: ids, round trips, specials and errors."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jirl.data import ByteTokenizer

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
