"""Fine-tuning on the shifted arithmetic word problems (harder, newly phrased; few train examples).

The `arith` task's `shifted_*` configs draw from `jirl.data.arith.SHIFTED`: 2-3 operations rather
than 1-3, with story sentences, story kinds and rationale line phrasings that the broad `default`
config never uses. Pretrain on `default` (experiments/arith.py), then fine-tune here from that run
to watch a model overfit a small set:

  jirl train --config experiments/arith.py:mle --workdir runs/arith_mle
  jirl train --config experiments/arith_shifted.py:mle --workdir runs/shifted_mle \\
    --config.model.init_from=runs/arith_mle

N, the number of train examples, is the task config: `shifted_1000` (the default) or
`--config.task.config=shifted_5000`. Both have the same 500 validation and 500 test problems, so
results at the two N compare directly, and neither train set contains any of them (the 1000 are
the first 1000 of the 5000).
"""

from ml_collections import ConfigDict

from jirl.data import arith
from jirl.experiment import base_config

SEQ_LEN = 256  # the `small` model's max_len: every shifted example fits it whole
# [BOS] + the longest question + "\n" leaves this many new tokens: any shifted rationale and its EOS.
NEW_TOKENS = SEQ_LEN - 2 - arith.SHIFTED.max_question_chars


def get_config(objective: str = "iqlearn") -> ConfigDict:
    config = base_config(dict(name="arith", config="shifted_1000", seq_len=SEQ_LEN), objective)
    config.eval.max_new_tokens = NEW_TOKENS
    config.online.max_new_tokens = NEW_TOKENS
    return config
