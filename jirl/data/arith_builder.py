"""TFDS builder `jirl_arith`: generated arithmetic word problems, GSM8K-shaped.

Nothing is downloaded: every split is generated from a fixed seed, so each
build writes the same data. A question appears once in the whole dataset, so
validation and test questions never occur in train.
"""

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from jirl.data import arith
from jirl.errors import ConfigError

# Generated first to last; a later split skips questions already taken.
SPLIT_SEEDS = {"test": 1_000_003, "validation": 2_000_003, "train": 3_000_003}


@dataclasses.dataclass
class ArithConfig(tfds.core.BuilderConfig):
    """Number of examples per split."""

    split_sizes: dict[str, int] = dataclasses.field(default_factory=dict)


class JirlArith(tfds.core.GeneratorBasedBuilder):
    """Arithmetic word problems with a sampled step-by-step rationale."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
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
        del dl_manager  # everything is generated
        return {split: self._generate_examples(split) for split in self.builder_config.split_sizes}

    def _generate_examples(self, split):
        for i, (question, answer) in enumerate(generate_split(self.builder_config.split_sizes, split)):
            yield i, {"question": question, "answer": answer}


def generate_split(split_sizes: dict[str, int], split: str) -> list[tuple[str, str]]:
    """(question, rationale) pairs of `split`, none repeating an earlier split."""
    taken: set[str] = set()
    for name in SPLIT_SEEDS:
        rng = np.random.default_rng(SPLIT_SEEDS[name])
        examples = []
        while len(examples) < split_sizes.get(name, 0):
            problem = arith.make_problem(rng)
            if problem.question in taken:
                continue
            taken.add(problem.question)
            examples.append((problem.question, problem.sample_rationale(rng)))
        if name == split:
            return examples
    raise ConfigError(f"Unknown split {split!r}; accepted splits are {list(SPLIT_SEEDS)}.")
