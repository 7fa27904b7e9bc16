"""ROUGE, BLEU, chrF and the task-metric registry against hand-computed values."""

import math
import re
import socket
from collections import Counter

import pytest

from jirl.evaluation.quality import bleu, chrf, rouge, split_sentences, task_metrics


def _tokens(text: str) -> list[str]:
    # rouge_score's tokenizer without stemming: lowercase alphanumeric runs.
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).split()


def _rouge_n_f(prediction: str, reference: str, n: int) -> float:
    """Independent ROUGE-N F-measure: clipped n-gram overlap, F = 2PR / (P + R)."""

    def grams(text):
        t = _tokens(text)
        return Counter(tuple(t[i : i + n]) for i in range(len(t) - n + 1))

    pred, ref = grams(prediction), grams(reference)
    overlap = sum((pred & ref).values())
    if overlap == 0:
        return 0.0
    p, r = overlap / sum(pred.values()), overlap / sum(ref.values())
    return 2 * p * r / (p + r)


# Every token has at most 3 characters, so the Porter stemmer (only applied to longer tokens) is a no-op.
_PAIRS = [
    ("the cat sat on the mat", "the cat is on the mat"),
    ("a dog ran", "the dog ran off"),
    ("red fox", "big red fox and a red hat"),
    ("one two", "six ten"),
    ("The CAT, sat!", "the cat sat"),
]


@pytest.mark.parametrize("prediction, reference", _PAIRS)
def test_rouge_matches_reference_implementation(prediction, reference):
    scores = rouge([prediction], [reference])
    assert scores["rouge1"] == pytest.approx(_rouge_n_f(prediction, reference, 1))
    assert scores["rouge2"] == pytest.approx(_rouge_n_f(prediction, reference, 2))


def test_rouge_hand_values_and_mean_over_examples():
    # "the cat sat on the mat" vs "the cat is on the mat": unigram overlap 5 of 6 each side -> F = 5/6;
    # bigrams overlap {the cat, on the, the mat} = 3 of 5 -> F = 3/5.
    # "a dog ran" vs "the dog ran off": unigram P = 2/3, R = 2/4 -> F = 4/7;
    # bigram P = 1/2, R = 1/3 -> F = 2/5.
    scores = rouge(["the cat sat on the mat", "a dog ran"], ["the cat is on the mat", "the dog ran off"])
    assert scores["rouge1"] == pytest.approx((5 / 6 + 4 / 7) / 2)
    assert scores["rouge2"] == pytest.approx((3 / 5 + 2 / 5) / 2)
    assert set(scores) == {"rouge1", "rouge2", "rougeLsum"}


def test_rouge_stems():
    # "cats"/"cat" and "running"/"run" agree only after Porter stemming.
    assert rouge(["cats running"], ["cat run"])["rouge1"] == pytest.approx(1.0)


def test_rouge_lsum_splits_sentences():
    # Per reference sentence, the union of LCS hits over prediction sentences covers all 3 tokens:
    # 6 of 6 hits -> F = 1. Without sentence splitting the single LCS would be 3 tokens -> F = 1/2.
    scores = rouge(["a dog ran. the cat sat."], ["the cat sat. a dog ran."])
    assert scores["rougeLsum"] == pytest.approx(1.0)
    assert scores["rouge2"] == pytest.approx(4 / 5)


def test_rouge_lsum_single_sentence_is_lcs_f():
    # LCS("the cat sat on the mat", "the cat is on the mat") = 5 tokens of 6 on both sides.
    assert rouge(["the cat sat on the mat"], ["the cat is on the mat"])["rougeLsum"] == pytest.approx(5 / 6)


def test_split_sentences():
    assert split_sentences("Hi there. How are you?  Fine!\nOk\n\n next 3.5 is fine.") == (
        "Hi there.\nHow are you?\nFine!\nOk\nnext 3.5 is fine."
    )
    assert split_sentences("  no end ") == "no end"
    assert split_sentences("") == ""


def test_rouge_uses_no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network use attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    assert rouge(["Cats were running. Home now."], ["A cat runs. Now home."])["rouge1"] > 0


def test_bleu_hand_value():
    # p1..p4 = 5/6, 4/5, 3/4, 2/3 and equal lengths (BP = 1): BLEU = 100 * (1/3)^(1/4).
    assert bleu(["a b c d e f"], ["a b c d e g"]) == pytest.approx(100 * (1 / 3) ** 0.25)


def test_bleu_extremes():
    assert bleu(["the quick brown fox jumps"], ["the quick brown fox jumps"]) == pytest.approx(100.0)
    assert bleu(["one two three four"], ["five six seven eight"]) == pytest.approx(0.0)
    assert bleu([], []) == 0.0


def test_chrf_extremes_and_monotonic():
    reference = ["the quick brown fox jumps over the lazy dog"]
    assert chrf(reference, reference) == pytest.approx(100.0)
    assert chrf(["xyz"], ["abc"]) == pytest.approx(0.0)
    near = chrf(["the quick brown fox jumps over a lazy dog"], reference)
    mid = chrf(["the quick red cat sits under a lazy dog"], reference)
    far = chrf(["an entirely different sentence"], reference)
    assert 100.0 > near > mid > far >= 0.0
    assert chrf([], []) == 0.0


def test_task_metrics_kinds():
    assert task_metrics("answer_accuracy", ["#### 3", "#### 4"], ["3", "5"]) == {"answer_accuracy": 0.5}
    scores = task_metrics("rouge", ["a dog ran"], ["the dog ran off"])
    assert scores == rouge(["a dog ran"], ["the dog ran off"])
    scores = task_metrics("bleu", ["a b c d e f"], ["a b c d e g"])
    assert set(scores) == {"bleu", "chrf"}
    assert scores["bleu"] == pytest.approx(100 * (1 / 3) ** 0.25)
    assert math.isfinite(scores["chrf"]) and 0 < scores["chrf"] < 100


def test_task_metrics_unknown_kind():
    with pytest.raises(ValueError, match=r"'meteor'.*answer_accuracy, rouge, bleu"):
        task_metrics("meteor", ["a"], ["a"])


@pytest.mark.parametrize("kind", ["answer_accuracy", "rouge", "bleu"])
def test_task_metrics_length_mismatch(kind):
    with pytest.raises(ValueError, match="predictions has 2 items but references has 1"):
        task_metrics(kind, ["a", "b"], ["a"])


@pytest.mark.parametrize("metric", [rouge, bleu, chrf])
def test_length_mismatch(metric):
    with pytest.raises(ValueError, match="predictions has 1 items but references has 0"):
        metric(["a"], [])
