"""Extracted rewards: per-token values against the model's full logits, rank correlation, best-of-N."""

import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jirl import models
from jirl.data import ByteTokenizer, tokenize_example
from jirl.evaluation import rewards


@pytest.fixture(scope="module")
def tiny():
    return models.split(models.create(models.get_config("tiny"), seed=3))


def _lse(z):
    return z.max() + np.log(np.exp(z - z.max()).sum())


@pytest.mark.parametrize("gamma", [1.0, 0.8])
def test_scores_equal_a_float64_recomputation_from_the_logits(tiny, gamma):
    graphdef, params = tiny
    tok = ByteTokenizer()
    pairs = [("2+2=?\n", "4"), ("Name a colour.\n", "blue sky"), ("x\n", "")]
    scored = rewards.score(graphdef, params, tok, pairs, gamma=gamma, batch_size=2)
    for (prompt, response), got in zip(pairs, scored):
        ex = tokenize_example(prompt, response, tok)
        logits = np.asarray(models.apply(graphdef, params, jnp.asarray(ex["inputs"])[None]))[0].astype(
            np.float64
        )
        steps = np.flatnonzero(ex["loss_mask"])
        assert len(got["token_rewards"]) == len(steps) == len(tok.encode(response)) + 1  # EOS included
        expected_r, expected_logp = [], []
        for i, t in enumerate(steps):
            q, v = logits[t, ex["targets"][t]], _lse(logits[t])
            v_next = _lse(logits[t + 1]) if i + 1 < len(steps) else 0.0  # EOS ends the episode
            expected_r.append(q - gamma * v_next)
            expected_logp.append(q - v)
        np.testing.assert_allclose(got["token_rewards"], expected_r, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(got["token_log_probs"], expected_logp, rtol=1e-4, atol=1e-4)
        discounts = gamma ** np.arange(len(steps))
        np.testing.assert_allclose(got["reward"], np.sum(discounts * expected_r), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(got["log_likelihood"], np.sum(expected_logp), rtol=1e-4, atol=1e-4)


def test_too_long_pair_is_refused(tiny):
    graphdef, params = tiny
    with pytest.raises(ValueError, match="pair 0 has .* tokens, more than the model's maximum length 256"):
        rewards.score(graphdef, params, ByteTokenizer(), [("a" * 300, "b")])


def test_spearman_matches_scipy_with_ties():
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 4, 30).astype(float), rng.normal(size=30)
    np.testing.assert_allclose(rewards.spearman(x, y), stats.spearmanr(x, y).statistic)
    assert np.isnan(rewards.spearman([1, 1, 1], [1, 2, 3]))
    with pytest.raises(ValueError, match="same length >= 2"):
        rewards.spearman([1, 2], [1, 2, 3])


def test_best_of_n_picks_by_each_score():
    metric = [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]
    reward = [[0.1, 0.9, 0.2], [0.0, 0.5, 0.1]]  # right on prompt 0, wrong on prompt 1
    loglik = [[-1.0, -2.0, -3.0], [-0.5, -1.0, -2.0]]  # wrong on prompt 0, right on prompt 1
    report = rewards.best_of_n(metric, reward, loglik, seed=0)
    assert report["reward"] == 0.5 and report["log_likelihood"] == 0.5
    assert report["oracle"] == 1.0 and report["mean"] == pytest.approx(1 / 3)
    assert report["random"] in (0.0, 0.5, 1.0)


def test_rerank_report_end_to_end(tiny):
    graphdef, params = tiny
    prompts = ["1+1=?\n", "3+4=?\n"]
    samples = [["2", "3", "11"], ["7", "8", "34"]]
    answers = ["2", "7"]
    report = rewards.rerank_report(
        graphdef, params, ByteTokenizer(), prompts, samples, lambda i, s: float(s == answers[i])
    )
    assert report["n"] == 3 and report["prompts"] == 2
    assert set(report["best_of_n"]) == {"reward", "log_likelihood", "random", "oracle", "mean"}
    assert report["best_of_n"]["oracle"] == 1.0 and report["best_of_n"]["mean"] == pytest.approx(1 / 3)
    assert -1.0 <= report["spearman_reward_metric"] <= 1.0


def test_rerank_report_ranks_prompts_by_their_mean_reward(tiny):
    """spearman_reward_metric_across_prompts: a prompt's mean R over its samples against its fraction of
    right samples, recomputed here from `score`."""
    graphdef, params = tiny
    prompts = ["1+1=?\n", "3+4=?\n", "2+2=?\n", "5+1=?\n"]
    samples = [["2", "3"], ["7", "8"], ["4", "4"], ["9", "0"]]
    answers = ["2", "7", "4", "6"]
    metric = lambda i, s: float(s == answers[i])  # noqa: E731
    report = rewards.rerank_report(graphdef, params, ByteTokenizer(), prompts, samples, metric, gamma=0.9)
    scored = rewards.score(
        graphdef, params, ByteTokenizer(), [(p, s) for p, g in zip(prompts, samples) for s in g], gamma=0.9
    )
    mean_reward = [np.mean([x["reward"] for x in scored[2 * i : 2 * i + 2]]) for i in range(4)]
    fraction_right = [np.mean([metric(i, s) for s in g]) for i, g in enumerate(samples)]
    expected = stats.spearmanr(mean_reward, fraction_right).statistic
    assert report["spearman_reward_metric_across_prompts"] == pytest.approx(expected, abs=1e-9)
