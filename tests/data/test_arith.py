"""The arithmetic word-problem generator and its rationale space."""

import re

import numpy as np
import pytest

from jirl.data import arith
from jirl.data.answers import extract_answer


def _problems(seed, n):
    rng = np.random.default_rng(seed)
    return [arith.make_problem(rng) for _ in range(n)]


def test_deterministic_by_seed():
    a, b = _problems(7, 20), _problems(7, 20)
    assert a == b
    ra = [p.sample_rationale(np.random.default_rng(i)) for i, p in enumerate(a)]
    rb = [p.sample_rationale(np.random.default_rng(i)) for i, p in enumerate(b)]
    assert ra == rb
    assert [p.question for p in _problems(8, 20)] != [p.question for p in a]


def test_sampled_rationales_are_correct_and_small():
    rng = np.random.default_rng(0)
    for problem in _problems(1, 300):
        assert 0 <= problem.answer <= arith.MAX_VALUE
        assert len(problem.question) <= arith.MAX_QUESTION_CHARS
        question_numbers = set(re.findall(r"\d+", problem.question))
        for _ in range(3):
            text = problem.sample_rationale(rng)
            # [BOS] question "\n" rationale [EOS], shifted by one: fits the demo's 192 tokens.
            assert len(problem.question) + 1 + len(text) + 1 <= 192, text
            assert arith.check_rationale(problem, text), text
            assert extract_answer(text) == str(problem.answer)
            lines = text.split("\n")
            assert lines[-1] == f"#### {problem.answer}"
            assert arith.NUM_OPS[0] <= len(lines) - 1 <= arith.NUM_OPS[1]
            # Every operand is in the question or is an earlier line's result.
            known = set(question_numbers)
            for line in lines[:-1]:
                x, op, y, z = re.search(r"(\d+) ([-+*]) (\d+) = (\d+)", line).groups()
                assert {x, y} <= known, (problem.question, text)
                assert 0 <= int(z) <= arith.MAX_VALUE
                known.add(z)


def test_distinct_rationales_occur():
    problems = [arith.make_problem(np.random.default_rng(s)) for s in range(3)]
    # Real counts for the problems of seeds 0, 1, 2 (3, 3 and 2 terms; 1 and 2 of them products).
    assert [p.num_rationales() for p in problems] == [128, 96, 1024]
    for problem in problems:
        rng = np.random.default_rng(123)
        distinct = {problem.sample_rationale(rng) for _ in range(200)}
        n = problem.num_rationales()
        expected = n * (1 - (1 - 1 / n) ** 200)  # distinct strings in 200 uniform draws
        assert len(distinct) >= 0.9 * expected
    counts = [p.num_rationales() for p in _problems(2, 300)]
    assert min(counts) >= 4  # one subtraction: 4 phrasings of its single order
    assert np.median(counts) >= 48


def test_count_matches_enumeration():
    """num_rationales is the exact number of distinct strings."""
    checked = 0
    for problem in _problems(3, 60):
        if problem.num_rationales() > 3000:
            continue
        every = list(problem.all_rationales())
        assert len(set(every)) == len(every) == problem.num_rationales()
        assert all(arith.check_rationale(problem, t) for t in every)
        checked += 1
    assert checked >= 20


def test_count_with_repeated_numbers():
    # 3 + 3 - 3 + 3: equal operands make different step orders print alike.
    terms = (("n", 1, 3, 0), ("n", 1, 3, 0), ("n", -1, 3, 0), ("n", 1, 3, 0))
    problem = arith.Problem(question="q", answer=6, terms=terms, noun="x")
    every = list(problem.all_rationales())
    assert len(set(every)) == len(every) == problem.num_rationales() == 576


def test_sampling_covers_a_small_space():
    terms = (("n", 1, 9, 0), ("n", -1, 4, 0))  # one line: 9 - 4 = 5
    problem = arith.Problem(question="q", answer=5, terms=terms, noun="cans")
    assert problem.num_rationales() == 4
    rng = np.random.default_rng(0)
    seen = {problem.sample_rationale(rng) for _ in range(100)}
    assert seen == set(problem.all_rationales())
    assert "Left: 9 - 4 = 5\n#### 5" in seen


@pytest.mark.parametrize(
    "text, ok",
    [
        ("3 * 4 = 12\n12 + 2 = 14\n#### 14", True),
        ("Sum: 2 + 3 * 4 = 14\n#### 14", True),
        ("3 * 4 = 13\n13 + 1 = 14\n#### 14", False),
        ("3 * 4 = 12\n12 + 2 = 14\n#### 15", False),
        ("3 * 4 = 12\n12 + 2 = 14", False),
        ("8 / 2 = 4\n4 + 10 = 14\n#### 14", True),
        ("8 / 0 = 4\n#### 14", False),
        ("10 - 12 = -2\n#### 14", True),
    ],
)
def test_check_rationale(text, ok):
    problem = arith.Problem(question="q", answer=14, terms=(), noun="x")
    assert arith.check_rationale(problem, text) is ok
