"""Translation (WMT-style sentence pairs), MLE or IQLearn; the task config is the direction SRC-TGT.

Prepare once from parallel files (train.de + train.en, dev.*, test.*) or JSON lines with
{"translation": {"de": ..., "en": ...}}, then train:
  jirl prepare --task wmt --task_config de-en --source PATH/TO/wmt
  jirl train --config experiments/translate.py:iqlearn --workdir runs/wmt_iqlearn
(other directions: --config.task.config=en-de after preparing that config). BLEU and ChrF are
computed by `jirl eval`.
"""

from ml_collections import ConfigDict

from jirl.experiment import base_config


def get_config(objective: str = "iqlearn") -> ConfigDict:
    config = base_config(dict(name="wmt", config="de-en", seq_len=256, source=""), objective)
    config.tokenizer.update(kind="sentencepiece", vocab_size=8000)
    config.model.update(vocab_size=-1)
    config.eval.update(max_new_tokens=128)
    return config
