"""Task metrics."""

from jirl.evaluation.answers import answer_accuracy, extract_answer

__all__ = ["answer_accuracy", "extract_answer"]
