"""The training loop: a config -> its Run -> a session (state, data, step, writers) -> steps -> the report.

On several hosts every process runs `train`: each reads its own slice of the data, the step runs
on the global mesh, checkpoints are written by all, metrics and plots by process 0.

Nothing is lost on a crash: the run holds the workdir's lock (`lock.py`); a step with non-finite
gradients is skipped by the optimizer and no checkpoint is written after one, and
`train.max_nonfinite_steps` of them in a row stop the run (`Diverged`); a failed write stops it
with one line (`WriteFailed`); the newest complete checkpoint always resumes it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
from tqdm.auto import tqdm

from jirl import data, experiment, models, sharding
from jirl.errors import Diverged
from jirl.experiment import DEFAULT_MAX_NONFINITE_STEPS, Run
from jirl.train import adversarial, online, plots
from jirl.train import lora as lora_run
from jirl.train.batch_check import check_batch
from jirl.train.checkpoint import Checkpointer
from jirl.train.evaluator import Evaluator
from jirl.train.lock import WorkdirLock
from jirl.train.metrics_writer import MetricsWriter, NullWriter, write_text
from jirl.train.nonfinite import NonFiniteWatch
from jirl.train.state import (
    TrainState,
    create_sharded_train_state,
    pretrained_state,
    sharded_state_target,
    state_of_params,
)
from jirl.train.step import run_train_step
from jirl.train.stop import StopRequest
from jirl.train.window import LogWindow
from jirl.train.workdir import load_trained


def train(config: Any, workdir: str, *, progress: bool = True) -> dict[str, Any]:
    """Trains as `config` says, writing metrics, plots and a summary to `workdir`; returns the summary."""
    run = experiment.build(config, prepare=True)
    with WorkdirLock(workdir):
        session = _start(run, workdir)
        stop = StopRequest()
        try:
            last_step = _loop(session, stop, progress)
        except BaseException:
            _close_after_error(session)  # the error in flight is the one to report
            raise
        else:
            session.close()  # waits for the last checkpoint: a second signal must not cut it short
        finally:
            stop.restore()
        if session.watch.limit_reached:
            raise _diverged(session)
        return _report(session, last_step)


def _close_after_error(session: _Session) -> None:
    """Closes the session while another error is on its way out; a failure here is a warning only."""
    try:
        session.close()
    except Exception as e:  # noqa: BLE001 - the error in flight matters more
        print(f"jirl: warning: closing the run after an error failed too: {' '.join(str(e).split())}")


def _diverged(session: _Session) -> Diverged:
    watch, newest = session.watch, session.newest_checkpoint
    if newest is None:
        where = "no checkpoint was written before them; run again (from the start)"
    else:
        where = (
            f"the newest checkpoint, step {newest} in {session.checkpointer.directory}, holds finite "
            "parameters; run again to resume from it"
        )
    step, streak = watch.tripped
    return Diverged(
        f"steps {step - streak + 1}-{step}: {streak} consecutive steps had non-finite gradients and were "
        f"skipped (train.max_nonfinite_steps={watch.limit} stops a run), so it stopped at step {step}. "
        f"Lower train.learning_rate (or clip gradients with train.grad_clip); {where}."
    )


@dataclasses.dataclass(eq=False)
class _Session:
    """One training process's working set between setup and report."""

    run: Run
    workdir: str
    batches: Any  # this process's training batches (a resumable iterator)
    state: TrainState
    start_step: int  # the step of the checkpoint resumed from; 0 fresh
    checkpointer: Checkpointer
    train_step: Any
    evaluator: Evaluator
    sampler: online.PolicySampler | None
    writer: MetricsWriter | NullWriter
    summary: dict[str, Any]
    watch: NonFiniteWatch
    answers: dict[str, Any] | None = None  # the last answer evaluation
    newest_checkpoint: int | None = None  # set when the run stops on non-finite steps
    lora: Any = None  # a LoRA run's (frozen base, merge function, base fingerprint); None: full fine-tuning

    @property
    def is_main(self) -> bool:
        return jax.process_index() == 0

    def model_params(self) -> Any:
        """The model's params as sampling and evaluation read them: the state's, or with LoRA the
        base with the adapters merged in (W + (alpha / r) A B)."""
        if self.lora is None:
            return self.state.params
        base, merge, _ = self.lora
        return merge(base, self.state.params)

    def close(self) -> None:
        try:
            self.writer.close()
        finally:
            self.checkpointer.close()


