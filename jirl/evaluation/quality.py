"""Text-quality metrics of predictions against references: ROUGE, BLEU, chrF and a registry by task kind.

Host-side Python: these run once per evaluation on decoded strings, never under `jit`.
"""

import re

import sacrebleu

from jirl.data.answers import answer_accuracy

ROUGE_TYPES = ("rouge1", "rouge2", "rougeLsum")
TASK_METRIC_KINDS = ("answer_accuracy", "rouge", "bleu")

# A sentence ends at `.`, `!` or `?` followed by whitespace, or at a line break.
_SENTENCE_END_RE = re.compile(r"(?<=[.!?])\s+|\s*\n\s*")

_scorer = None


def _rouge_scorer():
    global _scorer
    if _scorer is None:
        # Imported here: rouge_score imports nltk, which takes over a second. Its Porter stemmer
        # needs no nltk data, and rougeLsum reads sentences from line breaks, not `sent_tokenize`.
        from rouge_score import rouge_scorer

        _scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    return _scorer


def _check_lengths(predictions: list[str], references: list[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(
            f"predictions has {len(predictions)} items but references has"
            f" {len(references)}; they must have the same length."
        )


def split_sentences(text: str) -> str:
    """`text` with one sentence per line, split after `.`/`!`/`?` + whitespace and at line breaks.

    A regex stand-in for `nltk.sent_tokenize` (which needs a data download); rougeLsum reads
    sentences as lines.
    """
    return "\n".join(s for s in _SENTENCE_END_RE.split(text.strip()) if s)


def rouge(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Mean ROUGE-1, ROUGE-2 and ROUGE-Lsum F-measures, each in [0, 1].

    F = 2 P R / (P + R) per example with P = overlap / |prediction n-grams|, R = overlap /
    |reference n-grams| (clipped n-gram counts; LCS unions over sentences for Lsum), Porter-stemmed
    lowercase alphanumeric tokens (`rouge_score` with `use_stemmer=True`), then averaged over examples.
    Sentences for Lsum come from `split_sentences`. An empty list scores 0.
    """
    _check_lengths(predictions, references)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    if not predictions:
        return totals
    scorer = _rouge_scorer()
    for prediction, reference in zip(predictions, references):
        # score(target, prediction): the reference comes first.
        scores = scorer.score(split_sentences(reference), split_sentences(prediction))
        for key in ROUGE_TYPES:
            totals[key] += scores[key].fmeasure
    return {key: total / len(predictions) for key, total in totals.items()}


def bleu(predictions: list[str], references: list[str]) -> float:
    """Corpus BLEU on sacrebleu's 0-100 scale, one reference per prediction.

    BLEU = 100 * BP * exp(mean_{n=1..4} log p_n), p_n the corpus-level clipped n-gram precision and
    BP = min(1, exp(1 - ref_len / hyp_len)); sacrebleu defaults (13a tokenizer, no smoothing, case
    sensitive), so a corpus without any matching 4-gram scores 0. An empty list scores 0.
    """
    _check_lengths(predictions, references)
    if not predictions:
        return 0.0
    return float(sacrebleu.corpus_bleu(predictions, [references]).score)


def chrf(predictions: list[str], references: list[str]) -> float:
    """Corpus chrF on sacrebleu's 0-100 scale, one reference per prediction.

    chrF = 100 * (1 + beta^2) P R / (beta^2 P + R) with beta = 2, P and R the character n-gram
    (n = 1..6) precision and recall averaged over n (sacrebleu defaults). An empty list scores 0.
    """
    _check_lengths(predictions, references)
    if not predictions:
        return 0.0
    return float(sacrebleu.corpus_chrf(predictions, [references]).score)


def task_metrics(kind: str, predictions: list[str], references: list[str]) -> dict[str, float]:
    """The metrics of one task kind.

    "answer_accuracy" -> {"answer_accuracy"} in [0, 1]; "rouge" -> {"rouge1", "rouge2", "rougeLsum"}
    in [0, 1]; "bleu" -> {"bleu", "chrf"} on the 0-100 scale.
    """
    if kind not in TASK_METRIC_KINDS:
        raise ValueError(
            f"Unknown task metric kind {kind!r}; accepted kinds are {', '.join(TASK_METRIC_KINDS)}."
        )
    _check_lengths(predictions, references)
    if kind == "answer_accuracy":
        return {"answer_accuracy": answer_accuracy(predictions, references)}
    if kind == "rouge":
        return rouge(predictions, references)
    return {"bleu": bleu(predictions, references), "chrf": chrf(predictions, references)}
