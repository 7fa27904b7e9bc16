"""`jirl train --config experiments/arith.py:iqlearn --workdir DIR [--config.KEY=VALUE ...]`;
`jirl prepare --task NAME --source PATH [--task_config C] [--data_dir DIR] [--vocab_size N]`;
`jirl plan --config experiments/FILE.py[:ARG] (--topology v5e:4x4 | --devices N) [--config.KEY=VALUE ...]`;
`jirl eval --workdir DIR [--split S] [--samples K] [--temperature T,...] [--rerank N]`.

Bad input (an unknown config key, objective, preset or task, a malformed batch) is reported as
one line on stderr and exit status 2, never a traceback (set JIRL_TRACEBACK=1 to see one).
"""

from __future__ import annotations

import os
import re
import sys

from absl import flags
from ml_collections import config_flags

USAGE = "usage: jirl train --config experiments/FILE.py[:ARG] --workdir DIR [--config.KEY=VALUE ...]"
PREPARE_USAGE = (
    "usage: jirl prepare --task NAME (--source PATH | --catalog) [--task_config C] [--data_dir DIR] "
    "[--prompt_field F --response_field F --reference_field F] [--vocab_size N]"
)


class UsageError(ValueError):
    pass


def _fail(message: str) -> int:
    print(f"jirl: error: {message}", file=sys.stderr)
    return 2


def _parse_train_flags(argv: list[str], extra=None):
    flag_values = flags.FlagValues()
    if extra is not None:
        extra(flag_values)
    config_flags.DEFINE_config_file(
        "config",
        None,
        "Experiment config file[:arg].",
        flag_values=flag_values,
        lock_config=True,
        sys_argv=["jirl"] + argv,
    )
    flags.DEFINE_string("workdir", None, "Output directory.", flag_values=flag_values)
    flags.DEFINE_bool("progress", True, "Show a progress bar.", flag_values=flag_values)
    try:
        _parse_flags(flag_values, argv)
    except (KeyError, AttributeError) as e:  # an override of a key the experiment file does not have
        key = (re.findall(r"\w+", str(e)) or ["?"])[0]
        names = [a.split("=")[0] for a in argv if a.split("=")[0].endswith(f".{key}")]
        raise UsageError(
            f"bad config override {names[0] if names else key}: the experiment file defines no such key, "
            "and overrides can only set keys it defines."
        ) from None
    except TypeError as e:  # raised by config overrides
        raise UsageError(f"bad config override: {_one_line(e)}") from None
    if flag_values.config is None:
        raise UsageError(f"--config is required; {USAGE}")
    if extra is None and not flag_values.workdir:
        raise UsageError(f"--workdir is required; {USAGE}")
    return flag_values


def _parse_flags(flag_values: flags.FlagValues, argv: list[str]) -> flags.FlagValues:
    try:
        flag_values(["jirl"] + argv)
    except flags.Error as e:
        raise UsageError(_flag_error(e)) from None
    return flag_values


def _flag_error(error: flags.Error) -> str:
    """A flag's parse error as one line; a value of the wrong type says which type the key takes."""
    text = _one_line(error)
    wrong_type = re.match(r"flag (--\S+?)=(.*?): (invalid literal for int|could not convert string)", text)
    if wrong_type:
        kind = "an integer" if "int" in wrong_type[3] else "a number"
        return f"bad value {wrong_type[2]!r} for {wrong_type[1]}: that key takes {kind}."
    return text


def _one_line(error: BaseException) -> str:
    """The error as one line; an error raised inside a config file keeps only its last line."""
    text = str(error)
    if "Traceback (most recent call last)" in text:
        text = text.strip().splitlines()[-1].split(": ", 1)[-1]
    return " ".join(text.split())


def _train(args: list[str]) -> int:
    flag_values = _parse_train_flags(args)
    if flag_values.config.get("kind") == "mdp_irl":  # feature-based IRL on MDPs (jirl.irl)
        from jirl.irl.experiment import run

        summary = run(flag_values.config, flag_values.workdir, progress=flag_values.progress)
        print(f"outputs in {summary['workdir']}: {', '.join(summary['outputs'])}")
        return 0
    from jirl.train import train  # after flag parsing: bad flags fail fast, before jax loads

    summary = train(flag_values.config, flag_values.workdir, progress=flag_values.progress)
    if "stopped_at" in summary or summary.get("process_index", 0):  # resumable stop; not process 0
        return 0
    outputs = "metrics.jsonl, tensorboard/, curves.png, summary.json"
    if "answer_accuracy" in summary:
        print(
            f"{flag_values.config.eval.get('split', 'validation')} answer accuracy: "
            f"{summary['answer_accuracy']:.1%} ({summary['answer_examples']} problems, greedy decoding)"
        )
        outputs += ", samples.jsonl"
    print(f"outputs in {summary['workdir']}: {outputs}")
    return 0


