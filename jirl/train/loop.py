"""The training loop: data -> jitted step -> metrics, with periodic evaluation and a final report."""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from jirl import data, losses, models
from jirl.evaluation.task_eval import answer_accuracy_on_split
from jirl.train import plots
from jirl.train.checkpoint import Checkpointer, abstract
from jirl.train.metrics_writer import MetricsWriter
from jirl.train.optimizer import make_optimizer
from jirl.train.state import create_train_state
from jirl.train.step import check_batch, make_eval_step, make_train_step


def model_config(config: Any, tokenizer_vocab_size: int | None = None) -> models.ModelConfig:
    """The model of `config.model`; `vocab_size=-1` takes the tokenizer's vocabulary size."""
    overrides = {k: v for k, v in config.model.items() if k != "preset"}
    if overrides.get("vocab_size") == -1 and tokenizer_vocab_size is not None:
        overrides["vocab_size"] = tokenizer_vocab_size
    return models.get_config(config.model.preset, **overrides)


def loss_function(config: Any):
    opts = dict(config.loss)
    return losses.get(opts.pop("name"), **opts)


def _mean_metrics(records: list[dict[str, Any]]) -> dict[str, float]:
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


def train(config: Any, workdir: str, *, progress: bool = True) -> dict[str, Any]:
    """Trains as `config` says, writing metrics, plots and a summary to `workdir`; returns the summary."""
    model_config(config)  # a bad model config fails before any data work
    loss_fn = loss_function(config)
    task = data.get_task(config.task.name)
    data_dir = os.path.expanduser(config.task.data_dir)
    task_config = config.task.config
    eval_split = config.eval.get("split", "validation")
    if eval_split not in task.splits:
        raise ValueError(
            f"eval.split='{eval_split}' is not a split of task '{task.name}'; it has {list(task.splits)}."
        )
    fields = {
        k: config.task[k] for k in ("prompt_field", "response_field", "reference_field") if k in config.task
    }
    task.prepare(data_dir, task_config, config.task.get("source") or None, **fields)
    tokenizer = data.make_tokenizer(config.get("tokenizer"), task, data_dir, task_config)
    cfg_model = model_config(config, tokenizer.vocab_size)
    data.check_vocab(tokenizer, cfg_model.vocab_size)
    if config.task.seq_len > cfg_model.max_len:
        raise ValueError(
            f"task.seq_len={config.task.seq_len} exceeds the model's max_len={cfg_model.max_len}."
        )
    if int(config.train.steps) < 1 or int(config.train.log_every) < 1:
        raise ValueError(
            f"train.steps={config.train.steps} and train.log_every={config.train.log_every} "
            "must both be at least 1."
        )
    tx, schedule = make_optimizer(config.train)

    batch_args = dict(
        data_dir=data_dir,
        tokenizer=tokenizer,
        seq_len=config.task.seq_len,
        batch_size=config.train.batch_size,
        pack=config.task.pack,
        task_config=task_config,
    )
    train_batches = data.make_batches(
        task,
        "train",
        seed=config.train.seed,
        shuffle=True,
        worker_count=config.task.get("worker_count", 0),
        prefetch=config.task.get("prefetch", 0),
        **batch_args,
    )

    graphdef, state = create_train_state(cfg_model, tx, config.train.seed)
    checkpointer = Checkpointer(workdir, keep=int(config.checkpoint.keep))
    start_step = 0
    restored = checkpointer.restore_latest(abstract(state))
    if restored is not None:
        start_step, state, data_state = restored
        train_batches.set_state(data_state)
        print(f"jirl: resuming from the checkpoint at step {start_step}")
    with open(os.path.join(workdir, "config.json"), "w") as f:  # after the restore check
        f.write(config.to_json(indent=2))
    train_step = make_train_step(graphdef, loss_fn, tx, schedule)
    eval_step = make_eval_step(graphdef, loss_fn)
    # First step this run logs: 0 (the at-start evaluation) fresh, the step after the checkpoint resumed.
    writer = MetricsWriter(workdir, start_step=0 if restored is None else start_step + 1)

    def evaluate_loss(params) -> dict[str, float]:
        batches = data.make_batches(task, eval_split, seed=0, shuffle=False, num_epochs=1, **batch_args)
        records = []
        for _, batch in zip(range(config.eval.loss_batches), batches):
            data.pop_stats(batch)
            records.append(jax.device_get(eval_step(params, {k: jnp.asarray(v) for k, v in batch.items()})))
        return {f"eval_{k}": v for k, v in _mean_metrics(records).items()}

    def evaluate_answers(params) -> dict[str, Any]:
        return answer_accuracy_on_split(
            graphdef,
            params,
            task,
            tokenizer,
            data_dir=data_dir,
            split=eval_split,
            num_examples=config.eval.num_examples,
            max_new_tokens=config.eval.max_new_tokens,
            temperature=config.eval.temperature,
            task_config=task_config,
        )

    answers_metric = task.metric == "answer_accuracy"  # other task metrics: `jirl eval`
    summary: dict[str, Any] = {"workdir": os.path.abspath(workdir), "num_params": cfg_model.num_params()}
    if config.eval.at_start and start_step == 0 and answers_metric:
        summary["initial_answer_accuracy"] = evaluate_answers(state.params)["accuracy"]
        writer.write(0, {"eval_answer_accuracy": summary["initial_answer_accuracy"]})
        print(f"validation answer accuracy before training: {summary['initial_answer_accuracy']:.1%}")

    steps = int(config.train.steps)
    every = int(config.train.checkpoint_every)
    stop = _StopRequest()
    bar = tqdm(
        total=steps,
        initial=start_step,
        desc=f"train {config.loss.name}",
        disable=not progress,
        dynamic_ncols=True,
    )
    try:
        window_start, window_tokens = time.perf_counter(), 0.0
        window_examples, window_truncated = 0.0, 0.0
        step = start_step
        for step in range(start_step + 1, steps + 1):
            batch = next(train_batches)
            stats = data.pop_stats(batch)
            window_examples += stats["examples"]
            window_truncated += stats["truncated"]
            check_batch(batch, cfg_model.vocab_size)
            state, metrics = train_step(state, {k: jnp.asarray(v) for k, v in batch.items()})
            window_tokens += (
                float(np.sum(batch["segment_ids"] > 0)) if "segment_ids" in batch else batch["inputs"].size
            )
            bar.update(1)
            record: dict[str, Any] = {}
            if step % config.train.log_every == 0 or step == steps:
                metrics = jax.device_get(metrics)
                elapsed = time.perf_counter() - window_start
                record.update(
                    metrics,
                    tokens_per_sec=window_tokens / elapsed,
                    truncated_examples=window_truncated,
                    truncated_fraction=window_truncated / max(window_examples, 1.0),
                )
                window_start, window_tokens = time.perf_counter(), 0.0
                window_examples, window_truncated = 0.0, 0.0
                bar.set_postfix(loss=f"{float(metrics['loss']):.3f}", acc=f"{float(metrics['accuracy']):.3f}")
            if config.eval.every and (step % config.eval.every == 0 or step == steps):
                record.update(evaluate_loss(state.params))
            if answers_metric and (
                step == steps or (config.eval.answers_every and step % config.eval.answers_every == 0)
            ):
                answers = evaluate_answers(state.params)
                record["eval_answer_accuracy"] = answers["accuracy"]
            if record:
                writer.write(step, record)
            if any(key.startswith("eval_") for key in record):  # keep evaluation out of tokens_per_sec
                window_start, window_tokens = time.perf_counter(), 0.0
            if step == steps or stop.requested or (every and step % every == 0):
                checkpointer.save(step, state, train_batches.get_state(), config.to_json())
            if stop.requested:
                break
    finally:
        bar.close()
        writer.close()
        checkpointer.close()
        stop.restore()
    summary.update(steps=step, checkpoint=checkpointer.directory)
    if step < steps:
        print(f"jirl: stopped by signal after step {step}; the checkpoint there resumes the run")
        summary["stopped_at"] = step
        return summary
    if answers_metric:
        if start_step == steps:  # a finished run, started again: evaluate the final state
            answers = evaluate_answers(state.params)
        summary.update(answer_accuracy=answers["accuracy"], answer_examples=answers["num_examples"])
        with open(os.path.join(workdir, "samples.jsonl"), "w") as f:
            for example in answers["examples"]:
                f.write(json.dumps(example) + "\n")
    summary["plot"] = plots.plot_training_curves(workdir)
    with open(os.path.join(workdir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary


class _StopRequest:
    """SIGTERM or SIGINT ask the loop to save at the next step boundary and stop (exit status 0)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.requested = False
        self._previous = {}
        try:
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread: signals stay as they were
            self._previous = {}

    def _handle(self, signum, frame):
        del frame
        self.requested = True
        print(f"\njirl: {signal.Signals(signum).name} received; saving a checkpoint after this step")

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
