"""What `jirl.data.arith.make_problem` draws from: difficulty and phrasing, as `Distribution`s.

`DEFAULT` is the broad distribution (1-3 operations, the original stories and rationale line
phrasings); `SHIFTED` is harder (2-3 operations) and phrased with stories and line phrasings
`DEFAULT` never uses, for fine-tuning a model pretrained on `DEFAULT`.
"""

from __future__ import annotations

import dataclasses

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
    num_ops=(2, 3),
    max_plain=MAX_PLAIN,
    group_count=GROUP_COUNT,
    group_size=GROUP_SIZE,
    max_question_chars=150,
    max_rationale_chars=103,
    stories=SHIFTED_STORIES,
    people=_PEOPLE,
    line_templates=tuple(SHIFTED_LINE_TEMPLATES.items()),
)
