"""Objectives as pure functions of per-position soft-Q statistics: objective(stats, batch) -> (loss, metrics).

    objective = jirl.losses.get("iqlearn", lam=0.1, gamma=0.99)
    stats = jirl.losses.head.from_logits(logits_BTV, batch)          # the reference head
    stats = jirl.losses.head.from_hidden(h_BTD, w_DV, batch, chunk=8192)  # never holds [B, T, V]
    loss, metrics = objective(stats, batch)

The head stage (jirl.losses.head) reduces the logits over the vocabulary to TokenStats (Q_t, V_t,
argmax-correct, and the mean logit when `objective.needs_mean_logit`); the objectives never see
the logits. The registry maps a name to a loss and the options it accepts; `get` binds them.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, Mapping

from jirl.losses import head
from jirl.losses.head import TokenStats
from jirl.losses.iqlearn import iqlearn_loss
from jirl.losses.mle import mle_loss, needs_mean_logit

LossFn = Callable[..., Any]

# name -> (loss, whether its options need the mean logit).
_REGISTRY: dict[str, tuple[LossFn, Callable[..., bool]]] = {
    "mle": (mle_loss, needs_mean_logit),
    "iqlearn": (iqlearn_loss, lambda **_: False),
}
# Keyword arguments that are call-time inputs, not options.
_CALL_ARGS = frozenset({"policy_stats", "policy_batch"})


@dataclasses.dataclass(frozen=True, eq=False)
class Objective:
    """A registered loss with its options bound: `objective(stats, batch, **call_args) -> (loss, metrics)`."""

    name: str
    options: Mapping[str, Any]
    needs_mean_logit: bool  # the head must compute mean_v z_t (label smoothing)

    def __call__(self, stats: TokenStats, batch: Mapping[str, Any], **call_args: Any):
        return _lookup(self.name)[0](stats, batch, **self.options, **call_args)


def names() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def options(name: str) -> dict[str, Any]:
    """The options `name` accepts, with their defaults."""
    fn, _ = _lookup(name)
    return {
        p.name: p.default
        for p in inspect.signature(fn).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in _CALL_ARGS
    }


def get(name: str, **opts: Any) -> Objective:
    """The objective `name` with `opts` bound (unknown options are refused by name)."""
    accepted = options(name)
    unknown = sorted(set(opts) - set(accepted))
    if unknown:
        raise ValueError(f"loss '{name}' has no option(s) {unknown}; accepted options: {sorted(accepted)}.")
    return Objective(name, dict(opts), bool(_lookup(name)[1](**opts)))


def _lookup(name: str) -> tuple[LossFn, Callable[..., bool]]:
    if name not in _REGISTRY:
        raise ValueError(f"unknown loss '{name}'; accepted: {list(names())}.")
    return _REGISTRY[name]


__all__ = ["Objective", "TokenStats", "get", "head", "iqlearn_loss", "mle_loss", "names", "options"]