def _prepare(args: list[str]) -> int:
    fv = flags.FlagValues()
    flags.DEFINE_string("task", None, "Task name.", flag_values=fv)
    flags.DEFINE_string("source", None, "The downloaded files (a folder or a .jsonl file).", flag_values=fv)
    flags.DEFINE_bool("catalog", False, "Download through the TFDS catalog builder instead.", flag_values=fv)
    flags.DEFINE_string(
        "task_config", "default", "Task variant (wmt: SRC-TGT; jsonl: a name).", flag_values=fv
    )
    flags.DEFINE_string("data_dir", "data", "Where prepared datasets live.", flag_values=fv)
    for name in ("prompt_field", "response_field", "reference_field"):
        flags.DEFINE_string(name, None, "jsonl: the field (dotted for nested).", flag_values=fv)
    flags.DEFINE_integer("vocab_size", 0, "Also train a SentencePiece model of this size.", flag_values=fv)
    _parse_flags(fv, args)
    if not fv.task:
        raise UsageError(f"--task is required; {PREPARE_USAGE}")
    from jirl import data  # after flag parsing: bad flags fail fast, before jax loads

    task = data.get_task(fv.task)
    fields = {k: fv[k].value for k in ("prompt_field", "response_field", "reference_field") if fv[k].value}
    if fields and task.name != "jsonl":
        raise UsageError(
            f"--{next(iter(fields))} is for task jsonl only; task '{task.name}' has fixed fields."
        )
    task.prepare(fv.data_dir, fv.task_config, fv.source, catalog=fv.catalog, **fields)
    for split in task.splits:
        try:
            count = len(task.source(split, fv.data_dir, fv.task_config))
        except ValueError:  # a split the source did not have
            continue
        print(f"{task.name} {split}: {count} examples")
    if fv.vocab_size:
        path = data.task_sentencepiece(task, fv.data_dir, fv.task_config, fv.vocab_size)
        print(
            f"SentencePiece model: {path}; train with --config.tokenizer.kind=sentencepiece "
            f"--config.tokenizer.path={path} --config.model.vocab_size=-1"
        )
    return 0


PLAN_USAGE = (
    "usage: jirl plan --config experiments/FILE.py[:ARG] (--topology v5e:4x4 | --devices N) "
    "[--hbm_gib G] [--config.KEY=VALUE ...]"
)


def _plan_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("topology", None, "TPU slice, e.g. v5e:4x4 or v5p-32.", flag_values=fv)
    flags.DEFINE_integer("devices", None, "Plan for N fake CPU devices instead.", flag_values=fv)
    flags.DEFINE_float("hbm_gib", None, "Memory per device to check against (GiB).", flag_values=fv)


def _plan(args: list[str]) -> int:
    fv = _parse_train_flags(args, extra=_plan_flags)
    if (fv.topology is None) == (fv.devices is None):
        raise UsageError(f"give one of --topology or --devices; {PLAN_USAGE}")
    if fv.devices is not None and fv.devices < 1:
        raise UsageError(f"--devices={fv.devices} must be at least 1.")
    # Compiling only: the local backend is the CPU (with N devices for --devices), set before jax loads.
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    if fv.devices is not None:
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={fv.devices}"
        )
    import json

    import jax

    from jirl import plan

    if fv.topology is not None:
        topology = plan.parse_topology(fv.topology)
        devices, hbm = plan.tpu_devices(topology)
        title = f"TPU {topology.name} ({topology.chips} chips)"
    else:
        devices, hbm, title = jax.devices("cpu"), None, f"{fv.devices} CPU devices"
        if len(devices) != fv.devices:
            raise UsageError(f"could not make {fv.devices} CPU devices (JAX started with {len(devices)}).")
    if fv.hbm_gib:
        hbm = fv.hbm_gib * plan.GIB
    result = plan.plan(fv.config, devices, hbm)
    print(plan.format_plan(result, title))
    print(json.dumps(dict(result, topology=fv.topology or f"cpu:{fv.devices}")))
    return 0


