"""Paired bootstrap over prompts: a known difference recovered, coverage, width, determinism, seeds."""

import numpy as np
import pytest

from jirl.evaluation import paired


def _systems(n, difference, seed=0):
    """0/1 per-prompt scores of A (right with p 0.5) and B (right with p 0.5 + difference)."""
    rng = np.random.default_rng(seed)
    u = rng.random(n)  # shared per-prompt difficulty: the pairing matters
    return (u < 0.5).astype(float), (u < 0.5 + difference).astype(float)


def test_a_known_difference_is_recovered_and_covered():
    a, b = _systems(2000, 0.1)
    result = paired.paired_bootstrap(a, b, resamples=2000)
    assert result["n"] == 2000
    assert result["mean_difference"] == pytest.approx(np.mean(b - a))
    assert result["low"] < 0.1 < result["high"]
    assert result["low"] < result["mean_difference"] < result["high"]
    assert abs(result["mean_difference"] - 0.1) < 0.03


def test_the_interval_covers_the_true_difference_in_most_repeats():
    covered = 0
    for seed in range(40):
        a, b = _systems(200, 0.1, seed=seed)
        result = paired.paired_bootstrap(a, b, resamples=500, seed=seed)
        covered += result["low"] <= 0.1 <= result["high"]
    assert covered >= 33  # nominal 95%: 38 of 40 expected


def test_the_interval_shrinks_with_more_prompts():
    widths = []
    for n in (100, 400, 1600):
        result = paired.paired_bootstrap(*_systems(n, 0.1), resamples=1000)
        widths.append(result["high"] - result["low"])
    assert widths[0] > widths[1] > widths[2]
    assert widths[0] / widths[2] == pytest.approx(4.0, rel=0.35)  # ~ 1 / sqrt(n)


def test_deterministic_for_a_seed():
    rng = np.random.default_rng(0)
    a, b = rng.random(300), rng.random(300)  # continuous scores: the interval ends move with the seed
    assert paired.paired_bootstrap(a, b, seed=3) == paired.paired_bootstrap(a, b, seed=3)
    assert paired.paired_bootstrap(a, b, seed=3) != paired.paired_bootstrap(a, b, seed=4)
    assert paired.paired_bootstrap(a, a)["low"] == paired.paired_bootstrap(a, a)["high"] == 0.0


def test_the_seeds_variant_averages_seeds_per_prompt():
    rng = np.random.default_rng(0)
    a_runs = [rng.random(50) for _ in range(3)]
    b_runs = [rng.random(50) + 0.2 for _ in range(2)]
    got = paired.paired_bootstrap_seeds(a_runs, b_runs, resamples=500, seed=1)
    expected = paired.paired_bootstrap(np.mean(a_runs, 0), np.mean(b_runs, 0), resamples=500, seed=1)
    assert got == expected
    assert got["mean_difference"] == pytest.approx(np.mean(b_runs) - np.mean(a_runs))


def test_seeds_and_prompts_equals_the_prompt_bootstrap_when_every_seed_agrees():
    a, b = _systems(300, 0.1)
    one = paired.paired_bootstrap(a, b, resamples=2000, seed=2)
    both = paired.seeds_and_prompts_bootstrap([a, a, a], [b, b], resamples=2000, seed=2)
    assert both["mean_difference"] == pytest.approx(one["mean_difference"])
    assert both["low"] == pytest.approx(one["low"], abs=0.01)
    assert both["high"] == pytest.approx(one["high"], abs=0.01)


def test_seeds_and_prompts_widens_with_the_spread_between_seeds():
    """B's seeds are A plus an offset of 0.1 +- 0.1 (seed to seed): the prompt-only interval misses the
    seed spread, the two-level one holds it (its width near 2 x 1.96 x 0.1 / sqrt(3) from the seeds)."""
    rng = np.random.default_rng(0)
    a = rng.random(500)
    offsets = (0.0, 0.1, 0.2)
    b_runs = [a + o for o in offsets]
    prompts = paired.paired_bootstrap_seeds([a], b_runs, resamples=2000)
    both = paired.seeds_and_prompts_bootstrap([a], b_runs, resamples=2000)
    assert prompts["high"] - prompts["low"] < 1e-9  # every prompt moved by the same mean offset
    assert both["mean_difference"] == pytest.approx(0.1)
    assert both["low"] < 0.05 and both["high"] > 0.15
    # a numpy reference of the seed level alone: the mean of 3 offsets drawn with replacement
    draws = rng.choice(offsets, (20000, 3)).mean(axis=1)
    ref_low, ref_high = np.percentile(draws, [2.5, 97.5])
    assert both["low"] == pytest.approx(ref_low, abs=0.02)
    assert both["high"] == pytest.approx(ref_high, abs=0.02)


def test_seeds_and_prompts_refuses_mismatched_runs():
    with pytest.raises(ValueError, match="each needs at least one"):
        paired.seeds_and_prompts_bootstrap([np.zeros(3)], [])
    with pytest.raises(ValueError, match="same length"):
        paired.seeds_and_prompts_bootstrap([np.zeros(3)], [np.zeros(4)])


@pytest.mark.parametrize(
    "a, b, message",
    [
        ([1.0, 0.0], [1.0], r"same length, got shapes \(2,\) and \(1,\)"),
        ([], [], r"non-empty"),
    ],
)
def test_bad_inputs_are_one_sentence(a, b, message):
    with pytest.raises(ValueError, match=message):
        paired.paired_bootstrap(a, b)


def test_the_seeds_variant_refuses_mismatched_runs():
    with pytest.raises(ValueError, match="each needs at least one"):
        paired.paired_bootstrap_seeds([], [np.zeros(3)])
    with pytest.raises(ValueError, match="same length"):
        paired.paired_bootstrap_seeds([np.zeros(3)], [np.zeros(4)])
