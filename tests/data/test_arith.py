"""The arithmetic word-problem generator and its rationale space."""

import dataclasses
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
            _assert_operands_known(problem, lines, question_numbers)


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


# --- Distributions: DEFAULT pinned, SHIFTED harder and newly phrased. ---------


def _problems_of(distribution, seed, n):
    rng = np.random.default_rng(seed)
    return [arith.make_problem(rng, distribution) for _ in range(n)]


def test_default_output_is_pinned():
    """DEFAULT draws exactly as the generator did before distributions existed (seed 7, three problems)."""
    rng = np.random.default_rng(7)
    got = []
    for _ in range(3):
        p = arith.make_problem(rng)
        got.append((p.question, p.terms, p.noun, p.answer, p.sample_rationale(rng), p.num_rationales()))
    assert got == [
        (
            "A boat has 9 people on it. At a stop, 8 get off. 2 groups of 3 get on. "
            "How many people are on the boat now?",
            (("n", 1, 9, 0), ("n", -1, 8, 0), ("p", 1, 2, 3)),
            "people",
            7,
            "2 * 3 = 6 people\nLeft: 9 - 8 = 1\n1 + 6 = 7\n#### 7",
            768,
        ),
        (
            "A store has 3 shirts in stock. A truck brings 7 more. A truck brings 3 more. "
            "How many shirts are in the store now?",
            (("n", 1, 3, 0), ("n", 1, 7, 0), ("n", 1, 3, 0)),
            "shirts",
            13,
            "7 + 3 = 10\n10 + 3 = 13\n#### 13",
            96,
        ),
        (
            "Zoe starts with 5 marbles. Mia gives Zoe 2 more. She loses 2. "
            "How many marbles does Zoe have in the end?",
            (("n", 1, 5, 0), ("n", 1, 2, 0), ("n", -1, 2, 0)),
            "marbles",
            5,
            "Minus: 5 - 2 = 3\nAdd: 3 + 2 = 5\n#### 5",
            96,
        ),
    ]
    assert _problems(11, 50) == _problems_of(arith.DEFAULT, 11, 50)
    assert arith.DEFAULT.num_ops == arith.NUM_OPS
    assert arith.DEFAULT.max_question_chars == arith.MAX_QUESTION_CHARS


def _ops(problem):
    return sum(2 if kind == "p" else 1 for kind, *_ in problem.terms) - 1


def test_shifted_is_harder_and_fits_256_byte_tokens():
    from jirl.data.pipeline import tokenize_example
    from jirl.data.tokenizer import ByteTokenizer

    tokenizer, shifted = ByteTokenizer(), arith.SHIFTED
    # [BOS] question "\n" then room for the longest rationale and EOS: the eval's new tokens.
    assert 1 + shifted.max_question_chars + 1 + shifted.max_rationale_chars + 1 <= 256
    problems = _problems_of(arith.SHIFTED, 4, 300)
    ops = [_ops(p) for p in problems]
    default_ops = [_ops(p) for p in _problems(4, 300)]
    assert set(ops) == {2, 3} and ops.count(3) >= 0.3 * len(ops)
    assert 1 in default_ops and np.mean(ops) > np.mean(default_ops) + 0.3
    rng = np.random.default_rng(0)
    for problem in problems:
        assert 0 <= problem.answer <= arith.MAX_VALUE
        assert len(problem.question) <= shifted.max_question_chars
        assert problem.max_rationale_chars() <= shifted.max_rationale_chars
        question_numbers = set(re.findall(r"\d+", problem.question))
        for _ in range(2):
            text = problem.sample_rationale(rng)
            assert arith.check_rationale(problem, text), text
            assert len(text) <= problem.max_rationale_chars()
            example = tokenize_example(problem.question + "\n", text, tokenizer, seq_len=256)
            assert example["truncated"][0] == 0 and len(example["inputs"]) + 1 <= 256  # [BOS] ... [EOS]
            lines = text.split("\n")
            assert lines[-1] == f"#### {problem.answer}" and len(lines) - 1 == _ops(problem)
            _assert_operands_known(problem, lines, question_numbers)


def _sentences(question):
    """The question's sentences with numbers blanked: its phrasing."""
    return {re.sub(r"\d+", "N", s) for s in re.split(r"(?<=[.?]) ", question)}


def _line_phrasings(rationale):
    """(text before, text after) the equation of each line."""
    found = []
    for line in rationale.split("\n")[:-1]:
        m = re.search(r"\d+ [-+*] \d+ = \d+", line)
        found.append((line[: m.start()], line[m.end() :]))
    return found


def test_shifted_uses_phrasings_default_never_uses():
    rng = np.random.default_rng(0)
    default, shifted = _problems_of(arith.DEFAULT, 5, 400), _problems_of(arith.SHIFTED, 5, 400)
    default_sentences = set().union(*(_sentences(p.question) for p in default))
    assert all(not _sentences(p.question) & default_sentences for p in shifted)
    assert any(s.startswith("What number of") for p in shifted for s in _sentences(p.question))
    default_lines = {ph for p in default for ph in _line_phrasings(p.sample_rationale(rng))}
    shifted_lines = [ph for p in shifted for ph in _line_phrasings(p.sample_rationale(rng))]
    assert set(shifted_lines) & default_lines == {("", "")}  # only the bare equation is shared
    assert sum(ph != ("", "") for ph in shifted_lines) >= 0.6 * len(shifted_lines)  # 3 of 4 expected
    # No sentence template of a shifted story is one of DEFAULT's.
    assert not _sentence_templates(arith.SHIFTED) & _sentence_templates(arith.DEFAULT)


def _sentence_templates(distribution):
    return {
        template
        for story in distribution.stories
        for field in dataclasses.fields(story)
        if field.name not in ("names", "nouns")
        for template in getattr(story, field.name)
    }


def test_shifted_count_and_longest_match_enumeration():
    checked = 0
    for problem in _problems_of(arith.SHIFTED, 6, 40):
        if problem.num_rationales() > 5000:
            continue
        every = list(problem.all_rationales())
        assert len(set(every)) == len(every) == problem.num_rationales()
        assert max(len(t) for t in every) == problem.max_rationale_chars()
        assert all(arith.check_rationale(problem, t) for t in every)
        checked += 1
    assert checked >= 10
    small = _problems(3, 30)
    assert all(
        max(map(len, p.all_rationales())) == p.max_rationale_chars()
        for p in small
        if p.num_rationales() < 3000
    )


def _assert_operands_known(problem, lines, question_numbers):
    """Every operand is in the question or an earlier line's result; every result in [0, MAX_VALUE]."""
    known = set(question_numbers)
    for line in lines[:-1]:
        x, op, y, z = re.search(r"(\d+) ([-+*]) (\d+) = (\d+)", line).groups()
        assert {x, y} <= known, (problem.question, "\n".join(lines))
        assert 0 <= int(z) <= arith.MAX_VALUE
        known.add(z)
