"""Objectives as pure functions `loss_fn(logits_BTV, batch) -> (loss, metrics)`.

    loss_fn = jirl.losses.get("iqlearn", lam=0.1, gamma=0.99)
    loss, metrics = loss_fn(logits_BTV, batch)

The registry maps a name to a loss and the options it accepts; `get` binds the options.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

from jirl.losses.iqlearn import iqlearn_loss
from jirl.losses.mle import mle_loss

LossFn = Callable[..., Any]

_REGISTRY: dict[str, LossFn] = {"mle": mle_loss, "iqlearn": iqlearn_loss}
# Keyword arguments that are call-time inputs, not options.
_CALL_ARGS = frozenset({"policy_logits", "policy_batch"})


def names() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def options(name: str) -> dict[str, Any]:
    """The options `name` accepts, with their defaults."""
    fn = _lookup(name)
    return {
        p.name: p.default
        for p in inspect.signature(fn).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in _CALL_ARGS
    }


def get(name: str, **opts: Any) -> LossFn:
    """Returns `loss_fn(logits_BTV, batch, **call_args) -> (loss, metrics)` with `opts` bound."""
    accepted = options(name)
    unknown = sorted(set(opts) - set(accepted))
    if unknown:
        raise ValueError(f"loss '{name}' has no option(s) {unknown}; accepted options: {sorted(accepted)}.")
    return functools.partial(_lookup(name), **opts)


def _lookup(name: str) -> LossFn:
    if name not in _REGISTRY:
        raise ValueError(f"unknown loss '{name}'; accepted: {list(names())}.")
    return _REGISTRY[name]


__all__ = ["get", "names", "options", "mle_loss", "iqlearn_loss"]
