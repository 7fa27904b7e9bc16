"""Arithmetic word problems in GSM8K's shape, with many correct rationales.

A problem is a list of signed terms: plain numbers ("buys 5 more", "loses 3")
and products ("3 bags of 4"). The answer is the signed sum. A rationale is one
binary operation per line ("3 * 4 = 12", "7 + 12 = 19", "19 - 5 = 14"), then
`#### <answer>`. Any order works: a product may be computed whenever, any two
gains (or any two losses) may be added in either order, and a loss may be
subtracted from any gain at least as large. Each line also takes one of a few
phrasings. `Problem.sample_rationale` draws uniformly from all distinct
rationale strings; `Problem.num_rationales` counts them exactly.

A `Distribution` sets the difficulty (operations per problem, number ranges)
and the phrasing (story sentences, rationale line phrasings). `DEFAULT` is the
broad distribution; `SHIFTED` is harder (2-3 operations rather than 1-3) and
phrased with stories and line phrasings `DEFAULT` never uses, for fine-tuning
a model pretrained on `DEFAULT`.
"""

import dataclasses
import fractions
import functools
import itertools
import re
from collections.abc import Iterator

import numpy as np

from jirl.data.answers import extract_answer
from jirl.data.arith_distributions import (  # noqa: F401 (also read as arith.NAME)
    DEFAULT,
    GROUP_COUNT,
    GROUP_SIZE,
    LINE_TEMPLATES,
    MAX_PLAIN,
    MAX_QUESTION_CHARS,
    MAX_RATIONALE_CHARS,
    MAX_VALUE,
    NUM_OPS,
    SHIFTED,
    SHIFTED_LINE_TEMPLATES,
    SHIFTED_STORIES,
    STORIES,
    Distribution,
    LineTemplates,
    Story,
)

# A term is (kind, sign, a, b): kind "n" is the number a (b = 0), kind "p" the
# product a * b with a <= b; sign is +1 (a gain) or -1 (a loss).
Term = tuple[str, int, int, int]
State = tuple[Term, ...]  # sorted terms still to combine
Equation = tuple[int, str, int, int]  # x op y = z
# --- The rationale space: search over states of terms still to combine. ----


def _is_done(state: State) -> bool:
    return len(state) == 1 and state[0][:2] == ("n", 1)


def _moves(state: State) -> Iterator[tuple[Equation, State]]:
    """Every one-line step from `state`: its equation and the state after it."""
    for i, (kind, sign, a, b) in enumerate(state):
        if kind == "p":
            rest = state[:i] + state[i + 1 :]
            after = tuple(sorted(rest + (("n", sign, a * b, 0),)))
            yield (a, "*", b, a * b), after
            if a != b:
                yield (b, "*", a, a * b), after
    for i, j in itertools.combinations(range(len(state)), 2):
        (ki, si, x, _), (kj, sj, y, _) = state[i], state[j]
        if ki != "n" or kj != "n":
            continue
        rest = state[:i] + state[i + 1 : j] + state[j + 1 :]
        if si == sj:  # two gains, or two losses, add up
            after = tuple(sorted(rest + (("n", si, x + y, 0),)))
            yield (x, "+", y, x + y), after
            yield (y, "+", x, x + y), after
        else:  # a gain minus a loss, never below zero
            gain, loss = (x, y) if si > 0 else (y, x)
            if gain >= loss:
                yield (gain, "-", loss, gain - loss), tuple(sorted(rest + (("n", 1, gain - loss, 0),)))


