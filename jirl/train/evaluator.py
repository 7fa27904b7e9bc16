"""A run's periodic evaluation: the objective's loss on held-out batches, answer accuracy by decoding."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from jirl import data, sharding
from jirl.evaluation.task_eval import answer_accuracy_on_split
from jirl.experiment import Run
from jirl.train.step import make_eval_step


def mean_metrics(records: list[dict[str, Any]]) -> dict[str, float]:
    """Token-weighted mean of per-batch metrics (tokens summed)."""
    weights = np.array([float(r["tokens"]) for r in records])
    out = {}
    for key in records[0]:
        values = np.array([float(r[key]) for r in records])
        out[key] = (
            float(values.sum())
            if key == "tokens"
            else float((values * weights).sum() / max(weights.sum(), 1))
        )
    return out


class Evaluator:
    """`loss(params)`: eval_* metrics over `eval.loss_batches` batches of the eval split;
    `answers(params)`: greedy (or `eval.temperature`) answer accuracy on `eval.num_examples` prompts."""

    def __init__(self, run: Run, graphdef: Any, batch_args: dict[str, Any]):
        self.run, self.graphdef, self.batch_args = run, graphdef, batch_args
        self.eval_step = make_eval_step(graphdef, run.objective, head=run.head)

    @property
    def measures_answers(self) -> bool:
        """Whether the task is graded by `#### N` answers (other task metrics: `jirl eval`)."""
        return self.run.task.metric == "answer_accuracy"

    def loss(self, params: Any) -> dict[str, float]:
        run = self.run
        batches = data.make_batches(
            run.task, run.eval_split, seed=0, shuffle=False, num_epochs=1, **self.batch_args
        )
        records = []
        for _, batch in zip(range(run.config.eval.loss_batches), batches):
            data.pop_stats(batch)
            records.append(
                jax.device_get(self.eval_step(params, sharding.shard_batch(batch, run.mesh, run.rules)))
            )
        return {f"eval_{k}": v for k, v in mean_metrics(records).items()}

    def answers(self, params: Any) -> dict[str, Any]:
        run, cfg = self.run, self.run.config.eval
        if jax.process_count() > 1:  # decode on each host from a full copy (small models)
            params = multihost_utils.process_allgather(params, tiled=True)
        return answer_accuracy_on_split(
            self.graphdef,
            params,
            run.task,
            run.tokenizer,
            data_dir=run.data_dir,
            split=run.eval_split,
            num_examples=cfg.num_examples,
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            task_config=run.config.task.config,
        )
