"""Self-BLEU, distinct-n and mean token entropy against hand-computed values."""

import numpy as np
import pytest

from jirl.evaluation.diversity import distinct_n, mean_token_entropy, self_bleu

# Sentence BLEU of "a b c d e f" against "a b c d e g" (either way round): p1..p4 = 5/6, 4/5, 3/4, 2/3,
# BP = 1, so BLEU = 100 * (1/3)^(1/4).
_NEAR_BLEU = 100 * (1 / 3) ** 0.25


def test_self_bleu_identical_samples():
    assert self_bleu([["the cat sat on the mat"] * 3]) == pytest.approx(100.0)


def test_self_bleu_disjoint_samples():
    assert self_bleu(
        [["one two three four", "five six seven eight", "nine ten eleven twelve"]]
    ) == pytest.approx(0.0)


def test_self_bleu_hand_value():
    assert self_bleu([["a b c d e f", "a b c d e g"]]) == pytest.approx(_NEAR_BLEU)


def test_self_bleu_means_over_prompts():
    samples = [
        ["x y z w"] * 4,
        ["one two three four", "five six seven eight"],
        ["a b c d e f", "a b c d e g"],
    ]
    assert self_bleu(samples) == pytest.approx((100.0 + 0.0 + _NEAR_BLEU) / 3)


def test_self_bleu_uses_other_samples_as_references():
    # Sample 0 matches sample 2 exactly (100); sample 1 shares nothing (0); sample 2 matches sample 0 (100).
    assert self_bleu([["p q r s", "k l m n", "p q r s"]]) == pytest.approx(200 / 3)


def test_self_bleu_short_samples_are_smoothed():
    # Effective order plus "exp" smoothing: 3-token samples sharing 2 tokens score strictly between 0 and 100.
    assert 0.0 < self_bleu([["a b c", "a b d"]]) < 100.0


def test_self_bleu_errors():
    with pytest.raises(ValueError, match=r"samples_per_prompt\[1\] has K=1 samples; .*K >= 2"):
        self_bleu([["a b", "a c"], ["only one"]])
    with pytest.raises(ValueError, match="K=0"):
        self_bleu([[]])
    with pytest.raises(ValueError, match="is empty"):
        self_bleu([])
    with pytest.raises(ValueError, match="is a string"):
        self_bleu(["ab"])


@pytest.mark.parametrize(
    "n, expected",
    [
        # Unigrams: 7 tokens, {a, b, c} distinct.
        (1, 3 / 7),
        # Bigrams: (a b) (b a) (a b) | (a b) (b c): 5 in all, 3 distinct.
        (2, 3 / 5),
        # Trigrams: (a b a) (b a b) | (a b c): all distinct.
        (3, 1.0),
        # Only "a b a b" has a 4-gram.
        (4, 1.0),
        (5, 0.0),
    ],
)
def test_distinct_n(n, expected):
    assert distinct_n(["a b a b", "a  b\nc"], n) == pytest.approx(expected)


def test_distinct_n_no_cross_text_ngrams_and_case():
    # Bigrams never span texts: "a b" + "c d" has 2 bigrams, not 3. Case is kept.
    assert distinct_n(["a b", "c d"], 2) == 1.0
    assert distinct_n(["A a", "a"], 1) == pytest.approx(2 / 3)
    assert distinct_n([], 1) == 0.0
    assert distinct_n(["", "  "], 1) == 0.0


def test_distinct_n_errors():
    with pytest.raises(ValueError, match="n is 0; .*n >= 1"):
        distinct_n(["a b"], 0)
    with pytest.raises(ValueError, match="n is 1.5"):
        distinct_n(["a b"], 1.5)
    with pytest.raises(ValueError, match="single string"):
        distinct_n("a b", 1)


def test_mean_token_entropy():
    # Mean over tokens, not sequences: (1 + 2 + 6) / 3 = 3, not ((1 + 2) / 2 + 6) / 2 = 3.75.
    assert mean_token_entropy([[1.0, 2.0], [6.0]]) == pytest.approx(3.0)
    assert mean_token_entropy(
        [np.array([1.0, 2.0], np.float32), np.array([6.0], np.float16)]
    ) == pytest.approx(3.0)
    assert mean_token_entropy(np.array([[0.5, 1.5], [1.0, 3.0]], np.float32)) == pytest.approx(1.5)
    assert mean_token_entropy([[], [np.log(4.0)]]) == pytest.approx(np.log(4.0))
    assert mean_token_entropy([]) == 0.0
    assert mean_token_entropy([[]]) == 0.0
    assert isinstance(mean_token_entropy([[1.0]]), float)


def test_mean_token_entropy_rejects_non_1d_rows():
    with pytest.raises(ValueError, match=r"entropies_per_token\[0\] has shape \(2, 1\)"):
        mean_token_entropy([[[1.0], [2.0]]])
