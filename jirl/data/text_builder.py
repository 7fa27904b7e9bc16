"""TFDS builder `jirl_text`: prompt / response / reference text (or a chat conversation) from files a
user has on disk.

One builder serves every local task: its config is named after the task and variant (`gsm8k`,
`wmt-de-en`, `jsonl-mydata`), so each lands in its own folder, DATA_DIR/jirl_text/NAME/1.0.0, as
ArrayRecord. The records are read once at prepare time; training never looks at the source again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping

import tensorflow_datasets as tfds

# `messages`: a chat conversation as JSON (`jirl.data.chat`), "" for prompt / response records; data
# prepared before it existed reads back with messages None.
FEATURES = ("prompt", "response", "reference", "messages")


@dataclasses.dataclass
class TextConfig(tfds.core.BuilderConfig):
    """`splits` maps each split to a zero-argument callable returning its formatted records."""

    splits: Mapping[str, Callable[[], Iterable[Mapping[str, str]]]] = dataclasses.field(default_factory=dict)


class JirlText(tfds.core.GeneratorBasedBuilder):
    """Formatted (prompt, response, reference) examples of a local task."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    # Configs are made per task by jirl.data.tasks; reading needs only the name.
    BUILDER_CONFIGS = []

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict({k: tfds.features.Text() for k in FEATURES}),
            supervised_keys=("prompt", "response"),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # the files are local
        return {
            split: self._generate_examples(records) for split, records in self.builder_config.splits.items()
        }

    def _generate_examples(self, records):
        for i, record in enumerate(records()):
            yield i, {k: record.get(k, "") for k in FEATURES}
