"""TFDS builder `jirl_arith`: generated arithmetic word problems, GSM8K-shaped.

Nothing is downloaded: every split is generated from a fixed seed, so each
build writes the same data. A question appears once in the whole dataset, so
validation and test questions never occur in train.

`default` and `tiny` draw from the broad distribution (`arith.DEFAULT`). The
`shifted_*` configs draw from `arith.SHIFTED` (harder, newly phrased) for
fine-tuning with few examples: `shifted_1000` and `shifted_5000` have the same
500 validation and 500 test problems, and every shifted train set (a prefix of
one sequence, so the 1000 are the 5000's first) avoids all of them.
"""

import dataclasses
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

from jirl.data import arith
from jirl.errors import ConfigError

# Generated first to last; a later split skips questions already taken.
SPLIT_SEEDS = {"test": 1_000_003, "validation": 2_000_003, "train": 3_000_003}
# Every shifted config draws this many validation and test problems (keeping its first split_sizes),
# so they all share them and no shifted train set contains one.
SHIFTED_HELD_OUT = {"test": 500, "validation": 500}


@dataclasses.dataclass
class ArithConfig(tfds.core.BuilderConfig):
    """Number of examples per split, the distribution they are drawn from, and how many problems of
    a split are drawn (`reserved`, at least split_sizes; later splits avoid all of them)."""

    split_sizes: dict[str, int] = dataclasses.field(default_factory=dict)
    distribution: arith.Distribution = arith.DEFAULT
    reserved: dict[str, int] = dataclasses.field(default_factory=dict)


class JirlArith(tfds.core.GeneratorBasedBuilder):
    """Arithmetic word problems with a sampled step-by-step rationale."""

    # Bump on any change to what a config generates: prepared data is read by version, never checked
    # against the generator, so an unbumped change leaves older checkouts training on the old data.
    # tests/data/test_arith_builder.py pins every config's output at this version.
    VERSION = tfds.core.Version("1.2.0")
    RELEASE_NOTES = {
        "1.0.0": "Initial release.",
        "1.1.0": "Configs shifted_1000, shifted_5000 and shifted_tiny (harder, newly phrased problems); "
        "default and tiny unchanged.",
        "1.2.0": "The shifted configs take 2-3 operations (1.1.0 wrote 3-4); default and tiny unchanged.",
    }
    BUILDER_CONFIGS = [
        ArithConfig(
            name="default",
            description="20000 train, 500 validation, 500 test problems.",
            split_sizes={"train": 20_000, "validation": 500, "test": 500},
        ),
        ArithConfig(
            name="tiny",
            description="64 train, 16 validation, 16 test problems, for tests.",
            split_sizes={"train": 64, "validation": 16, "test": 16},
        ),
        *(
            ArithConfig(
                name=f"shifted_{n}",
                description=f"{n} train, 500 validation, 500 test problems of the shifted distribution.",
                split_sizes={"train": n, "validation": 500, "test": 500},
                distribution=arith.SHIFTED,
                reserved=SHIFTED_HELD_OUT,
            )
            for n in (1000, 5000)
        ),
        ArithConfig(
            name="shifted_tiny",
            description="64 train, 16 validation, 16 test problems of the shifted distribution, for tests.",
            split_sizes={"train": 64, "validation": 16, "test": 16},
            distribution=arith.SHIFTED,
            reserved=SHIFTED_HELD_OUT,
        ),
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "question": tfds.features.Text(),
                    "answer": tfds.features.Text(),
                }
            ),
            supervised_keys=("question", "answer"),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # everything is generated, every split in one pass
        config = self.builder_config
        splits = generate_splits(config.split_sizes, config.distribution, config.reserved)
        return {split: self._generate_examples(examples) for split, examples in splits.items()}

    def _generate_examples(self, examples):
        for i, (question, answer) in enumerate(examples):
            yield i, {"question": question, "answer": answer}


def _draw_splits(
    split_sizes: dict[str, int], distribution: arith.Distribution, reserved: dict[str, int] | None
) -> Iterator[tuple[str, list[tuple[str, str]]]]:
    """(split, its (question, rationale) pairs) in SPLIT_SEEDS order, none repeating an earlier split.

    Each split draws max(split_sizes, reserved) problems from its seed and keeps the first
    split_sizes of them; later splits skip every question drawn before.
    """
    taken: set[str] = set()
    for name in SPLIT_SEEDS:
        rng = np.random.default_rng(SPLIT_SEEDS[name])
        examples = []
        while len(examples) < max(split_sizes.get(name, 0), (reserved or {}).get(name, 0)):
            problem = arith.make_problem(rng, distribution)
            if problem.question in taken:
                continue
            taken.add(problem.question)
            examples.append((problem.question, problem.sample_rationale(rng)))
        yield name, examples[: split_sizes.get(name, 0)]


def generate_splits(
    split_sizes: dict[str, int],
    distribution: arith.Distribution = arith.DEFAULT,
    reserved: dict[str, int] | None = None,
) -> dict[str, list[tuple[str, str]]]:
    """(question, rationale) pairs of every split in `split_sizes`, drawn in one pass."""
    return {
        name: examples
        for name, examples in _draw_splits(split_sizes, distribution, reserved)
        if name in split_sizes
    }


def generate_split(
    split_sizes: dict[str, int],
    split: str,
    distribution: arith.Distribution = arith.DEFAULT,
    reserved: dict[str, int] | None = None,
) -> list[tuple[str, str]]:
    """(question, rationale) pairs of `split`, none repeating an earlier split (see `_draw_splits`)."""
    for name, examples in _draw_splits(split_sizes, distribution, reserved):
        if name == split:
            return examples
    raise ConfigError(f"Unknown split {split!r}; accepted splits are {list(SPLIT_SEEDS)}.")
