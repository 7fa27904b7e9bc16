"""Objectives as pure functions of per-position soft-Q statistics: objective(stats, batch) -> (loss, metrics).

    objective = jirl.losses.get("iqlearn", lam=0.1, gamma=0.99)
    stats = jirl.losses.head.from_logits(logits_BTV, batch)          # the reference head
    stats = jirl.losses.head.from_hidden(h_BTD, w_DV, batch, chunk=8192)  # never holds [B, T, V]
    loss, metrics = objective(stats, batch)
    loss, metrics = objective(stats, batch, policy=Stream(policy_stats, policy_batch))  # online

The head stage (jirl.losses.head) reduces the logits over the vocabulary to TokenStats (Q_t, V_t,
argmax-correct, the mean logit when `objective.needs_mean_logit`, the expected logit
sum_v softmax(z)_v z_v when `objective.needs_expected_logit`); the objectives never see the
logits. The registry maps a name to a loss and the options it accepts; `get` binds them.

`gail` (adversarial imitation, `objective.adversarial`) reads its policy stream as
`PolicySamples` (log pi, the KL to the starting model, the advantages from a discriminator), which
its own step computes (jirl.train.adversarial); the discriminator's math is jirl.losses.adversarial.

Every mean an objective takes is a sum over its batch divided by a count of the batch. When
`objective.reads_counts`, a batch may carry the counts to divide by (`batch_counts` of a larger
batch): the objective over each slice of a batch, given the whole batch's counts, is that slice's
share, and the slices' losses, metrics and gradients add up to the whole batch's (jirl.train.step).
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, Mapping, NamedTuple

from jirl.errors import ConfigError
from jirl.losses import adversarial, gail, head, iqlearn, mle
from jirl.losses._masking import COUNT_KEYS, batch_counts, last_turn_mask
from jirl.losses.gail import PolicySamples, gail_loss
from jirl.losses.head import Stream, TokenStats
from jirl.losses.iqlearn import iqlearn_loss
from jirl.losses.mle import mle_loss

LossFn = Callable[..., Any]


class _Entry(NamedTuple):
    """A registered loss: `loss(stats, batch[, policy], **options)`, and what its options ask of the step."""

    loss: LossFn
    check: Callable[..., None]  # options -> None; a ConfigError for a value out of range
    needs_mean_logit: Callable[..., bool] = lambda **_: False  # whether the head computes mean_v z_t
    needs_policy: Callable[..., bool] = lambda **_: False  # whether it reads a policy stream (online)
    offline: Callable[..., dict] = (
        dict  # options -> those of its offline terms (what the expert stream measures)
    )
    adversarial: bool = False  # trains a discriminator beside the policy (its own step)
    needs_expected_logit: Callable[..., bool] = lambda **_: False  # the head computes sum_v p_v z_v
    reads_counts: bool = False  # its means divide by the batch's COUNT_KEYS when it carries them


_REGISTRY: dict[str, _Entry] = {
    "mle": _Entry(
        mle_loss,
        mle.check_options,
        needs_mean_logit=mle.needs_mean_logit,
        needs_expected_logit=mle.needs_expected_logit,
        reads_counts=True,
    ),
    "iqlearn": _Entry(
        iqlearn_loss,
        iqlearn.check_options,
        needs_policy=iqlearn.is_online,
        offline=iqlearn.offline,
        reads_counts=True,
    ),
    "gail": _Entry(gail_loss, gail.check_options, needs_policy=gail.is_online, adversarial=True),
}


@dataclasses.dataclass(frozen=True, eq=False)
class Objective:
    """A registered loss with its options bound: `objective(stats, batch[, policy]) -> (loss, metrics)`.

    The expert stream is (stats, batch); `policy` (a `Stream`) is the model's own samples, given
    exactly when `needs_policy` (online IQLearn, loss.alpha > 0).
    """

    name: str
    options: Mapping[str, Any]
    needs_mean_logit: bool  # the head must compute mean_v z_t (label smoothing)
    needs_policy: bool  # the step must give a policy stream
    adversarial: bool = False  # a discriminator trains beside the policy (GAIL: jirl.train.adversarial)
    needs_expected_logit: bool = False  # the head must compute sum_v p_v z_v (MLE's entropy bonus)
    reads_counts: bool = False  # its means divide by a batch's `batch_counts` when it carries them

    def offline(self) -> Objective:
        """This objective without its policy terms: what it measures on the expert stream alone."""
        return get(self.name, **_lookup(self.name).offline(**self.options))

    def __call__(self, stats: TokenStats, batch: Mapping[str, Any], policy: Stream | None = None):
        loss = _lookup(self.name).loss
        if policy is None:
            return loss(stats, batch, **self.options)
        return loss(stats, batch, policy, **self.options)


def names() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def options(name: str) -> dict[str, Any]:
    """The options `name` accepts, with their defaults: the loss's keyword-only parameters (its
    positional ones are the streams it reads)."""
    parameters = inspect.signature(_lookup(name).loss).parameters.values()
    return {p.name: p.default for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}


def get(name: str, **opts: Any) -> Objective:
    """The objective `name` with `opts` bound (unknown options are refused by name)."""
    accepted = options(name)
    unknown = sorted(set(opts) - set(accepted))
    if unknown:
        raise ConfigError(f"loss '{name}' has no option(s) {unknown}; accepted options: {sorted(accepted)}.")
    entry = _lookup(name)
    entry.check(**opts)
    return Objective(
        name,
        dict(opts),
        bool(entry.needs_mean_logit(**opts)),
        bool(entry.needs_policy(**opts)),
        entry.adversarial,
        needs_expected_logit=bool(entry.needs_expected_logit(**opts)),
        reads_counts=entry.reads_counts,
    )


def _lookup(name: str) -> _Entry:
    if name not in _REGISTRY:
        raise ConfigError(f"unknown loss '{name}'; accepted: {list(names())}.")
    return _REGISTRY[name]


__all__ = [
    "COUNT_KEYS",
    "Objective",
    "PolicySamples",
    "Stream",
    "TokenStats",
    "adversarial",
    "batch_counts",
    "last_turn_mask",
    "gail_loss",
    "get",
    "head",
    "iqlearn_loss",
    "mle_loss",
    "names",
    "options",
]
