"""Summarisation: XSum (`xsum`, the default) or Reddit TL;DR (`tldr`), MLE or IQLearn.

Prepare once from the downloaded files, then train; the argument is TASK,OBJECTIVE:
  jirl prepare --task xsum --source PATH/TO/xsum   # XSum-TRAINING-DEV-TEST-SPLIT-90-5-5.json + ID.data
  jirl train --config experiments/summarize.py:xsum,iqlearn --workdir runs/xsum_iqlearn
  jirl prepare --task tldr --source PATH/TO/tldr   # train.jsonl, valid.jsonl, test.jsonl
  jirl train --config experiments/summarize.py:tldr,mle --workdir runs/tldr_mle

Prompts longer than `task.seq_len` keep their end (the TL;DR: / Summary: cue); the metrics count the
truncated examples. ROUGE is computed by `jirl eval`.
"""

from ml_collections import ConfigDict

from jirl.experiment import base_config

TASKS = ("xsum", "tldr")


def get_config(arg: str = "xsum,iqlearn") -> ConfigDict:
    task, _, objective = arg.partition(",")
    if task not in TASKS:
        raise ValueError(f"unknown summarisation task '{task}'; accepted: {list(TASKS)}.")
    config = base_config(dict(name=task, seq_len=512, source=""), objective or "iqlearn")
    config.tokenizer.update(kind="sentencepiece", vocab_size=8000)
    config.model.update(vocab_size=-1, max_len=512)
    config.eval.update(max_new_tokens=64)
    return config
