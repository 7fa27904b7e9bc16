"""The `online` block of an experiment: how an online objective draws its policy samples.

Online IQLearn (loss.alpha > 0) and GAIL read a stream of the policy's own responses: one per
training example, drawn with the current parameters every `sample_every` steps at `temperature`,
up to `max_new_tokens` (`jirl.train.online` draws them).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from jirl import losses
from jirl.errors import ConfigError

# Keys that moved out of the `loss` block (the objective) into the `online` block (the sampler).
MOVED_KEYS = {
    "loss.sample_every": "online.sample_every",
    "loss.sample_temperature": "online.temperature",
    "loss.sample_max_tokens": "online.max_new_tokens",
}


@dataclasses.dataclass(frozen=True)
class OnlineSampling:
    """The `online` block: online IQLearn's policy samples, one response per training example drawn
    with the current parameters every `sample_every` steps, at `temperature`, up to `max_new_tokens`."""

    sample_every: int = 1
    temperature: float = 1.0
    max_new_tokens: int = 96

    def __post_init__(self):
        for key in ("sample_every", "max_new_tokens"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"online.{key}={value!r} is not accepted; give an integer >= 1.")
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)):
            raise ConfigError(f"online.temperature={self.temperature!r} is not accepted; give a number >= 0.")
        if self.temperature < 0:
            raise ConfigError(f"online.temperature={self.temperature!r} is not accepted; give a number >= 0.")


def online_sampling(config: Any, objective: losses.Objective) -> OnlineSampling | None:
    """The `online` block when the objective reads a policy stream (loss.alpha > 0); else None."""
    if not objective.needs_policy:
        return None
    block = dict(config.get("online") or {})
    accepted = [f.name for f in dataclasses.fields(OnlineSampling)]
    unknown = sorted(set(block) - set(accepted))
    if unknown:
        raise ConfigError(f"online has no key(s) {unknown}; accepted: {accepted}.")
    return OnlineSampling(**block)


def check_sampling_budget(online: OnlineSampling, seq_len: int, model: Any) -> None:
    """A policy example (a prompt of at least one token, and a response of up to max_new_tokens) must
    fit a row of task.seq_len tokens and the model's positions (an encoder-decoder's response has the
    decoder to itself)."""
    prompt = 0 if model.is_encoder_decoder else 1
    limit = min(seq_len, model.max_len) - prompt
    if online.max_new_tokens > limit:
        raise ConfigError(
            f"online.max_new_tokens={online.max_new_tokens} cannot fit: a policy example is a prompt of at "
            f"least one token and its response, packed into rows of task.seq_len={seq_len} tokens (model "
            f"max_len {model.max_len}); give online.max_new_tokens <= {limit}."
        )
