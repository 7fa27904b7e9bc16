"""Diversity of sampled generations: self-BLEU, distinct-n and mean next-token entropy.

Host-side Python/NumPy: these run once per evaluation on decoded samples, never under `jit`.
"""

from collections.abc import Sequence

import numpy as np
from sacrebleu.metrics import BLEU

_sentence_bleu: BLEU | None = None


def _bleu() -> BLEU:
    global _sentence_bleu
    if _sentence_bleu is None:
        # Sentence-level BLEU as `sacrebleu.sentence_bleu` computes it: exponential smoothing
        # and effective order, so short samples without 4-gram matches still score above 0.
        _sentence_bleu = BLEU(smooth_method="exp", effective_order=True)
    return _sentence_bleu


def self_bleu(samples_per_prompt: Sequence[Sequence[str]]) -> float:
    """Mean self-BLEU on sacrebleu's 0-100 scale; higher means less diverse.

    self-BLEU = mean_prompts mean_i BLEU(s_i; {s_j : j != i}), the sentence BLEU of each of a
    prompt's K samples against the other K - 1 as references (sacrebleu, 13a tokenizer, "exp"
    smoothing, effective order). Every prompt needs K >= 2 samples.
    """
    if not samples_per_prompt:
        raise ValueError("samples_per_prompt is empty; it needs at least one prompt with K >= 2 samples.")
    metric = _bleu()
    per_prompt = []
    for p, samples in enumerate(samples_per_prompt):
        if isinstance(samples, str):
            raise ValueError(
                f"samples_per_prompt[{p}] is a string; each prompt needs a list of K >= 2 samples."
            )
        k = len(samples)
        if k < 2:
            raise ValueError(f"samples_per_prompt[{p}] has K={k} samples; self-BLEU needs K >= 2 per prompt.")
        scores = [
            metric.sentence_score(samples[i], [samples[j] for j in range(k) if j != i]).score
            for i in range(k)
        ]
        per_prompt.append(sum(scores) / k)
    return float(sum(per_prompt) / len(per_prompt))


def distinct_n(texts: Sequence[str], n: int) -> float:
    """distinct-n = |unique n-grams| / |n-grams| over all texts; 0 when there are no n-grams.

    Tokens are `str.split()` (whitespace) tokens, case and punctuation kept; n-grams never cross
    text boundaries, and uniqueness is over the union of all texts.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n is {n!r}; distinct-n needs an integer n >= 1.")
    if isinstance(texts, str):
        raise ValueError("texts is a single string; distinct-n needs a list of strings.")
    unique: set[tuple[str, ...]] = set()
    total = 0
    for text in texts:
        tokens = text.split()
        ngrams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
        total += len(ngrams)
        unique.update(ngrams)
    return len(unique) / total if total else 0.0


def mean_token_entropy(entropies_per_token: Sequence[Sequence[float]] | np.ndarray) -> float:
    """Mean over all generated tokens of H_t = -sum_v p_t(v) log p_t(v), in nats.

    `entropies_per_token[b]` holds the per-token entropies of sequence b (ragged lists or 1-D
    arrays, or one 2-D array of equal-length rows), as the sampler reports them; padding must
    already be dropped. The mean is over tokens, not sequences, so long samples weigh more.
    Accumulates in float64; 0 when there are no tokens.
    """
    total = 0.0
    count = 0
    for b, row in enumerate(entropies_per_token):
        row_T = np.asarray(row, dtype=np.float64)
        if row_T.ndim != 1:
            raise ValueError(
                f"entropies_per_token[{b}] has shape {row_T.shape}; each sequence must be a 1-D list of"
                " per-token entropies."
            )
        total += float(row_T.sum())
        count += row_T.size
    return total / count if count else 0.0
