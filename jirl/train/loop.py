"""The training loop: data -> jitted step -> metrics, with periodic evaluation and a final report."""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from tqdm.auto import tqdm

from jirl import data, distributed, forward, losses, models, sharding
from jirl.evaluation.task_eval import answer_accuracy_on_split
from jirl.train import online, plots
from jirl.train.checkpoint import Checkpointer
from jirl.train.metrics_writer import MetricsWriter, NullWriter
from jirl.train.optimizer import make_optimizer
from jirl.train.state import TrainState
from jirl.train.step import (
    check_batch,
    create_sharded_train_state,
    make_eval_step,
    make_train_step,
    sharded_state_target,
)


def model_config(config: Any, tokenizer_vocab_size: int | None = None) -> models.ModelConfig:
    """The model of `config.model`; `vocab_size=-1` takes the tokenizer's vocabulary size.

    With `model.init_from` (a Hugging Face checkpoint folder) the shape comes from its config.json;
    the other `model` keys (dtype, remat, scan_layers, ...) still apply, `preset` is not used.
    """
    overrides = {k: v for k, v in config.model.items() if k not in ("preset", "init_from")}
    init_from = config.model.get("init_from") or ""
    if init_from:
        from jirl.models import hf

        shape_keys = set(models.PRESETS[config.model.preset])  # the checkpoint decides these
        compute = {k: v for k, v in overrides.items() if k not in shape_keys}
        return hf.config_from_hf(hf.read_config(os.path.expanduser(init_from)), **compute)
    if overrides.get("vocab_size") == -1 and tokenizer_vocab_size is not None:
        overrides["vocab_size"] = tokenizer_vocab_size
    return models.get_config(config.model.preset, **overrides)


# Keys of the `loss` block that drive online sampling or the head stage, not the objective itself.
SAMPLING_KEYS = ("sample_every", "sample_temperature", "sample_max_tokens")
HEAD_KEYS = forward.HeadOptions.keys()


def loss_function(config: Any) -> losses.Objective:
    opts = {k: v for k, v in config.loss.items() if k not in SAMPLING_KEYS + HEAD_KEYS}
    return losses.get(opts.pop("name"), **opts)


def head_options(config: Any) -> forward.HeadOptions:
    """How the objective's statistics are computed: `loss.vocab_chunk` and `loss.response_budget`."""
    return forward.HeadOptions.from_config(config.loss)


def _policy_sampler(config: Any, graphdef: Any, tokenizer: Any, microbatches: int):
    """Online IQLearn (loss.alpha > 0) samples the model's own responses; None when offline."""
    if float(config.loss.get("alpha", 0.0)) <= 0:
        return None
    if jax.process_count() > 1:
        raise ValueError("online IQLearn (loss.alpha > 0) runs on one process for now; use loss.alpha=0.")
    if microbatches > 1:
        raise ValueError(
            "online IQLearn (loss.alpha > 0) does not combine with train.microbatches > 1 yet; "
            "set one of them off."
        )
    return online.PolicySampler(
        graphdef,
        tokenizer,
        every=int(config.loss.get("sample_every", 1)),
        max_new_tokens=int(config.loss.get("sample_max_tokens", config.eval.max_new_tokens)),
        temperature=float(config.loss.get("sample_temperature", 1.0)),
        seed=int(config.train.seed),
    )


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


def make_mesh(config: Any, devices: list[Any] | None = None) -> tuple[jax.sharding.Mesh, dict[str, Any]]:
    """(mesh, logical-axis rules) of the `mesh` block: data / fsdp / tensor sizes (-1 = the rest), rules."""
    block = dict(config.get("mesh") or {})
    rules = sharding.make_rules(dict(block.pop("rules", None) or {}) or None)
    return sharding.make_mesh(block, devices), rules


def run_tokenizer(config: Any, task: Any, data_dir: str) -> Any:
    """The `tokenizer` block's tokenizer; kind 'hf' without a path reads the `model.init_from` folder's."""
    cfg = dict(config.get("tokenizer") or {})
    if cfg.get("kind") == "hf" and not cfg.get("path") and config.model.get("init_from"):
        cfg["path"] = os.path.expanduser(config.model.init_from)
    return data.make_tokenizer(cfg, task, data_dir, config.task.config)


def _pretrained_state(path: str, cfg_model: models.ModelConfig, tx: Any, shardings: Any) -> TrainState:
    """A train state whose params are a Hugging Face checkpoint, placed on the run's shardings."""
    from jirl.models import hf

    _, params = hf.load_params(path, cfg_model, shardings.params)  # each tensor onto the mesh as read
    opt_state = jax.jit(tx.init, out_shardings=shardings.opt_state)(params)
    step = jax.device_put(np.zeros((), np.int32), shardings.step)
    return TrainState(step=step, params=params, opt_state=opt_state)


def _local_batch_size(batch_size: int) -> int:
    count = jax.process_count()
    if batch_size % count:
        raise ValueError(
            f"train.batch_size={batch_size} is not divisible by the {count} processes; "
            "each process reads an equal share of the global batch."
        )
    return batch_size // count


