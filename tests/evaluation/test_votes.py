"""Answers over K samples: pass@k against enumeration of all k-subsets, majority vote, correct counts."""

import itertools

import numpy as np
import pytest

from jirl.evaluation import votes


def _brute_pass_at_k(n, c, k):
    """The fraction of k-subsets of n samples (the first c right) holding at least one right sample."""
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(i < c for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7])
def test_pass_at_k_equals_enumeration_over_all_k_subsets(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert votes.pass_at_k(n, [c], k) == pytest.approx(_brute_pass_at_k(n, c, k), abs=1e-12)


def test_pass_at_k_is_the_mean_over_prompts_and_its_edges():
    n, c = np.array([4, 6, 5]), np.array([1, 0, 5])
    expected = np.mean([_brute_pass_at_k(4, 1, 2), 0.0, 1.0])
    assert votes.pass_at_k(n, c, 2) == pytest.approx(expected, abs=1e-12)
    assert votes.pass_at_k(8, [0, 0], 8) == 0.0  # c = 0: never
    assert votes.pass_at_k(8, [1, 3], 8) == 1.0  # k = n: any right sample is drawn
    assert votes.pass_at_k(8, [3, 5], 1) == pytest.approx(0.5)  # pass@1 = c / n
    assert 0.0 < votes.pass_at_k(1000, [1], 500) <= 1.0  # large n: no overflowing binomials


@pytest.mark.parametrize(
    "n, c, k, message",
    [
        (4, [1], 5, "k=5 must be at least 1 and at most num_samples=4"),
        (4, [1], 0, "k=0 must be at least 1"),
        (4, [5], 1, "num_correct=[5] must lie in [0, num_samples=[4]]"),
        (4, [], 1, "num_correct is empty"),
    ],
)
def test_pass_at_k_refuses_bad_values(n, c, k, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        votes.pass_at_k(n, c, k)


def test_majority_vote_hand_made_cases():
    samples = [
        ["#### 4", "#### 5", "#### 4"],  # 4 wins 2-1: right
        ["#### 7", "#### 8", "#### 8"],  # 8 wins: wrong
        ["#### 3", "#### 2", "no answer"],  # tie 3-2: the first to appear (3) wins: right
        ["#### 2", "#### 3", "#### 1,000"],  # three-way tie: 2 first: wrong
        ["none", "none", "#### 9"],  # None answers do not vote: 9 wins: right
        ["none", "none", "none"],  # no answers at all: wrong
    ]
    references = ["4", "7", "3", "3", "9", "9"]
    assert votes.majority_vote(samples, references) == pytest.approx(3 / 6)
    assert votes.majority_vote([["#### 1,000", "#### 1000", "#### 5"]], ["1000"]) == 1.0  # commas dropped
    assert votes.majority_vote([], []) == 0.0


def test_correct_counts_and_the_answer_report():
    samples = [["#### 4", "#### 5", "#### 4", "x"], ["#### 1", "#### 2", "#### 2", "#### 2"]]
    references = ["4", "1"]
    assert votes.correct_per_prompt(samples, references) == [2, 1]
    report = votes.answer_report(samples, references)
    assert report["correct_per_prompt"] == [2, 1] and report["majority_vote"] == 0.5
    assert list(report["pass_at_k"]) == ["1", "2", "4"]
    assert report["pass_at_k"]["1"] == pytest.approx(3 / 8)  # the mean accuracy over samples
    assert report["pass_at_k"]["4"] == 1.0
    assert list(votes.answer_report([["#### 1"]], ["1"])["pass_at_k"]) == ["1"]  # K = 1


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="2 prompts of samples but 1 references"):
        votes.majority_vote([["#### 1"], ["#### 2"]], ["1"])
    with pytest.raises(ValueError, match="not a single string"):
        votes.correct_per_prompt(["#### 1"], ["1"])
