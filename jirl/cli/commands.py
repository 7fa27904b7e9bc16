"""The commands' flags and what each runs: train, prepare, plan, eval and export.

Heavy imports (jax, the data pipeline) happen after flag parsing, so that bad flags fail fast.
"""

from __future__ import annotations

import os

from absl import flags

from jirl.cli.flags import UsageError, parse_config_flags, parse_flags

PREPARE_USAGE = (
    "usage: jirl prepare --task NAME (--source PATH | --catalog) [--task_config C] [--data_dir DIR] "
    "[--prompt_field F --response_field F --reference_field F] [--vocab_size N]"
)


def train(args: list[str]) -> int:
    flag_values = parse_config_flags(args)
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


def prepare(args: list[str]) -> int:
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
    parse_flags(fv, args)
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


def plan(args: list[str]) -> int:
    fv = parse_config_flags(args, extra=_plan_flags)
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
    "[--top_k N] [--top_p P] [--num_prompts N] [--max_new_tokens N] [--rerank N] [--greedy]"
)


def evaluate(args: list[str]) -> int:
    fv = flags.FlagValues()
    flags.DEFINE_string("workdir", None, "The run's directory.", flag_values=fv)
    flags.DEFINE_string("split", "validation", "Split to evaluate.", flag_values=fv)
    flags.DEFINE_integer("samples", 4, "Samples per prompt (K).", flag_values=fv)
    flags.DEFINE_list("temperature", ["1.0"], "Sampling temperature(s), comma-separated.", flag_values=fv)
    flags.DEFINE_integer("top_k", 0, "Top-k sampling (0: off).", flag_values=fv)
    flags.DEFINE_float("top_p", 1.0, "Nucleus sampling mass (1: off).", flag_values=fv)
    flags.DEFINE_integer(
        "num_prompts",
        None,
        "Prompts; -1: every prompt of the split (default: the run's eval.num_examples).",
        flag_values=fv,
    )
    flags.DEFINE_integer("max_new_tokens", None, "Default: the run's eval.max_new_tokens.", flag_values=fv)
    flags.DEFINE_integer("rerank", 0, "Best-of-N reranking report with N samples (0: off).", flag_values=fv)
    flags.DEFINE_bool("greedy", False, "Also greedy accuracy (answer tasks).", flag_values=fv)
    flags.DEFINE_integer("seed", 0, "Sampling seed.", flag_values=fv)
    parse_flags(fv, args)
    if not fv.workdir:
        raise UsageError(f"--workdir is required; {EVAL_USAGE}")
    try:
        temperatures = tuple(float(t) for t in fv.temperature)
    except ValueError:
        raise UsageError(f"--temperature={','.join(fv.temperature)} must be numbers, e.g. 0.7,1.0.") from None
    import json

    from jirl.cli.evaluate import evaluate

    report = evaluate(
        fv.workdir, split=fv.split, samples=fv.samples, temperatures=temperatures, top_k=fv.top_k,
        top_p=fv.top_p, num_prompts=fv.num_prompts, max_new_tokens=fv.max_new_tokens, rerank=fv.rerank,
        greedy=fv.greedy, seed=fv.seed,
    )  # fmt: skip
    print(json.dumps(report))
    return 0


def export(args: list[str]) -> int:
    fv = flags.FlagValues()
    flags.DEFINE_string("workdir", None, "The run's directory.", flag_values=fv)
    flags.DEFINE_string("out", None, "Folder to write (config.json + model.safetensors).", flag_values=fv)
    flags.DEFINE_string("model_type", None, "Hugging Face model_type (default: the closest).", flag_values=fv)
    flags.DEFINE_bool(
        "adapter", False, "A LoRA run: write a PEFT adapter folder instead of merged weights.", flag_values=fv
    )
    parse_flags(fv, args)
    if not fv.workdir or not fv.out:
        raise UsageError(
            "usage: jirl export --workdir DIR --out PATH "
            "[--model_type llama|qwen2|qwen3|gemma|gemma2|gemma3_text|gpt2|t5] [--adapter]"
        )
    import shutil

    import jax

    from jirl.data import chat
    from jirl.models import hf
    from jirl.train.workdir import load_trained

    trained = load_trained(fv.workdir)
    config, run_config = trained.run.model, trained.run.config
    if fv.adapter:
        return _export_adapter(trained, fv.workdir, fv.out, fv.model_type)
    hf.save(jax.device_get(trained.params), config, fv.out, fv.model_type)
    source = run_config.get("tokenizer", {}).get("path") or run_config.model.get("init_from") or ""
    source = os.path.expanduser(source)
    if os.path.isfile(source):  # a tokenizer file: its folder's tokenizer files travel along
        source = os.path.dirname(source)
    tokenizer_files = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "spiece.model")
    for name in (*tokenizer_files, chat.TEMPLATE_FILE):
        if source and os.path.isfile(os.path.join(source, name)):
            shutil.copy(os.path.join(source, name), os.path.join(fv.out, name))
    if source and os.path.isdir(os.path.join(source, chat.TEMPLATE_DIR)):
        named = os.path.join(source, chat.TEMPLATE_DIR)
        shutil.copytree(named, os.path.join(fv.out, chat.TEMPLATE_DIR), dirs_exist_ok=True)
    family = fv.model_type or hf.family_of(config)
    print(f"jirl: wrote the step-{trained.step} weights of {fv.workdir} to {fv.out} ({family})")
    return 0


def _export_adapter(trained, workdir: str, out: str, model_type: str | None) -> int:
    """`jirl export --adapter`: a LoRA run's adapters as a PEFT folder over its base (`model.init_from`)."""
    import jax

    from jirl.errors import ConfigError
    from jirl.models import hf
    from jirl.models.hf import peft

    run = trained.run
    if trained.adapters is None:
        raise ConfigError(
            f"--adapter exports LoRA adapters, and the run in {workdir} trained every weight "
            "(model.lora.rank=0); export it without --adapter."
        )
    base = run.config.model.get("init_from") or None
    if base and os.path.isdir(os.path.expanduser(base)):  # PEFT reads the path from anywhere
        base = os.path.abspath(os.path.expanduser(base))
    hf.config_to_hf(run.model, model_type)  # the family must express the base
    peft.save_adapter(jax.device_get(trained.adapters), run.model, run.lora, out, base, model_type)
    print(
        f"jirl: wrote the step-{trained.step} LoRA adapters of {workdir} to {out} (PEFT, rank "
        f"{run.lora.rank}, base {base or 'made from the seed: export it with jirl export first'})"
    )
    return 0
