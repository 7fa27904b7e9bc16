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
broad distribution; `SHIFTED` is harder (3-4 operations rather than 1-3) and
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

# A term is (kind, sign, a, b): kind "n" is the number a (b = 0), kind "p" the
# product a * b with a <= b; sign is +1 (a gain) or -1 (a loss).
Term = tuple[str, int, int, int]
State = tuple[Term, ...]  # sorted terms still to combine
Equation = tuple[int, str, int, int]  # x op y = z
LineTemplates = tuple[tuple[str, tuple[str, ...]], ...]  # (op, its line phrasings) for "+", "-", "*"

LINE_TEMPLATES = {
    "+": ("{eq}", "{eq} {noun}", "Add: {eq}", "Sum: {eq}"),
    "-": ("{eq}", "{eq} {noun}", "Left: {eq}", "Minus: {eq}"),
    "*": ("{eq}", "{eq} {noun}", "Times: {eq}", "Groups: {eq}"),
}

MAX_VALUE = 99  # every number in a rationale stays in [0, MAX_VALUE]
# Difficulty: small enough that a ~1M-parameter byte-level model learns it on a CPU in minutes.
NUM_OPS = (1, 3)  # operations per problem
MAX_PLAIN = 9  # plain quantities lie in [1, MAX_PLAIN]
GROUP_COUNT = (2, 3)  # "a boxes of b": a in GROUP_COUNT, b in GROUP_SIZE
GROUP_SIZE = (2, 5)
MAX_QUESTION_CHARS = 120  # with the rationale, every example fits 192 byte tokens
MAX_RATIONALE_CHARS = 79  # never binds for these settings (at most 73); fits 80 new tokens with EOS


@dataclasses.dataclass(frozen=True)
class Story:
    """Sentence templates for one kind of story; one is drawn per sentence."""

    names: tuple[tuple[str, str], ...]  # (name, subject pronoun)
    nouns: tuple[tuple[str, str], ...]  # (things, containers)
    start: tuple[str, ...]
    start_group: tuple[str, ...]
    gain: tuple[str, ...]
    gain_group: tuple[str, ...]
    loss: tuple[str, ...]
    loss_group: tuple[str, ...]
    ask: tuple[str, ...]


_PEOPLE = (
    ("Mia", "She"),
    ("Leo", "He"),
    ("Ava", "She"),
    ("Sam", "He"),
    ("Zoe", "She"),
    ("Ben", "He"),
    ("Ivy", "She"),
    ("Max", "He"),
    ("Nora", "She"),
    ("Omar", "He"),
)

STORIES = (
    Story(
        names=_PEOPLE,
        nouns=(
            ("apples", "bags"),
            ("marbles", "jars"),
            ("stickers", "sheets"),
            ("cookies", "boxes"),
            ("pencils", "packs"),
            ("cards", "packs"),
            ("shells", "buckets"),
            ("eggs", "cartons"),
        ),
        start=("{name} has {n} {noun}.", "{name} starts with {n} {noun}."),
        start_group=("{name} has {a} {box} of {b} {noun}.", "{name} has {a} {box} with {b} {noun} each."),
        gain=("{pron} buys {n} more.", "{pron} finds {n} more.", "{other} gives {name} {n} more."),
        gain_group=("{pron} buys {a} {box} of {b}.", "{pron} gets {a} {box} with {b} each."),
        loss=("{pron} gives {n} to {other}.", "{pron} loses {n}.", "{pron} sells {n}."),
        loss_group=("{pron} gives {a} friends {b} each.",),
        ask=("How many {noun} does {name} have now?", "How many {noun} does {name} have in the end?"),
    ),
    Story(
        names=(("shop", "It"), ("store", "It"), ("market", "It")),
        nouns=(
            ("cans", "crates"),
            ("books", "boxes"),
            ("toys", "boxes"),
            ("shirts", "boxes"),
            ("lamps", "crates"),
            ("cakes", "trays"),
        ),
        start=("The {name} has {n} {noun}.", "A {name} has {n} {noun} in stock."),
        start_group=("The {name} has {a} {box} of {b} {noun}.",),
        gain=("{pron} gets {n} more.", "A truck brings {n} more."),
        gain_group=("A truck brings {a} {box} of {b}.", "{pron} orders {a} {box} of {b}."),
        loss=("{pron} sells {n}.", "{n} are sold."),
        loss_group=("{a} customers buy {b} each.",),
        ask=("How many {noun} does the {name} have now?", "How many {noun} are in the {name} now?"),
    ),
    Story(
        names=(("bus", "It"), ("train", "It"), ("boat", "It")),
        nouns=(("people", "groups"),),
        start=("A {name} has {n} {noun} on it.", "There are {n} {noun} on a {name}."),
        start_group=("A {name} has {a} rows of {b} {noun}.",),
        gain=("At a stop, {n} get on.", "Then {n} more get on."),
        gain_group=("{a} {box} of {b} get on.",),
        loss=("{n} get off.", "At a stop, {n} get off."),
        loss_group=("{a} families of {b} get off.",),
        ask=("How many {noun} are on the {name} now?",),
    ),
)

