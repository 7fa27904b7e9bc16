"""Any JSON-lines data: name the prompt and response fields, MLE or IQLearn.

A folder of train/validation/test .jsonl files, or one .jsonl file (then every 20th example is held
out for validation). Name the dataset with task.config; it is prepared on the first run:
  jirl train --config experiments/jsonl.py:iqlearn --workdir runs/mydata \
      --config.task.source=PATH/TO/data.jsonl --config.task.config=mydata \
      --config.task.prompt_field=question --config.task.response_field=answer
Dotted field names reach nested objects (meta.answer). Rows {"messages": [{"role", "content"}, ...]}
are chat conversations, rendered with the checkpoint's chat template: add
--config.model.init_from=CHECKPOINT --config.tokenizer.kind=hf (jirl.data.chat).
"""

from ml_collections import ConfigDict

from jirl.experiment import base_config


def get_config(objective: str = "iqlearn") -> ConfigDict:
    task = dict(
        name="jsonl",
        config="default",
        seq_len=256,
        source="",
        prompt_field="prompt",
        response_field="response",
        reference_field="",
    )
    return base_config(task, objective)