class _RationaleSpace:
    """Counts and samples rationale strings of one problem.

    Two step sequences can print the same lines (equal numbers), so the search
    runs over sets of states that share the lines printed so far; the count is
    then exactly the number of distinct strings. Phrasings multiply the count,
    since a line's text determines its template and its equation.
    """

    def __init__(self, start: State, templates: dict[str, tuple[str, ...]]):
        self.start = frozenset([start])
        self.templates = templates
        self._successors = {}
        self._counts = {}
        self._longest = {}

    def successors(self, states: frozenset[State]) -> tuple[tuple[Equation, frozenset[State]], ...]:
        """The distinct next lines, each with the set of states it can lead to."""
        if states not in self._successors:
            after: dict[Equation, set[State]] = {}
            for state in sorted(states):
                for eq, nxt in _moves(state):
                    after.setdefault(eq, set()).add(nxt)
            self._successors[states] = tuple((eq, frozenset(after[eq])) for eq in sorted(after))
        return self._successors[states]

    def count(self, states: frozenset[State]) -> int:
        """Number of distinct rationale endings from `states`."""
        if states not in self._counts:
            total = int(any(_is_done(s) for s in states))
            for (_, op, _, _), nxt in self.successors(states):
                total += len(self.templates[op]) * self.count(nxt)
            self._counts[states] = total
        return self._counts[states]

    def longest(self, states: frozenset[State], noun: str, answer: int) -> int:
        """Characters of the longest rationale ending from `states` (-1 if none ends)."""
        if states not in self._longest:
            best = len(f"#### {answer}") if any(_is_done(s) for s in states) else -1
            for eq, nxt in self.successors(states):
                rest = self.longest(nxt, noun, answer)
                if rest >= 0:
                    line = max(len(_format_line(eq, t, noun)) for t in self.templates[eq[1]])
                    best = max(best, line + 1 + rest)
            self._longest[states] = best
        return self._longest[states]


def _format_line(eq: Equation, template: str, noun: str) -> str:
    x, op, y, z = eq
    return template.format(eq=f"{x} {op} {y} = {z}", noun=noun)


