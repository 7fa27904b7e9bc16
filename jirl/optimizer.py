"""The optimizer from config: AdamW with linear warmup + cosine decay and global-norm clipping."""

from __future__ import annotations

from typing import Any

import jax
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


def make_optimizer(cfg: Any) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """(optimizer, schedule) from the `train` config block."""
    schedule = learning_rate_schedule(cfg)
    tx = optax.chain(
        optax.clip_by_global_norm(float(cfg.grad_clip)),
        optax.adamw(
            schedule,
            b1=float(cfg.b1),
            b2=float(cfg.b2),
            weight_decay=float(cfg.weight_decay),
            mask=_decay_mask,
        ),
    )
    return tx, schedule