def _batch_args(run: Run) -> dict[str, Any]:
    """The keyword arguments of `jirl.data.make_batches` shared by training and evaluation."""
    return dict(
        data_dir=run.data_dir,
        tokenizer=run.tokenizer,
        seq_len=run.config.task.seq_len,
        batch_size=run.local_batch_size,
        pack=run.config.task.pack,
        task_config=run.config.task.config,
        decoder_start_id=run.model.decoder_start_id if run.model.is_encoder_decoder else None,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )


def _start(run: Run, workdir: str) -> _Session:
    """Data, then the state: restored from the newest checkpoint, else pretrained or fresh."""
    config = run.config
    batch_args = _batch_args(run)
    batches = data.make_batches(
        run.task,
        "train",
        seed=config.train.seed,
        shuffle=True,
        worker_count=config.task.get("worker_count", 0),
        prefetch=config.task.get("prefetch", 0),
        **batch_args,
    )
    lora_targets = None
    if run.lora is not None:  # the state holds the adapters; the base is read apart
        lora_targets = lora_run.targets(run)
        graphdef, target, shardings = lora_targets.graphdef, lora_targets.state, lora_targets.shardings
    elif run.discriminator is None:
        graphdef, target, shardings = sharded_state_target(run.model, run.tx, run.mesh, run.rules)
    else:
        graphdef, disc_graphdef, target, shardings = adversarial.state_target(run)
    checkpointer = Checkpointer(workdir, keep=int(config.checkpoint.keep))
    lora = None
    try:
        start_step, state = _initial_state(run, checkpointer, batches, target, shardings, lora_targets)
        is_main = jax.process_index() == 0
        if is_main:  # after the restore check
            write_text(os.path.join(workdir, "config.json"), config.to_json(indent=2))
        if lora_targets is not None:
            base = lora_run.load_base(run, lora_targets)
            lora = (base, lora_run.merger(run, lora_targets), lora_run.fingerprint(config))
            train_step = run_train_step(run, graphdef, shardings, lora_targets.base_shardings).with_base(base)
        elif run.discriminator is None:
            train_step = run_train_step(run, graphdef, shardings)
        else:
            train_step = adversarial.make_adversarial_step(graphdef, disc_graphdef, run, shardings)
        # The first step this run logs: 0 (the at-start evaluation) fresh, the one after a resumed checkpoint.
        first_logged = 0 if start_step == 0 else start_step + 1
        writer = MetricsWriter(workdir, start_step=first_logged) if is_main else NullWriter()
        evaluator, sampler = Evaluator(run, graphdef, batch_args), _policy_sampler(run, graphdef)
        if sampler is not None and start_step:
            _resume_sampler(run, sampler, checkpointer, start_step)
    except BaseException:
        checkpointer.close()
        raise
    summary = {"workdir": os.path.abspath(workdir), "num_params": run.model.num_params()}
    if run.lora is not None:
        summary["trainable_params"] = models.lora.num_adapter_params(run.model, run.lora)
    return _Session(
        run, workdir, batches, state, start_step, checkpointer, train_step, evaluator, sampler, writer,
        summary, NonFiniteWatch(int(config.train.get("max_nonfinite_steps", DEFAULT_MAX_NONFINITE_STEPS))),
        lora=lora,
    )  # fmt: skip