@dataclasses.dataclass(frozen=True)
class Problem:
    """A word problem: its question, integer answer and the terms behind it."""

    question: str
    answer: int
    terms: tuple[Term, ...]
    noun: str
    line_templates: LineTemplates = dataclasses.field(default=DEFAULT.line_templates, repr=False)

    @functools.cached_property
    def _space(self) -> _RationaleSpace:
        return _RationaleSpace(tuple(sorted(self.terms)), dict(self.line_templates))

    def num_rationales(self) -> int:
        """Exact number of distinct strings `sample_rationale` can return."""
        return self._space.count(self._space.start)

    def max_rationale_chars(self) -> int:
        """Characters of the longest string `sample_rationale` can return."""
        return self._space.longest(self._space.start, self.noun, self.answer)

    def sample_rationale(self, rng: np.random.Generator) -> str:
        """One rationale, uniform over all distinct ones, ending `#### answer`."""
        space, states, lines = self._space, self._space.start, []
        while True:
            r = int(rng.integers(space.count(states)))
            if any(_is_done(s) for s in states):
                if r == 0:
                    break
                r -= 1
            for eq, nxt in space.successors(states):
                templates, n = space.templates[eq[1]], space.count(nxt)
                if r < len(templates) * n:
                    lines.append(_format_line(eq, templates[r // n], self.noun))
                    states = nxt
                    break
                r -= len(templates) * n
        return "\n".join(lines + [f"#### {self.answer}"])

    def all_rationales(self) -> Iterator[str]:
        """Every distinct rationale (exponentially many: for small problems)."""
        space = self._space

        def walk(states, lines):
            if any(_is_done(s) for s in states):
                yield "\n".join(lines + [f"#### {self.answer}"])
            for eq, nxt in space.successors(states):
                for template in space.templates[eq[1]]:
                    yield from walk(nxt, lines + [_format_line(eq, template, self.noun)])

        yield from walk(space.start, [])


# --- Checking a rationale. -------------------------------------------------

_EQUATION_RE = re.compile(r"(\d+(?:\s*[-+*/]\s*\d+)+)\s*=\s*(-?\d+)")


def _evaluate(expression: str) -> fractions.Fraction:
    """Value of digits joined by + - * /, with the usual precedence."""
    tokens = re.findall(r"\d+|[-+*/]", expression)
    total, term, op = fractions.Fraction(0), fractions.Fraction(int(tokens[0])), ""
    for op, num in zip(tokens[1::2], tokens[2::2]):
        value = fractions.Fraction(int(num))
        if op == "*":
            term *= value
        elif op == "/":
            term = term / value if value else fractions.Fraction(10**9)  # never equal
        else:
            total += term
            term = value if op == "+" else -value
    return total + term


def check_rationale(problem: Problem, text: str) -> bool:
    """True iff every `a op b ... = c` in `text` holds and `#### N` is the answer."""
    for match in _EQUATION_RE.finditer(text):
        if _evaluate(match.group(1)) != int(match.group(2)):
            return False
    return extract_answer(text) == str(problem.answer)


# --- Generating a problem. --------------------------------------------------


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _sample_terms(rng: np.random.Generator, dist: Distribution) -> tuple[Term, ...]:
    """dist.num_ops operations: a start term, then gains and losses, some grouped."""
    num_ops = int(rng.integers(dist.num_ops[0], dist.num_ops[1] + 1))
    # k terms with p products take (k - 1) + p operations.
    shapes = [(k, num_ops + 1 - k) for k in range(2, num_ops + 2) if 0 <= num_ops + 1 - k <= min(k, 2)]
    k, p = _pick(rng, shapes)
    grouped = set(rng.choice(k, size=p, replace=False).tolist())
    terms = []
    for i in range(k):
        sign = 1 if i == 0 or rng.random() < 0.55 else -1
        if i in grouped:
            a = int(rng.integers(dist.group_count[0], dist.group_count[1] + 1))
            b = int(rng.integers(dist.group_size[0], dist.group_size[1] + 1))
            terms.append(("p", sign, a, b))
        else:
            terms.append(("n", sign, int(rng.integers(1, dist.max_plain + 1)), 0))
    return tuple(terms)


def _value(term: Term) -> int:
    kind, sign, a, b = term
    return sign * (a * b if kind == "p" else a)


def _render(rng: np.random.Generator, terms: tuple[Term, ...], dist: Distribution) -> tuple[str, str]:
    """The question text for `terms`, and the noun it counts."""
    story = _pick(rng, dist.stories)
    name, pron = _pick(rng, story.names)
    other = _pick(rng, [n for n, _ in dist.people if n != name])
    noun, box = _pick(rng, story.nouns)
    sentences = []
    for i, (kind, sign, a, b) in enumerate(terms):
        role = "start" if i == 0 else ("gain" if sign > 0 else "loss")
        if kind == "p":
            role += "_group"
        template = _pick(rng, getattr(story, role))
        sentences.append(
            template.format(name=name, pron=pron, other=other, noun=noun, box=box, n=a, a=a, b=b)
        )
    sentences.append(_pick(rng, story.ask).format(name=name, noun=noun))
    return " ".join(sentences), noun


def _rationale_fits(problem: Problem, max_chars: int) -> bool:
    """Whether every rationale of `problem` has at most `max_chars` characters; a cheap bound first."""
    num_lines = sum(2 if kind == "p" else 1 for kind, *_ in problem.terms) - 1
    widest = max(
        len(t.replace("{eq}", "").replace("{noun}", problem.noun))
        for _, ts in problem.line_templates
        for t in ts
    )
    eq_chars = len(f"{MAX_VALUE} + {MAX_VALUE} = {MAX_VALUE}")
    if num_lines * (widest + eq_chars + 1) + len(f"#### {problem.answer}") <= max_chars:
        return True
    return problem.max_rationale_chars() <= max_chars


def make_problem(rng: np.random.Generator, distribution: Distribution = DEFAULT) -> Problem:
    """A random problem of `distribution`; the same generator state gives the same problem."""
    while True:
        terms = _sample_terms(rng, distribution)
        gains = sum(_value(t) for t in terms if t[1] > 0)
        answer = sum(_value(t) for t in terms)
        if not 0 <= answer <= gains <= MAX_VALUE:
            continue
        question, noun = _render(rng, terms, distribution)
        if len(question) > distribution.max_question_chars:
            continue
        canonical = tuple((k, s, min(a, b), max(a, b)) if k == "p" else (k, s, a, b) for k, s, a, b in terms)
        problem = Problem(
            question=question,
            answer=answer,
            terms=canonical,
            noun=noun,
            line_templates=distribution.line_templates,
        )
        if _rationale_fits(problem, distribution.max_rationale_chars):
            return problem
