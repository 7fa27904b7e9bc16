"""Rank statistics against brute force: tie-averaged ranks, Spearman, ROC-AUC and the ROC curve."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jirl.irl import stats

scores = st.lists(st.integers(0, 6).map(float), min_size=1, max_size=12)


@settings(max_examples=60, deadline=None)
@given(scores, scores)
def test_auc_is_the_pairwise_win_rate(normal, abnormal):
    wins = [1.0 if b > a else 0.5 if b == a else 0.0 for a, b in itertools.product(normal, abnormal)]
    assert stats.roc_auc(normal, abnormal) == pytest.approx(np.mean(wins))


@settings(max_examples=40, deadline=None)
@given(scores, scores)
def test_roc_curve_area_is_the_auc(normal, abnormal):
    fpr, tpr = stats.roc_curve(normal, abnormal)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    area = np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2)  # trapezoids: ties count half
    assert area == pytest.approx(stats.roc_auc(normal, abnormal))


def test_average_ranks_and_spearman():
    np.testing.assert_array_equal(stats.average_ranks([10, 20, 20, 5]), [2, 3.5, 3.5, 1])
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=50), rng.normal(size=50)
    ranks = lambda v: np.argsort(np.argsort(v))
    assert stats.spearman(x, y) == pytest.approx(np.corrcoef(ranks(x), ranks(y))[0, 1])
    assert stats.spearman(x, np.exp(x)) == pytest.approx(1.0)
    assert stats.spearman([1, 1, 2, 2], [5, 5, 7, 7]) == pytest.approx(1.0)  # ties on both sides
    with pytest.raises(ValueError, match="at least one normal and one abnormal"):
        stats.roc_auc([], [1.0])
