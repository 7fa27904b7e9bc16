"""GSM8K (grade-school math, official jsonl files), MLE or IQLearn, graded by the `#### N` answer.

Prepare once from the downloaded train.jsonl / test.jsonl (or --catalog when online), then train:
  jirl prepare --task gsm8k --source PATH/TO/grade_school_math/data
  jirl train --config experiments/gsm8k.py:iqlearn --workdir runs/gsm8k_iqlearn

The tokenizer is a SentencePiece model trained on the training text on first use (8000 pieces).
From scratch, the `small` model learns the answer format, not the math; for real accuracy start from
a pretrained checkpoint. GSM8K has no validation split: evaluation uses `test`.
"""

from ml_collections import ConfigDict

from jirl.experiment import base_config


def get_config(objective: str = "iqlearn") -> ConfigDict:
    config = base_config(dict(name="gsm8k", seq_len=256, source=""), objective)
    config.tokenizer.update(kind="sentencepiece", vocab_size=8000)
    config.model.update(vocab_size=-1, max_len=256)  # -1: the tokenizer's vocabulary size
    config.eval.update(split="test", max_new_tokens=160)
    return config