def _initial_state(
    run: Run, checkpointer: Checkpointer, batches: Any, target: Any, shardings: Any, lora_targets: Any = None
):
    """(start step, state): the newest checkpoint (data position too), else pretrained or fresh weights.

    The restore target carries this run's shardings: a checkpoint written on another mesh or device
    count is resharded onto this one as it is read. With LoRA the state is the adapters' (fresh ones
    start as the base model); a checkpoint of adapters trained on another base is refused.
    """
    config = run.config
    restored = checkpointer.restore_latest(target)
    if restored is not None:
        start_step, state, data_state = restored
        if run.lora is not None:
            lora_run.check_fingerprint(checkpointer.read_base(start_step), config, start_step)
        if data_state is None:
            print("jirl: warning: the data position was saved by another number of processes; data restarts")
        else:
            batches.set_state(data_state)
        print(f"jirl: resuming from the checkpoint at step {start_step}")
        return start_step, state
    if run.lora is not None:
        return 0, lora_run.initial_state(run, lora_targets)
    init_from = os.path.expanduser(config.model.get("init_from") or "")
    if init_from and experiment.saved_run_config(init_from) is not None:  # a jirl workdir
        trained = load_trained(init_from)
        state = state_of_params(trained.params, run.tx, shardings)
        print(f"jirl: starting from the step-{trained.step} weights of the run in {config.model.init_from}")
    elif init_from:
        state = pretrained_state(init_from, run.model, run.tx, shardings)
        print(f"jirl: starting from the pretrained weights in {config.model.init_from}")
    else:
        _, state, _ = create_sharded_train_state(run.model, run.tx, config.train.seed, run.mesh, run.rules)
    if run.discriminator is not None:  # the starting policy (pi_ref) and the discriminator join it
        state = adversarial.initial_state(run, state, shardings, int(config.train.seed))
    return 0, state


def _policy_sampler(run: Run, graphdef: Any) -> online.PolicySampler | None:
    """Online objectives: the model's own responses to each batch's prompts (the `online` block)."""
    if run.online is None:
        return None
    adversarial_options = {}
    if run.discriminator is not None:  # K samples per prompt, and log pi where they were drawn
        adversarial_options = dict(
            samples_per_prompt=int(run.objective.options.get("samples_per_prompt", 4)),
            sample_logp=adversarial.make_sample_logp(graphdef, float(run.online.temperature)),
        )
    return online.PolicySampler(
        graphdef,
        run.tokenizer,
        every=run.online.sample_every,
        max_new_tokens=run.online.max_new_tokens,
        temperature=float(run.online.temperature),
        seed=int(run.config.train.seed),
        on_device=not run.config.task.pack and not run.model.is_encoder_decoder,
        mesh=run.mesh,
        rules=run.rules,
        **adversarial_options,
    )


def _resume_sampler(run: Run, sampler: online.PolicySampler, checkpointer: Checkpointer, step: int) -> None:
    """The policy batch in use at the checkpoint, so that a resumed run reuses it until the next sampling
    as the run it continues would have (online.sample_every > 1)."""
    shape = (int(run.config.train.batch_size), int(run.config.task.seq_len))
    rows = sharding.batch_sharding(run.mesh, run.rules)
    dtype = lambda k: "float32" if k in ("loss_mask", "sample_logp") else "int32"  # noqa: E731
    keys = sampler.keys(run.model.is_encoder_decoder)
    target = {k: jax.ShapeDtypeStruct(shape, dtype(k), sharding=rows) for k in keys}
    policy = checkpointer.restore_policy(step, target)
    if policy is None:
        print("jirl: warning: the checkpoint holds no policy batch; the first step after it samples anew")
    else:
        sampler.resume(policy)


def _evaluate_at_start(session: _Session) -> None:
    """Answer accuracy before the first step (`eval.at_start`), logged as step 0."""
    accuracy = session.evaluator.answers(session.model_params())["accuracy"]
    session.summary["initial_answer_accuracy"] = accuracy
    session.writer.write(0, {"eval_answer_accuracy": accuracy})
    if session.is_main:
        print(f"{session.run.eval_split} answer accuracy before training: {accuracy:.1%}")


