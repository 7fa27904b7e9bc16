"""Rank statistics on the host (NumPy, no SciPy): Spearman correlation and ROC curves / AUC."""

from __future__ import annotations

import numpy as np


def average_ranks(x) -> np.ndarray:
    """Ranks 1..n of `x`, ties sharing their mean rank."""
    x = np.asarray(x, np.float64)
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(1, len(x) + 1)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]


def spearman(x, y) -> float:
    """Pearson correlation of the tie-averaged ranks."""
    rx, ry = average_ranks(x), average_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = np.sqrt((rx**2).sum() * (ry**2).sum())
    return float((rx * ry).sum() / denom) if denom > 0 else float("nan")


def roc_auc(scores_normal, scores_abnormal) -> float:
    """P(score_abnormal > score_normal) + 0.5 P(tie): the area under the ROC curve (Mann-Whitney U)."""
    normal, abnormal = np.asarray(scores_normal, np.float64), np.asarray(scores_abnormal, np.float64)
    if len(normal) == 0 or len(abnormal) == 0:
        raise ValueError("ROC-AUC needs at least one normal and one abnormal score.")
    ranks = average_ranks(np.concatenate([normal, abnormal]))
    u = ranks[len(normal) :].sum() - len(abnormal) * (len(abnormal) + 1) / 2
    return float(u / (len(normal) * len(abnormal)))


def roc_curve(scores_normal, scores_abnormal) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) as the threshold falls through every score."""
    normal, abnormal = np.asarray(scores_normal, np.float64), np.asarray(scores_abnormal, np.float64)
    thresholds = np.unique(np.concatenate([normal, abnormal]))[::-1]
    fpr = np.array([0.0] + [(normal >= t).mean() for t in thresholds])
    tpr = np.array([0.0] + [(abnormal >= t).mean() for t in thresholds])
    return fpr, tpr