# Fine-tuning stories: the same people, new sentences, nouns and story kinds.
SHIFTED_STORIES = (
    Story(
        names=_PEOPLE,
        nouns=(
            ("coins", "jars"),
            ("beads", "tubes"),
            ("stamps", "books"),
            ("crayons", "tins"),
            ("buttons", "cups"),
            ("candles", "packs"),
        ),
        start=("{name} owns {n} {noun}.", "At first, {name} keeps {n} {noun}."),
        start_group=("{name} owns {a} {box} holding {b} {noun} each.",),
        gain=("{pron} wins {n} more.", "{other} hands {name} {n} more.", "{pron} picks up {n} more."),
        gain_group=("{pron} adds {a} {box} holding {b}.", "{other} hands over {a} {box} of {b}."),
        loss=("{pron} trades away {n}.", "{other} borrows {n}.", "{pron} misplaces {n}."),
        loss_group=("{pron} hands {b} to each of {a} pals.",),
        ask=("What number of {noun} does {name} own at last?", "How many {noun} does {name} end up with?"),
    ),
    Story(
        names=(("library", "It"), ("school", "It")),
        nouns=(("books", "shelves"), ("chairs", "rows"), ("maps", "piles")),
        start=("The {name} owns {n} {noun}.",),
        start_group=("The {name} owns {a} {box} of {b} {noun}.",),
        gain=("A donor adds {n}.", "{pron} receives {n} more."),
        gain_group=("A donor adds {a} {box} of {b}.",),
        loss=("{n} are lent out.", "{pron} throws out {n}."),
        loss_group=("{a} classes borrow {b} each.",),
        ask=("What number of {noun} does the {name} own now?",),
    ),
    Story(
        names=(("garden", "It"), ("yard", "It")),
        nouns=(("roses", "beds"), ("tulips", "rows"), ("plants", "pots")),
        start=("A {name} grows {n} {noun}.",),
        start_group=("A {name} grows {a} {box} of {b} {noun}.",),
        gain=("Later, {n} more sprout.", "A gardener plants {n} more."),
        gain_group=("A gardener plants {a} {box} of {b}.",),
        loss=("Rabbits eat {n}.", "{n} are picked."),
        loss_group=("{a} neighbours pick {b} each.",),
        ask=("How many {noun} grow in the {name} now?",),
    ),
)

SHIFTED_LINE_TEMPLATES = {
    "+": ("{eq}", "Total: {eq}", "Plus: {eq}", "{noun}: {eq}"),
    "-": ("{eq}", "Less: {eq}", "Remove: {eq}", "{noun}: {eq}"),
    "*": ("{eq}", "Each: {eq}", "Product: {eq}", "{noun}: {eq}"),
}


@dataclasses.dataclass(frozen=True)
class Distribution:
    """What `make_problem` draws: difficulty (operations, number ranges) and phrasing.

    Every number in a question or a rationale stays in [0, MAX_VALUE]. A question has at most
    `max_question_chars` characters and every rationale of it at most `max_rationale_chars`.
    """

    num_ops: tuple[int, int]  # operations per problem, both ends included
    max_plain: int  # plain quantities lie in [1, max_plain]
    group_count: tuple[int, int]  # "a boxes of b": a in group_count, b in group_size
    group_size: tuple[int, int]
    max_question_chars: int
    max_rationale_chars: int
    stories: tuple[Story, ...]
    people: tuple[tuple[str, str], ...]  # who the "other" person of a story may be
    line_templates: LineTemplates


DEFAULT = Distribution(
    num_ops=NUM_OPS,
    max_plain=MAX_PLAIN,
    group_count=GROUP_COUNT,
    group_size=GROUP_SIZE,
    max_question_chars=MAX_QUESTION_CHARS,
    max_rationale_chars=MAX_RATIONALE_CHARS,
    stories=STORIES,
    people=_PEOPLE,
    line_templates=tuple(LINE_TEMPLATES.items()),
)

# Harder and newly phrased. [BOS] question "\n" rationale [EOS] fits 256 byte tokens, and so does
# [BOS] question "\n" plus 256 - 2 - 150 = 104 new tokens, room for any rationale and its EOS.
SHIFTED = Distribution(
    num_ops=(3, 4),
    max_plain=MAX_PLAIN,
    group_count=GROUP_COUNT,
    group_size=GROUP_SIZE,
    max_question_chars=150,
    max_rationale_chars=103,
    stories=SHIFTED_STORIES,
    people=_PEOPLE,
    line_templates=tuple(SHIFTED_LINE_TEMPLATES.items()),
)


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
