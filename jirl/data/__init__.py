"""Tokenizers, embedded tasks, TFDS builders and the grain input pipeline."""

from jirl.data.arith import Problem, check_rationale, make_problem
from jirl.data.pipeline import eval_prompts, make_batches, tokenize_example, truncate
from jirl.data.tasks import Task, get_task, task_names
from jirl.data.tokenizer import ByteTokenizer

__all__ = [
    "ByteTokenizer",
    "Problem",
    "Task",
    "check_rationale",
    "eval_prompts",
    "get_task",
    "make_batches",
    "make_problem",
    "task_names",
    "tokenize_example",
    "truncate",
]
