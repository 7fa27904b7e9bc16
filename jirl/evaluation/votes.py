"""Answers over K samples per prompt: pass@k (unbiased), majority vote, and correct counts per prompt.

Host-side NumPy on decoded samples of `#### N` answer tasks (GSM8K-style); never under `jit`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from jirl.data.answers import extract_answer


def correct_per_prompt(samples_per_prompt: Sequence[Sequence[str]], references: Sequence[str]) -> list[int]:
    """How many of each prompt's samples have an extracted answer equal to the prompt's reference."""
    _check_pairs(samples_per_prompt, references)
    return [
        sum(extract_answer(s) is not None and extract_answer(s) == r for s in samples)
        for samples, r in zip(samples_per_prompt, references)
    ]


def pass_at_k(num_samples: Any, num_correct: Any, k: int) -> float:
    """Mean over prompts of the unbiased pass@k = 1 - C(n - c, k) / C(n, k) (Chen et al. 2021).

    num_samples n and num_correct c are per-prompt counts (arrays, or a scalar n shared by all
    prompts): the chance that at least one of k samples drawn without replacement from a prompt's
    n is right. Computed as 1 - prod_{i=n-c+1}^{n} (1 - k / i), which never forms a binomial.
    """
    c = np.atleast_1d(np.asarray(num_correct))
    n = np.broadcast_to(np.asarray(num_samples), c.shape)
    if c.size == 0:
        raise ValueError("num_correct is empty; pass@k needs the counts of at least one prompt.")
    if np.any(c < 0) or np.any(c > n):
        raise ValueError(f"num_correct={c.tolist()} must lie in [0, num_samples={n.tolist()}] per prompt.")
    if k < 1 or np.any(k > n):
        raise ValueError(f"k={k} must be at least 1 and at most num_samples={int(n.min())}.")
    per_prompt = [
        1.0 if ni - ci < k else 1.0 - float(np.prod(1.0 - k / np.arange(ni - ci + 1, ni + 1)))
        for ni, ci in zip(n.tolist(), c.tolist())
    ]
    return float(np.mean(per_prompt))


def majority_vote(answers_per_prompt: Sequence[Sequence[str]], references: Sequence[str]) -> float:
    """Fraction of prompts whose most frequent extracted answer equals the reference.

    answers_per_prompt[p] holds prompt p's sampled responses; answers are `extract_answer`'s. A
    sample without an answer (None) does not vote; a tie goes to the answer that appears first
    among the samples; a prompt with no answers at all counts as wrong. An empty list scores 0.
    """
    _check_pairs(answers_per_prompt, references)
    right = 0
    for samples, reference in zip(answers_per_prompt, references):
        counts: dict[str, int] = {}  # insertion order = order of first appearance
        for sample in samples:
            answer = extract_answer(sample)
            if answer is not None:
                counts[answer] = counts.get(answer, 0) + 1
        if counts:
            top = max(counts.values())
            right += next(a for a, count in counts.items() if count == top) == reference
    return right / len(references) if references else 0.0


def answer_report(samples_per_prompt: Sequence[Sequence[str]], references: Sequence[str]) -> dict[str, Any]:
    """correct_per_prompt, majority_vote and pass_at_k ({"k": value} for k in {1, K // 2, K}) of K
    samples per prompt (every prompt has the same K >= 1)."""
    correct = correct_per_prompt(samples_per_prompt, references)
    k_max = len(samples_per_prompt[0]) if samples_per_prompt else 0
    if not correct or k_max < 1 or any(len(s) != k_max for s in samples_per_prompt):
        raise ValueError("answer_report needs at least one prompt and the same K >= 1 samples per prompt.")
    return dict(
        correct_per_prompt=correct,
        majority_vote=majority_vote(samples_per_prompt, references),
        pass_at_k={str(k): pass_at_k(k_max, correct, k) for k in sorted({1, k_max // 2, k_max} - {0})},
    )


def _check_pairs(samples_per_prompt: Sequence[Sequence[str]], references: Sequence[str]) -> None:
    if len(samples_per_prompt) != len(references):
        raise ValueError(
            f"{len(samples_per_prompt)} prompts of samples but {len(references)} references; "
            "they must have the same length."
        )
    if any(isinstance(s, str) for s in samples_per_prompt):
        raise ValueError("each prompt needs a list of samples, not a single string.")