EVAL_USAGE = (
    "usage: jirl eval --workdir DIR [--split validation] [--samples K] [--temperature T[,T...]] "
    "[--top_k N] [--top_p P] [--num_prompts N] [--max_new_tokens N] [--rerank N]"
)


def _eval(args: list[str]) -> int:
    fv = flags.FlagValues()
    flags.DEFINE_string("workdir", None, "The run's directory.", flag_values=fv)
    flags.DEFINE_string("split", "validation", "Split to evaluate.", flag_values=fv)
    flags.DEFINE_integer("samples", 4, "Samples per prompt (K).", flag_values=fv)
    flags.DEFINE_list("temperature", ["1.0"], "Sampling temperature(s), comma-separated.", flag_values=fv)
    flags.DEFINE_integer("top_k", 0, "Top-k sampling (0: off).", flag_values=fv)
    flags.DEFINE_float("top_p", 1.0, "Nucleus sampling mass (1: off).", flag_values=fv)
    flags.DEFINE_integer(
        "num_prompts", None, "Prompts (default: the run's eval.num_examples).", flag_values=fv
    )
    flags.DEFINE_integer("max_new_tokens", None, "Default: the run's eval.max_new_tokens.", flag_values=fv)
    flags.DEFINE_integer("rerank", 0, "Best-of-N reranking report with N samples (0: off).", flag_values=fv)
    flags.DEFINE_integer("seed", 0, "Sampling seed.", flag_values=fv)
    _parse_flags(fv, args)
    if not fv.workdir:
        raise UsageError(f"--workdir is required; {EVAL_USAGE}")
    try:
        temperatures = tuple(float(t) for t in fv.temperature)
    except ValueError:
        raise UsageError(f"--temperature={','.join(fv.temperature)} must be numbers, e.g. 0.7,1.0.") from None
    import json

    from jirl.evaluation.run import evaluate

    report = evaluate(
        fv.workdir, split=fv.split, samples=fv.samples, temperatures=temperatures, top_k=fv.top_k,
        top_p=fv.top_p, num_prompts=fv.num_prompts, max_new_tokens=fv.max_new_tokens, rerank=fv.rerank,
        seed=fv.seed,
    )  # fmt: skip
    print(json.dumps(report))
    return 0


def _export(args: list[str]) -> int:
    fv = flags.FlagValues()
    flags.DEFINE_string("workdir", None, "The run's directory.", flag_values=fv)
    flags.DEFINE_string("out", None, "Folder to write (config.json + model.safetensors).", flag_values=fv)
    flags.DEFINE_string("model_type", None, "Hugging Face model_type (default: the closest).", flag_values=fv)
    _parse_flags(fv, args)
    if not fv.workdir or not fv.out:
        raise UsageError(
            "usage: jirl export --workdir DIR --out PATH [--model_type llama|qwen2|gemma|gemma2|gpt2]"
        )
    import shutil

    import jax

    from jirl.evaluation.run import load_run
    from jirl.models import hf
    from jirl.train.loop import model_config

    run = load_run(fv.workdir)
    config = model_config(run["config"], run["tokenizer"].vocab_size)
    hf.save(jax.device_get(run["params"]), config, fv.out, fv.model_type)
    source = run["config"].get("tokenizer", {}).get("path") or run["config"].model.get("init_from") or ""
    source = os.path.expanduser(source)
    if os.path.isfile(source):  # a tokenizer file: its folder's tokenizer files travel along
        source = os.path.dirname(source)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "spiece.model"):
        if source and os.path.isfile(os.path.join(os.path.expanduser(source), name)):
            shutil.copy(os.path.join(os.path.expanduser(source), name), os.path.join(fv.out, name))
    family = fv.model_type or hf.family_of(config)
    print(f"jirl: wrote the step-{run['step']} weights of {fv.workdir} to {fv.out} ({family})")
    return 0


COMMANDS = {"train": _train, "prepare": _prepare, "plan": _plan, "eval": _eval, "export": _export}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        got = f"'{argv[0]}'" if argv else "no command"
        return _fail(f"unknown command {got}; accepted: {list(COMMANDS)}. {USAGE}")
    try:
        return COMMANDS[argv[0]](argv[1:])
    except (UsageError, ValueError) as e:
        if os.environ.get("JIRL_TRACEBACK"):  # developers: the full traceback instead of one line
            raise
        return _fail(_one_line(e))
    except KeyboardInterrupt:  # outside the training steps, where SIGINT saves and stops cleanly
        print("jirl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