def train(config: Any, workdir: str, *, progress: bool = True) -> dict[str, Any]:
    """Trains as `config` says, writing metrics, plots and a summary to `workdir`; returns the summary.

    On several hosts every process runs this same function: each reads its own slice of the data,
    the step runs on the global mesh, checkpoints are written by all, metrics and plots by process 0.
    """
    model_config(config)  # a bad model config fails before any data work
    loss_fn = loss_function(config)
    head = head_options(config)
    distributed.initialize(config.get("distributed"))
    mesh, rules = make_mesh(config)
    microbatches = int(config.train.get("microbatches", 1))
    sharding.check_batch_size(int(config.train.batch_size), mesh, rules, microbatches)
    local_batch_size = _local_batch_size(int(config.train.batch_size))
    is_main = jax.process_index() == 0
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
    tokenizer = run_tokenizer(config, task, data_dir)
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
        batch_size=local_batch_size,
        pack=config.task.pack,
        task_config=task_config,
        decoder_start_id=cfg_model.decoder_start_id if cfg_model.is_encoder_decoder else None,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
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

    # The restore target carries this run's shardings: a checkpoint written on another mesh or
    # device count is resharded onto this one as it is read.
    graphdef, target, state_shardings = sharded_state_target(cfg_model, tx, mesh, rules)
    checkpointer = Checkpointer(workdir, keep=int(config.checkpoint.keep))
    start_step = 0
    restored = checkpointer.restore_latest(target)
    if restored is not None:
        start_step, state, data_state = restored
        if data_state is None:
            print("jirl: warning: the data position was saved by another number of processes; data restarts")
        else:
            train_batches.set_state(data_state)
        print(f"jirl: resuming from the checkpoint at step {start_step}")
    elif config.model.get("init_from"):
        state = _pretrained_state(os.path.expanduser(config.model.init_from), cfg_model, tx, state_shardings)
        print(f"jirl: starting from the pretrained weights in {config.model.init_from}")
    else:
        _, state, _ = create_sharded_train_state(cfg_model, tx, config.train.seed, mesh, rules)
    if is_main:
        with open(os.path.join(workdir, "config.json"), "w") as f:  # after the restore check
            f.write(config.to_json(indent=2))
    train_step = make_train_step(
        graphdef,
        loss_fn,
        tx,
        schedule,
        head=head,
        microbatches=microbatches,
        mesh=mesh,
        state_shardings=state_shardings,
        rules=rules,
    )
    eval_step = make_eval_step(graphdef, loss_fn, head=head)
    sampler = _policy_sampler(config, graphdef, tokenizer, microbatches)
    # First step this run logs: 0 (the at-start evaluation) fresh, the step after the checkpoint resumed.
    first_logged = 0 if restored is None else start_step + 1
    writer = MetricsWriter(workdir, start_step=first_logged) if is_main else NullWriter()

    def evaluate_loss(params) -> dict[str, float]:
        batches = data.make_batches(task, eval_split, seed=0, shuffle=False, num_epochs=1, **batch_args)
        records = []
        for _, batch in zip(range(config.eval.loss_batches), batches):
            data.pop_stats(batch)
            records.append(jax.device_get(eval_step(params, sharding.shard_batch(batch, mesh, rules))))
        return {f"eval_{k}": v for k, v in _mean_metrics(records).items()}

    def evaluate_answers(params) -> dict[str, Any]:
        if jax.process_count() > 1:  # decode on each host from a full copy (small models)
            params = multihost_utils.process_allgather(params, tiled=True)
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
        if is_main:
            print(f"{eval_split} answer accuracy before training: {summary['initial_answer_accuracy']:.1%}")

    steps = int(config.train.steps)
    every = int(config.train.checkpoint_every)
    stop = _StopRequest()
    bar = tqdm(
        total=steps,
        initial=start_step,
        desc=f"train {config.loss.name}",
        disable=not (progress and is_main),
        dynamic_ncols=True,
    )
    try:
        window_start, window_tokens = time.perf_counter(), 0.0
        window_examples, window_truncated = 0.0, 0.0
        window_sampling: dict[str, float] = {}
        step = start_step
        for step in range(start_step + 1, steps + 1):
            batch = next(train_batches)
            stats = data.pop_stats(batch)
            window_examples += stats["examples"]
            window_truncated += stats["truncated"]
            check_batch(batch, cfg_model.vocab_size)
            if sampler is not None:  # online: the model's own responses to this batch's prompts
                batch["policy"], sample_stats = sampler(state.params, batch, step)
                for key, value in sample_stats.items():
                    window_sampling[key] = window_sampling.get(key, 0.0) + value
            state, metrics = train_step(state, sharding.shard_batch(batch, mesh, rules))
            local_tokens = (
                np.sum(batch["segment_ids"] > 0) if "segment_ids" in batch else batch["inputs"].size
            )
            window_tokens += float(local_tokens) * jax.process_count()  # this process's share, scaled
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
                if window_sampling:  # sums over the window, and the rate over its samplings
                    window_sampling["sample_tokens_per_sec"] = window_sampling["sample_tokens"] / max(
                        window_sampling["sample_seconds"], 1e-9
                    )
                    record.update(window_sampling)
                window_start, window_tokens = time.perf_counter(), 0.0
                window_examples, window_truncated, window_sampling = 0.0, 0.0, {}
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
    summary.update(steps=step, checkpoint=checkpointer.directory, mesh=dict(mesh.shape))
    summary.update(processes=jax.process_count(), process_index=jax.process_index())
    if step < steps:
        print(f"jirl: stopped by signal after step {step}; the checkpoint there resumes the run")
        summary["stopped_at"] = step
        return summary
    if answers_metric:
        if start_step == steps:  # a finished run, started again: evaluate the final state
            answers = evaluate_answers(state.params)
        summary.update(answer_accuracy=answers["accuracy"], answer_examples=answers["num_examples"])
    if not is_main:
        return summary
    if answers_metric:
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