def _loop(session: _Session, stop: StopRequest, progress: bool) -> int:
    """Steps from the start step to `train.steps`, or until a signal asks to stop; the last step run."""
    run, evaluator = session.run, session.evaluator
    config = run.config
    steps, every = int(config.train.steps), int(config.train.checkpoint_every)
    if config.eval.at_start and session.start_step == 0 and evaluator.measures_answers:
        _evaluate_at_start(session)
    bar = tqdm(
        total=steps,
        initial=session.start_step,
        desc=f"train {config.loss.name}",
        disable=not (progress and session.is_main),
        dynamic_ncols=True,
    )
    window = LogWindow(jax.process_count())
    step = session.start_step
    try:
        for step in range(session.start_step + 1, steps + 1):
            expert = next(session.batches)
            window.add_data(data.pop_stats(expert))
            check_batch(expert, run.model.vocab_size)
            expert_global, policy = sharding.shard_batch(expert, run.mesh, run.rules), None
            if session.sampler is not None:
                params = session.model_params() if session.sampler.due(step) else session.state.params
                policy, sample_stats = session.sampler(params, expert, step, expert_global)
                window.add_sampling(sample_stats)
            session.state, metrics = session.train_step(session.state, expert_global, policy)
            session.watch.dispatched(step, metrics)
            if session.watch.limit_reached:  # logged whatever log_every: the step after the limit
                session.writer.write(step, window.flush(jax.device_get(metrics)))
                break
            window.add_tokens(expert)
            bar.update(1)
            record: dict[str, Any] = {}
            if step % config.train.log_every == 0 or step == steps:
                session.checkpointer.check()  # a checkpoint write that failed stops the run here
                metrics = jax.device_get(metrics)
                record.update(window.flush(metrics))
                bar.set_postfix(loss=f"{float(metrics['loss']):.3f}", acc=f"{float(metrics['accuracy']):.3f}")
            if config.eval.every and (step % config.eval.every == 0 or step == steps):
                record.update(evaluator.loss(session.model_params()))
            if evaluator.measures_answers and (
                step == steps or (config.eval.answers_every and step % config.eval.answers_every == 0)
            ):
                session.answers = evaluator.answers(session.model_params())
                record["eval_answer_accuracy"] = session.answers["accuracy"]
            if record:
                session.writer.write(step, record)
            if any(key.startswith("eval_") for key in record):  # keep evaluation out of tokens_per_sec
                window.restart_clock()
            if step == steps or stop.requested or (every and step % every == 0):
                if not _checkpoint(session, step, last=step == steps or stop.requested):
                    break
            if stop.requested:
                break
        if session.watch.limit_reached:
            session.newest_checkpoint = session.checkpointer.newest_step()
    finally:
        bar.close()
    return step


def _checkpoint(session: _Session, step: int, last: bool) -> bool:
    """Saves the state after `step`; False (nothing saved) when skipped steps in a row have reached
    train.max_nonfinite_steps. A periodic save after a skipped step is left out, so that checkpoints
    of unchanged parameters never rotate earlier ones away; the last one (the end, a signal) is not:
    a skipped step leaves the state finite, and the run resumes from there."""
    session.watch.settle()
    if session.watch.limit_reached:
        return False
    if session.watch.streak == 0 or last:
        state, position = session.state, session.batches.get_state()
        policy = None if session.sampler is None else session.sampler.last
        base = None if session.lora is None else session.lora[2]
        session.checkpointer.save(step, state, position, session.run.config.to_json(), policy, base)
    return True


def _report(session: _Session, step: int) -> dict[str, Any]:
    """The summary (and on process 0 samples.jsonl, curves.png, summary.json) after the last step."""
    run, summary = session.run, session.summary
    steps = int(run.config.train.steps)
    summary.update(steps=step, checkpoint=session.checkpointer.directory, mesh=dict(run.mesh.shape))
    summary.update(processes=jax.process_count(), process_index=jax.process_index())
    summary["devices"] = f"{jax.device_count()} x {jax.devices()[0].device_kind}"  # what it ran on
    if step < steps:
        print(f"jirl: stopped by signal after step {step}; the checkpoint there resumes the run")
        summary["stopped_at"] = step
        return summary
    answers = session.answers
    if session.evaluator.measures_answers:
        if answers is None:  # a finished run started again (no step ran): evaluate the final state
            answers = session.evaluator.answers(session.model_params())
        summary.update(answer_accuracy=answers["accuracy"], answer_examples=answers["num_examples"])
    if not session.is_main:
        return summary
    if session.evaluator.measures_answers:
        lines = "".join(json.dumps(example) + "\n" for example in answers["examples"])
        write_text(os.path.join(session.workdir, "samples.jsonl"), lines)
    summary["plot"] = plots.plot_training_curves(session.workdir)
    write_text(os.path.join(session.workdir, "summary.json"), json.dumps(summary, indent=2))
    return summary
