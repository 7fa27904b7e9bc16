"""Tokenizers, tasks (generated and local), TFDS builders and the grain input pipeline."""

from jirl.data.answers import answer_accuracy, extract_answer
from jirl.data.arith import Problem, check_rationale, make_problem
from jirl.data.pipeline import (
    eval_prompts,
    make_batches,
    pop_stats,
    tokenize_example,
    tokenize_seq2seq_example,
    truncate,
)
from jirl.data.registry import get_task, task_names
from jirl.data.tasks import Task
from jirl.data.tokenizer import (
    HF_ONLY_KEYS,
    ByteTokenizer,
    HFTokenizer,
    SentencePieceTokenizer,
    Tokenizer,
    check_tokenizer_block,
    check_vocab,
    get_tokenizer,
    stop_ids,
    train_sentencepiece,
)
from jirl.data.vocabulary import make_tokenizer, task_sentencepiece

__all__ = [
    "HF_ONLY_KEYS",
    "ByteTokenizer",
    "HFTokenizer",
    "Problem",
    "SentencePieceTokenizer",
    "Task",
    "Tokenizer",
    "answer_accuracy",
    "check_rationale",
    "check_tokenizer_block",
    "check_vocab",
    "eval_prompts",
    "extract_answer",
    "get_task",
    "get_tokenizer",
    "make_batches",
    "make_problem",
    "make_tokenizer",
    "pop_stats",
    "stop_ids",
    "task_names",
    "task_sentencepiece",
    "tokenize_example",
    "tokenize_seq2seq_example",
    "train_sentencepiece",
    "truncate",
]
