"""The `#### N` final-answer format of GSM8K-style tasks: extraction and accuracy, as GSM8K's grader does."""

import re

_ANSWER_RE = re.compile(r"#### (\-?[0-9\.\,]+)")


def extract_answer(text: str) -> str | None:
    """The number after the first `#### `, commas removed; None when absent."""
    match = _ANSWER_RE.search(text)
    if match is None:
        return None
    return match.group(1).strip().replace(",", "")


def answer_accuracy(predictions: list[str], references: list[str]) -> float:
    """Fraction of predictions whose extracted answer equals the reference.

    A prediction without a `#### N` line counts as wrong. An empty list scores 0.
    """
    if len(predictions) != len(references):
        raise ValueError(
            f"predictions has {len(predictions)} items but references has"
            f" {len(references)}; they must have the same length."
        )
    if not predictions:
        return 0.0
    correct = sum(extract_answer(p) == r for p, r in zip(predictions, references))
    return correct / len(predictions)
