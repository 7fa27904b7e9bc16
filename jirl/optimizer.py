"""The optimizer from config: AdamW with linear warmup + cosine decay and global-norm clipping, and
no update at all from a step that would leave anything non-finite.

`skip_nonfinite` wraps the chain. A step is skipped, leaving the parameters and the optimizer state as
they were, when its gradients, the updates, the parameters they lead to or the new optimizer state
hold a NaN or an infinity (the train step also makes every gradient NaN when the loss or the
gradient norm is not finite); each skip is counted (`nonfinite_streak`, `nonfinite_steps`). It is
`optax.apply_if_finite` judged on what the step produces, not only on the gradients it is given:
a finite gradient can still give non-finite parameters (weight decay at a huge learning rate
overflowing them) or an infinite second moment (a gradient whose square overflows). It never gives
up and applies such a step: the training loop stops the run after `train.max_nonfinite_steps`
consecutive skipped steps instead.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


def learning_rate_schedule(cfg: Any) -> optax.Schedule:
    """lr(step): 0 -> peak over `warmup_steps`, then cosine to `peak * end_lr_ratio` at `steps`."""
    warmup = min(int(cfg.warmup_steps), int(cfg.steps))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=float(cfg.learning_rate),
        warmup_steps=warmup,
        decay_steps=max(int(cfg.steps), warmup + 1),
        end_value=float(cfg.learning_rate) * float(cfg.end_lr_ratio),
    )


def _decay_mask(params: Any) -> Any:
    """Weight decay on weight matrices and embeddings, not on norm scales (names ending in 'norm')."""

    def decays(path, _):
        return not str(getattr(path[-1], "key", path[-1])).endswith("norm")

    return jax.tree_util.tree_map_with_path(decays, params)


class SkipNonFiniteState(NamedTuple):
    streak: jax.Array  # int32: consecutive skipped steps, up to the last one
    total: jax.Array  # int32: every skipped step
    inner_state: Any


def _all_finite(tree: Any) -> jax.Array:
    leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)]
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])) if leaves else jnp.array(True)


def skip_nonfinite(inner: optax.GradientTransformation) -> optax.GradientTransformation:
    """`inner`, with a step skipped (zero updates, the inner state kept) when its gradients, updates,
    resulting parameters or new inner state are not all finite."""

    def init(params):
        return SkipNonFiniteState(  # two arrays, not one twice: a donated state must not alias itself
            streak=jnp.zeros([], jnp.int32), total=jnp.zeros([], jnp.int32), inner_state=inner.init(params)
        )

    def update(grads, state, params=None):
        updates, inner_state = inner.update(grads, state.inner_state, params)
        finite = _all_finite(grads) & _all_finite(updates) & _all_finite(inner_state)
        if params is not None:
            finite &= _all_finite(optax.apply_updates(params, updates))
        keep = lambda new, old: jnp.where(finite, new, old)  # noqa: E731
        return jax.tree.map(lambda u: jnp.where(finite, u, 0), updates), SkipNonFiniteState(
            streak=jnp.where(finite, 0, state.streak + 1),
            total=state.total + jnp.where(finite, 0, 1),
            inner_state=jax.tree.map(keep, inner_state, state.inner_state),
        )

    return optax.GradientTransformation(init, update)


def make_optimizer(cfg: Any) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """(optimizer, schedule) from the `train` config block; `grad_clip` <= 0 turns clipping off."""
    schedule = learning_rate_schedule(cfg)
    clip = float(cfg.grad_clip)
    adamw = optax.chain(
        optax.clip_by_global_norm(clip) if clip > 0 else optax.identity(),
        optax.adamw(
            schedule,
            b1=float(cfg.b1),
            b2=float(cfg.b2),
            weight_decay=float(cfg.weight_decay),
            mask=_decay_mask,
        ),
    )
    return skip_nonfinite(adamw), schedule


def nonfinite_counts(opt_state: Any) -> dict[str, Any]:
    """{nonfinite_streak: consecutive skipped steps, nonfinite_steps: all of them} of an optimizer
    state made by `make_optimizer`; {} for another optimizer's."""
    if not isinstance(opt_state, SkipNonFiniteState):
        return {}
    return {"nonfinite_streak": opt_state.streak, "nonfinite_steps": opt_state.total}
