"""Adversarial imitation's discriminator as a run trains it: its model config and optimizer.

`discriminator_of(config, objective, policy)` reads `loss.discriminator` (a model preset, sized to
the policy's vocabulary, length and dtype, or 'policy' for a separate copy of the policy) and
`loss.discriminator_learning_rate` (its own AdamW, otherwise as the `train` block); `experiment.build`
puts the result in the Run, and `jirl.train.adversarial` builds the network and its step from it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import optax
from ml_collections import ConfigDict

from jirl import losses, models
from jirl.errors import ConfigError
from jirl.optimizer import make_optimizer


@dataclasses.dataclass(frozen=True, eq=False)
class Discriminator:
    """Adversarial imitation's discriminator (loss.name = 'gail'): its model, trained by its own
    optimizer (the `train` block's, at `loss.discriminator_learning_rate`). copies_policy: it starts
    as a separate copy of the policy's starting weights (`loss.discriminator='policy'`), else fresh."""

    model: models.ModelConfig
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    copies_policy: bool


def discriminator_of(
    config: Any, objective: losses.Objective, policy: models.ModelConfig
) -> Discriminator | None:
    """The discriminator an adversarial objective trains (`loss.discriminator`: a model preset,
    sized to the policy's vocabulary and length, or 'policy' for a copy of the policy); else None."""
    if not objective.adversarial:
        return None
    name = objective.options.get("discriminator", "tiny")
    if name == "policy":
        model = policy
    elif policy.is_encoder_decoder:
        raise ConfigError(
            f"loss.discriminator='{name}' is not accepted for an encoder-decoder policy; give 'policy' "
            "(a copy of the policy)."
        )
    elif name not in models.PRESETS:
        raise ConfigError(
            f"loss.discriminator='{name}' is not accepted; give a model preset {sorted(models.PRESETS)} "
            "or 'policy'."
        )
    else:
        shape = dict(vocab_size=policy.vocab_size, max_len=policy.max_len, dtype=policy.dtype)
        model = models.get_config(name, **shape)
    train = ConfigDict(config.train.to_dict())
    train.learning_rate = float(objective.options.get("discriminator_learning_rate", 1e-3))
    tx, schedule = make_optimizer(train)
    return Discriminator(model, tx, schedule, copies_policy=name == "policy")
