"""Rewards extracted from a trained model: per-token r_t and sequence R for (prompt, response) pairs,
their rank correlation with a task metric, and best-of-N reranking.

A model trained by IQLearn holds soft Q-values in its logits; its implicit reward of a response
token is r_t = Q_t - gamma V(s_{t+1}) (`jirl.losses.rewards`). Reranking N sampled responses by
R = sum_k gamma^k r_k is compared with reranking by log-likelihood and with a random pick.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx
from scipy import stats

from jirl import forward
from jirl.data.pipeline import tokenize_example, tokenize_seq2seq_example
from jirl.errors import ConfigError
from jirl.losses import rewards as reward_fns


@functools.partial(jax.jit, static_argnames=("graphdef", "gamma", "head"))
def _score_batch(
    graphdef: nnx.GraphDef, params: Any, batch: dict[str, jax.Array], gamma: float, head: forward.HeadOptions
):
    stats = forward.token_stats(graphdef, params, batch, head)
    r_BT = reward_fns.token_rewards(stats, batch, gamma=gamma)
    logp_BT = reward_fns.token_log_probs(stats, batch)
    return r_BT, logp_BT, reward_fns.sequence_rewards(r_BT, batch["loss_mask"], gamma=gamma)


def _length(example: dict[str, np.ndarray]) -> int:
    return max(len(example["inputs"]), len(example.get("encoder_inputs", ())))


def _pad(examples: list[dict[str, np.ndarray]], length: int) -> dict[str, np.ndarray]:
    """Right-padded rows (one example each); encoder inputs, when present, get segment ids."""
    batch = {
        k: np.zeros((len(examples), length), v.dtype) for k, v in examples[0].items() if k != "truncated"
    }
    for row, example in enumerate(examples):
        for k in batch:
            batch[k][row, : len(example[k])] = example[k]
    batch["positions"] = np.broadcast_to(np.arange(length, dtype=np.int32), (len(examples), length)).copy()
    if "encoder_inputs" in batch:
        lengths = np.array([len(e["encoder_inputs"]) for e in examples])
        batch["encoder_segment_ids"] = (np.arange(length) < lengths[:, None]).astype(np.int32)
    return batch


def score(
    graphdef: nnx.GraphDef,
    params: Any,
    tokenizer: Any,
    pairs: Sequence[tuple[str, str]],
    *,
    gamma: float = 1.0,
    batch_size: int = 32,
    head: forward.HeadOptions = forward.DEFAULT_HEAD,
) -> list[dict[str, Any]]:
    """For each (prompt, response): token rewards r_t and log pi_t over the response (EOS included),
    the sequence reward R and the log-likelihood sum_t log pi_t. head: as the run's `loss` block says."""
    config = nnx.merge(graphdef, params).config
    max_len = config.max_len
    if config.is_encoder_decoder:
        examples = [tokenize_seq2seq_example(p, r, tokenizer, config.decoder_start_id) for p, r in pairs]
    else:
        examples = [tokenize_example(p, r, tokenizer) for p, r in pairs]
    too_long = [i for i, e in enumerate(examples) if _length(e) > max_len]
    if too_long:
        raise ConfigError(
            f"pair {too_long[0]} has {_length(examples[too_long[0]])} tokens, more than the model's "
            f"maximum length {max_len}."
        )
    out = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        length = max(_length(e) for e in chunk)
        length = min(max_len, -(-length // 16) * 16)  # a few shapes, few compilations
        chunk = chunk + [chunk[-1]] * (batch_size - len(chunk)) if len(examples) > batch_size else chunk
        r_BT, logp_BT, reward_B = jax.device_get(
            _score_batch(graphdef, params, _pad(chunk, length), gamma, head)
        )
        for row in range(min(batch_size, len(examples) - start)):
            mask = chunk[row]["loss_mask"] > 0
            n = len(chunk[row]["inputs"])
            out.append(
                dict(
                    token_rewards=r_BT[row, :n][mask],
                    token_log_probs=logp_BT[row, :n][mask],
                    reward=float(reward_B[row]),
                    log_likelihood=float(logp_BT[row].sum()),
                )
            )
    return out


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties); nan when either side is constant."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.shape != y.shape or x.size < 2:
        raise ValueError(
            f"spearman needs two sequences of the same length >= 2, got {x.shape} and {y.shape}."
        )
    rx, ry = stats.rankdata(x), stats.rankdata(y)
    if np.std(rx) == 0 or np.std(ry) == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def best_of_n(
    metric_per_sample: Sequence[Sequence[float]],
    rewards: Sequence[Sequence[float]],
    log_likelihoods: Sequence[Sequence[float]],
    *,
    seed: int = 0,
) -> dict[str, float]:
    """Mean task metric of the sample chosen per prompt by highest R, highest log-likelihood, at random.

    Ties go to the earliest sample. `oracle` (the best sample) and `mean` (all samples) bound them.
    """
    rng = np.random.default_rng(seed)
    chosen: dict[str, list[float]] = {
        "reward": [],
        "log_likelihood": [],
        "random": [],
        "oracle": [],
        "mean": [],
    }
    for metric, reward, loglik in zip(metric_per_sample, rewards, log_likelihoods, strict=True):
        metric = np.asarray(metric, np.float64)
        chosen["reward"].append(metric[int(np.argmax(reward))])
        chosen["log_likelihood"].append(metric[int(np.argmax(loglik))])
        chosen["random"].append(metric[int(rng.integers(len(metric)))])
        chosen["oracle"].append(metric.max())
        chosen["mean"].append(metric.mean())
    return {k: float(np.mean(v)) for k, v in chosen.items()}


def rerank_report(
    graphdef: nnx.GraphDef,
    params: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    samples: Sequence[Sequence[str]],
    metric_of: Callable[[int, str], float],
    *,
    gamma: float = 1.0,
    head: forward.HeadOptions = forward.DEFAULT_HEAD,
    seed: int = 0,
) -> dict[str, Any]:
    """Scores N samples per prompt; Spearman(R, metric) over all samples and best-of-N by R / LL / random.

    metric_of(prompt_index, sample) -> the task metric of one sample (e.g. 1.0 if its answer is right).
    spearman_reward_metric_across_prompts ranks prompts: a prompt's mean R over its N samples against
    its mean metric (the fraction of right samples for answer accuracy); nan with fewer than 2 prompts.
    """
    pairs = [(p, s) for p, group in zip(prompts, samples) for s in group]
    scored = score(graphdef, params, tokenizer, pairs, gamma=gamma, head=head)
    metrics, rewards, logliks, i = [], [], [], 0
    for index, group in enumerate(samples):
        metrics.append([metric_of(index, s) for s in group])
        rewards.append([x["reward"] for x in scored[i : i + len(group)]])
        logliks.append([x["log_likelihood"] for x in scored[i : i + len(group)]])
        i += len(group)
    flat = lambda rows: [v for row in rows for v in row]  # noqa: E731
    return dict(
        n=len(samples[0]) if samples else 0,
        prompts=len(samples),
        spearman_reward_metric=spearman(flat(rewards), flat(metrics)),
        spearman_loglik_metric=spearman(flat(logliks), flat(metrics)),
        spearman_reward_metric_across_prompts=(
            spearman([np.mean(r) for r in rewards], [np.mean(m) for m in metrics])
            if len(samples) >= 2
            else float("nan")
        ),
        best_of_n=best_of_n(metrics, rewards, logliks, seed=seed),
    )
