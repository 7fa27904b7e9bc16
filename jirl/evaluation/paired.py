"""Paired comparison of two systems on the same prompts: mean difference with a bootstrap interval.

Host-side NumPy on per-prompt scores (e.g. 0/1 correctness, or a prompt's fraction of right
samples); the interval is the percentile bootstrap over prompts, resampled with replacement.
`seeds_and_prompts_bootstrap` resamples each system's training seeds too, so its interval holds
the spread between seeds as well as the prompts'.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

_CHUNK = 1000  # resamples drawn at a time, so memory stays at _CHUNK x prompts indices


def _interval(
    draw: Callable[[np.random.Generator, int], np.ndarray], resamples: int, seed: int, level: float
):
    """The `level` percentile interval (low, high) of `resamples` statistics, drawn `_CHUNK` at a time by
    draw(rng, count) -> [count] statistics."""
    if resamples < 1 or not 0 < level < 1:
        raise ValueError(f"resamples={resamples} must be at least 1 and level={level} in (0, 1).")
    rng = np.random.default_rng(seed)
    means = [draw(rng, min(_CHUNK, resamples - start)) for start in range(0, resamples, _CHUNK)]
    low, high = np.percentile(np.concatenate(means), [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high)


def _seed_runs(a_runs: Sequence[Any], b_runs: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """(A's runs [S_A, n], B's runs [S_B, n]) as float64, checked: a run at least on each side, every run
    a non-empty 1-D per-prompt score array of one length."""
    if not len(a_runs) or not len(b_runs):
        raise ValueError(f"a_runs has {len(a_runs)} and b_runs {len(b_runs)} seeds; each needs at least one.")
    runs = [np.asarray(r, np.float64) for r in (*a_runs, *b_runs)]
    if any(r.ndim != 1 or r.shape != runs[0].shape or r.size == 0 for r in runs):
        raise ValueError(
            f"every run must be a non-empty 1-D per-prompt score array of the same length, got shapes "
            f"{[r.shape for r in runs]}."
        )
    return np.stack(runs[: len(a_runs)]), np.stack(runs[len(a_runs) :])


def paired_bootstrap(
    a: Any, b: Any, *, resamples: int = 10_000, seed: int = 0, level: float = 0.95
) -> dict[str, Any]:
    """mean(b - a) over prompts and its `level` percentile-bootstrap interval (low, high), and n.

    a[i] and b[i] are the scores of systems A and B on prompt i (same prompts, same order); each
    resample draws n prompt indices with replacement and takes the mean difference on them.
    Deterministic for a seed.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 1 or a.shape != b.shape or a.size == 0:
        raise ValueError(
            f"a and b must be non-empty 1-D per-prompt scores of the same length, got shapes {a.shape} "
            f"and {b.shape}."
        )
    difference = b - a
    n = difference.size
    low, high = _interval(
        lambda rng, r: difference[rng.integers(0, n, (r, n))].mean(axis=1), resamples, seed, level
    )
    return dict(mean_difference=float(difference.mean()), low=low, high=high, n=int(n))


def paired_bootstrap_seeds(
    a_runs: Sequence[Any],
    b_runs: Sequence[Any],
    *,
    resamples: int = 10_000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """`paired_bootstrap` for several seeds per system: a_runs and b_runs are lists of per-prompt
    score arrays, one per seed (the seed counts may differ), all on the same prompts in the same order.

    The statistic per prompt is (mean over B's seeds) - (mean over A's seeds); the bootstrap
    resamples prompts only, not seeds, so the interval reflects prompt sampling with seed noise
    averaged out per prompt, not the spread between seeds.
    """
    a_SN, b_SN = _seed_runs(a_runs, b_runs)
    return paired_bootstrap(a_SN.mean(axis=0), b_SN.mean(axis=0), resamples=resamples, seed=seed, level=level)


def seeds_and_prompts_bootstrap(
    a_runs: Sequence[Any],
    b_runs: Sequence[Any],
    *,
    resamples: int = 10_000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """`paired_bootstrap_seeds` with the seeds resampled too (a two-level bootstrap).

    Each resample draws S_A of A's seeds and S_B of B's with replacement (independently: a seed is
    a training run, not a pairing), then n prompts with replacement (the same prompts for both),
    and takes mean_i [mean_{s in B's draw} b_s,i - mean_{s in A's draw} a_s,i]. The interval so
    reflects how much the comparison would move with other training seeds as well as other prompts;
    with one seed per system it is `paired_bootstrap_seeds`'s. mean_difference is the statistic on
    the data (every seed, every prompt).
    """
    a_SN, b_SN = _seed_runs(a_runs, b_runs)
    n = a_SN.shape[1]

    def draw(rng: np.random.Generator, r: int) -> np.ndarray:
        weights_a = rng.multinomial(len(a_SN), np.full(len(a_SN), 1 / len(a_SN)), r) / len(a_SN)  # [R, S_A]
        weights_b = rng.multinomial(len(b_SN), np.full(len(b_SN), 1 / len(b_SN)), r) / len(b_SN)
        difference_RN = weights_b @ b_SN - weights_a @ a_SN  # per prompt, over the drawn seeds
        return np.take_along_axis(difference_RN, rng.integers(0, n, (r, n)), axis=1).mean(axis=1)

    low, high = _interval(draw, resamples, seed, level)
    return dict(mean_difference=float(b_SN.mean() - a_SN.mean()), low=low, high=high, n=int(n))
