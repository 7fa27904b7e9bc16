"""Experiments: the config file (`experiments/NAME.py` with `get_config(arg)`) and the run it describes.

An experiment file builds its config from `base_config(task, objective)` and changes what its task
needs; the objective is always the `loss` block, one of `OBJECTIVES`, so swapping it is one word.

`build(config)` turns a config into a `Run`: the typed objects every command works from (task,
tokenizer, model config, objective, head options, online sampling, optimizer, mesh and rules),
each checked once, here. `jirl train`, `eval`, `plan` and `export` all start from it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
from typing import Any

import jax
import optax
from ml_collections import ConfigDict, config_dict

from jirl import data, distributed, losses, models, sharding
from jirl.discriminator import Discriminator, discriminator_of
from jirl.errors import ConfigError
from jirl.forward import HeadOptions
from jirl.online_sampling import MOVED_KEYS, OnlineSampling, check_sampling_budget, online_sampling
from jirl.optimizer import make_optimizer

# Consecutive skipped steps (non-finite gradients) that stop a run, unless train.max_nonfinite_steps says.
DEFAULT_MAX_NONFINITE_STEPS = 10

# Every objective reads the logits through the head stage (jirl.forward): vocab_chunk = 0 takes full
# logits, N > 0 chunks of about N vocabulary entries from the hidden states (never [B, T, V]), for at
# most response_budget x T response positions per row when every row of a batch fits.
_HEAD = dataclasses.asdict(HeadOptions())
OBJECTIVES = {
    "mle": dict(name="mle", label_smoothing=0.0, z_loss=0.0, entropy_bonus=0.0, **_HEAD),
    "iqlearn": dict(name="iqlearn", lam=0.1, gamma=1.0, alpha=0.0, stop_grad_next_value=False, **_HEAD),
    "iqlearn_online": dict(
        name="iqlearn", lam=0.1, gamma=1.0, alpha=0.1, stop_grad_next_value=False, **_HEAD
    ),
    # The paper's adversarial baseline: a policy-gradient update on the discriminator's rewards, plus
    # MLE on expert data and a KL penalty towards the starting model (jirl.losses.gail).
    "gail": dict(name="gail", **losses.options("gail"), **_HEAD),  # defaults: jirl.losses.gail_loss
}


def objective_block(objective: str) -> ConfigDict:
    """The `loss` block of `objective` (mle | iqlearn)."""
    if objective not in OBJECTIVES:
        raise ConfigError(f"unknown objective '{objective}'; accepted: {sorted(OBJECTIVES)}.")
    return ConfigDict(OBJECTIVES[objective])


def base_config(task: dict[str, Any], objective: str) -> ConfigDict:
    """Every block a run reads, with defaults sized for the `small` model on a CPU.

    task: the `task` block (name, config, data_dir, seq_len, pack, and for local tasks source).
    """
    config = ConfigDict()
    config.task = ConfigDict(dict(dict(config="default", data_dir="data", pack=True), **task))
    # bos/eos/pad (special tokens by name) and chat_template (a template's name) apply to kind "hf".
    config.tokenizer = ConfigDict(
        dict(kind="byte", path="", vocab_size=0, bos="", eos="", pad="", chat_template="")
    )
    # init_from: a Hugging Face checkpoint folder to start from (its config.json sets the shape).
    # scan_layers unset and attention "auto": the layers run as one lax.scan and the attention dense
    # on accelerators; on CPU, unrolled and in blocks (faster there; models.ModelConfig).
    # lora: LoRA adapters (jirl.models.lora); rank 0 is off, alpha 0 means 2 x rank.
    config.model = ConfigDict(
        dict(
            preset="small", init_from="", dtype="float32", remat="none",
            scan_layers=config_dict.placeholder(bool), attention="auto", lora=models.lora.defaults(),
        )
    )  # fmt: skip
    config.train = ConfigDict(
        dict(
            steps=1000,
            batch_size=16,  # global: split over processes and the data/fsdp mesh axes
            microbatches=1,  # gradient accumulation: M slices of batch_size / M rows
            seed=0,
            log_every=20,
            checkpoint_every=250,
            # A step with non-finite gradients is skipped; this many in a row stop the run (exit 3).
            max_nonfinite_steps=DEFAULT_MAX_NONFINITE_STEPS,
            learning_rate=5e-3,
            warmup_steps=50,
            end_lr_ratio=0.1,
            weight_decay=0.1,
            grad_clip=1.0,
            b1=0.9,
            b2=0.99,
        )
    )
    config.checkpoint = ConfigDict(dict(keep=3))
    # Device mesh (-1: the remaining devices); `rules` maps logical axis names to mesh axes, e.g.
    # {"embed": "fsdp", "mlp": "tensor"}, over jirl.sharding.DEFAULT_RULES.
    config.mesh = ConfigDict(dict(data=-1, fsdp=1, tensor=1, rules={}))
    # Multi-host: "auto" joins on a multi-host TPU slice or when coordinator_address is set.
    config.distributed = ConfigDict(
        dict(enabled="auto", coordinator_address="", num_processes=0, process_id=-1, timeout_s=600)
    )
    config.loss = objective_block(objective)
    # Online IQLearn (loss.alpha > 0) samples one response per training example with the current
    # params every `sample_every` steps, at `temperature`, up to `max_new_tokens` new tokens.
    config.online = ConfigDict(dataclasses.asdict(OnlineSampling()))
    config.eval = ConfigDict(
        dict(
            split="validation",
            every=250,
            loss_batches=4,
            answers_every=0,
            num_examples=200,
            max_new_tokens=80,
            temperature=0.0,
            at_start=False,
        )
    )
    return config


def load_config(path: str, *args: str) -> ConfigDict:
    """`get_config(*args)` of the experiment file at `path` (as `--config path:arg` does)."""
    if not os.path.isfile(path):
        raise ConfigError(f"experiment file '{path}' does not exist.")
    spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(*args)


@dataclasses.dataclass(frozen=True, eq=False)
class Run:
    """Everything a command needs from a config, built and checked once by `build`."""

    config: ConfigDict
    task: Any  # a jirl.data task
    data_dir: str
    tokenizer: data.Tokenizer | None  # None when built with tokenize=False (planning)
    model: models.ModelConfig
    objective: losses.Objective
    head: HeadOptions
    online: OnlineSampling | None  # None: the objective is offline
    discriminator: Discriminator | None  # adversarial objectives only
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    mesh: jax.sharding.Mesh
    rules: dict[str, Any]
    lora: models.lora.LoraConfig | None = None  # LoRA adapters on a frozen base (`model.lora`); None: off

    @property
    def batch_size(self) -> int:
        """The global batch: split over processes, then over the data/fsdp mesh axes."""
        return int(self.config.train.batch_size)

    @property
    def local_batch_size(self) -> int:
        """This process's rows of the global batch."""
        return self.batch_size // jax.process_count()

    @property
    def microbatches(self) -> int:
        return int(self.config.train.get("microbatches", 1))

    @property
    def eval_split(self) -> str:
        return self.config.eval.get("split", "validation")


def model_config(config: Any, tokenizer_vocab_size: int | None = None) -> models.ModelConfig:
    """The model of `config.model`; `vocab_size=-1` takes the tokenizer's vocabulary size.

    With `model.init_from` (a Hugging Face checkpoint folder) the shape comes from its config.json;
    the other `model` keys (dtype, remat, scan_layers, ...) still apply, `preset` is not used.
    """
    overrides = {k: v for k, v in config.model.items() if k not in ("preset", "init_from", "lora")}
    init_from = config.model.get("init_from") or ""
    if init_from:
        shape_keys = set(models.PRESETS[config.model.preset])  # the checkpoint decides these
        compute = {k: v for k, v in overrides.items() if k not in shape_keys}
        saved = saved_run_config(init_from)
        if saved is not None:  # a jirl workdir: the shape of the model it trained
            return dataclasses.replace(model_config(saved), **compute)
        from jirl.models import hf

        return hf.config_from_hf(hf.read_config(os.path.expanduser(init_from)), **compute)
    if overrides.get("vocab_size") == -1 and tokenizer_vocab_size is not None:
        overrides["vocab_size"] = tokenizer_vocab_size
    return models.get_config(config.model.preset, **overrides)


def lora_config(config: Any, model: models.ModelConfig) -> models.lora.LoraConfig | None:
    """The `model.lora` block checked against the model; None when LoRA is off (rank 0)."""
    lora = models.lora.from_config(config.model.get("lora"))
    if lora is not None:
        lora.check_model(model)
    return lora


def make_objective(config: Any) -> losses.Objective:
    """The `loss` block's objective with its options bound (the head keys are not its options)."""
    opts = {k: v for k, v in config.loss.items() if k not in HeadOptions.keys()}
    return losses.get(opts.pop("name"), **opts)


def head_options(config: Any) -> HeadOptions:
    """How the objective's statistics are computed: `loss.vocab_chunk` and `loss.response_budget`."""
    return HeadOptions.from_config(config.loss)


def make_mesh(config: Any, devices: list[Any] | None = None) -> tuple[jax.sharding.Mesh, dict[str, Any]]:
    """(mesh, logical-axis rules) of the `mesh` block: data / fsdp / tensor sizes (-1 = the rest), rules."""
    block = dict(config.get("mesh") or {})
    rules = sharding.make_rules(dict(block.pop("rules", None) or {}) or None)
    return sharding.make_mesh(block, devices), rules


def saved_run_config(path: str) -> ConfigDict | None:
    """The config of the jirl run whose workdir is `path` (config.json beside checkpoints/), else None.

    `model.init_from` takes such a workdir as well as a Hugging Face folder: the run starts from the
    newest checkpoint's params (jirl.train.workdir.load_trained) with a fresh optimizer and data order.
    """
    path = os.path.expanduser(path)
    config_path = os.path.join(path, "config.json")
    if not os.path.isdir(os.path.join(path, "checkpoints")) or not os.path.isfile(config_path):
        return None
    with open(config_path) as f:
        return upgrade(ConfigDict(json.load(f)))


def run_tokenizer(config: Any, task: Any, data_dir: str) -> data.Tokenizer:
    """The `tokenizer` block's tokenizer; kind 'hf' without a path reads the `model.init_from` folder's
    (for a jirl workdir, the tokenizer that run read)."""
    cfg = dict(config.get("tokenizer") or {})
    init_from = config.model.get("init_from") or ""
    if cfg.get("kind") == "hf" and not cfg.get("path") and init_from:
        saved = saved_run_config(init_from)
        if saved is None:
            cfg["path"] = os.path.expanduser(init_from)
        else:
            read = saved.get("tokenizer", {})
            cfg["path"] = read.get("path") or saved.model.get("init_from") or ""
            for key in data.HF_ONLY_KEYS:  # what that run named, unless named here
                cfg[key] = cfg.get(key) or read.get(key) or ""
    return data.make_tokenizer(cfg, task, data_dir, config.task.config)


def check_moved_keys(config: Any) -> None:
    """Refuses keys that moved to another block, naming where they went."""
    for old, new in MOVED_KEYS.items():
        block, key = old.split(".")
        if key in (config.get(block) or {}):
            raise ConfigError(f"{old} has moved to {new}; set it there.")


def upgrade(config: ConfigDict) -> ConfigDict:
    """A copy of a saved config (a workdir's config.json) with moved keys in their new places."""
    config = ConfigDict(config.to_dict())
    for old, new in MOVED_KEYS.items():
        (old_block, old_key), (new_block, new_key) = old.split("."), new.split(".")
        if old_key in (config.get(old_block) or {}):
            if new_block not in config:
                config[new_block] = ConfigDict()
            config[new_block][new_key] = config[old_block][old_key]
            del config[old_block][old_key]
    return config


def build(
    config: Any,
    *,
    devices: list[Any] | None = None,
    prepare: bool = False,
    tokenize: bool = True,
    training: bool = True,
) -> Run:
    """The `Run` of `config`, every block checked; a bad config fails before any data or device work.

    devices: the mesh's devices (default: every device, after joining the distributed runtime when
    the `distributed` block asks and `training`). prepare: write the task's dataset when it is
    missing. tokenize: build the tokenizer (it reads prepared data); without it `model.vocab_size`
    must be given. training=False reads a trained run back (`jirl eval`, `jirl export`): no runtime
    to join, and the batch is not checked against this machine's devices and processes.
    """
    check_moved_keys(config)
    model = model_config(config)  # a bad model config fails before any data work
    if not tokenize and model.vocab_size < 1:
        raise ConfigError(
            "model.vocab_size=-1 (the tokenizer's) needs the tokenizer; give the vocabulary size."
        )
    if config.task.seq_len > model.max_len:
        raise ConfigError(f"task.seq_len={config.task.seq_len} exceeds the model's max_len={model.max_len}.")
    lora = lora_config(config, model)
    objective = make_objective(config)
    head = head_options(config)
    if lora is not None and objective.adversarial:
        raise ConfigError(
            "model.lora does not combine with GAIL (loss.name='gail') yet; set model.lora.rank=0 or use "
            "another objective."
        )
    online = online_sampling(config, objective)
    if objective.adversarial and online is not None:
        losses.adversarial.check_sampling_temperature(online.temperature)
    if online is not None:
        check_sampling_budget(online, int(config.task.seq_len), model)
    tx, schedule = make_optimizer(config.train)
    _check_train_block(config)
    data.check_tokenizer_block(config.get("tokenizer"))
    if devices is None and training:
        distributed.initialize(config.get("distributed"))
    mesh, rules = make_mesh(config, devices)
    if training:
        microbatches = int(config.train.get("microbatches", 1))
        sharding.check_batch_size(int(config.train.batch_size), mesh, rules, microbatches)
        _check_processes(config, online, microbatches)
    task = data.get_task(config.task.name)
    data_dir = os.path.expanduser(config.task.data_dir)
    eval_split = config.eval.get("split", "validation")
    if eval_split not in task.splits:
        raise ConfigError(
            f"eval.split='{eval_split}' is not a split of task '{task.name}'; it has {list(task.splits)}."
        )
    if prepare:
        fields = {
            k: config.task[k]
            for k in ("prompt_field", "response_field", "reference_field")
            if k in config.task
        }
        task.prepare(data_dir, config.task.config, config.task.get("source") or None, **fields)
    tokenizer = run_tokenizer(config, task, data_dir) if tokenize else None
    if tokenizer is not None:
        model = model_config(config, tokenizer.vocab_size)
        data.check_vocab(tokenizer, model.vocab_size)
    platform = mesh.devices.flat[0].platform  # the devices compiled for, not this host
    model = model.for_platform(platform)
    discriminator = discriminator_of(config, objective, model)
    if discriminator is not None:
        discriminator = dataclasses.replace(discriminator, model=discriminator.model.for_platform(platform))
    return Run(
        config, task, data_dir, tokenizer, model, objective, head, online, discriminator, tx, schedule, mesh,
        rules, lora,
    )  # fmt: skip


def _check_train_block(config: Any) -> None:
    if int(config.train.steps) < 1 or int(config.train.log_every) < 1:
        raise ConfigError(
            f"train.steps={config.train.steps} and train.log_every={config.train.log_every} "
            "must both be at least 1."
        )
    if int(config.checkpoint.keep) < 1:
        raise ConfigError(f"checkpoint.keep={config.checkpoint.keep} must be at least 1.")
    limit = config.train.get("max_nonfinite_steps", DEFAULT_MAX_NONFINITE_STEPS)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigError(
            f"train.max_nonfinite_steps={limit!r} is not accepted; give an integer >= 1: how many "
            "consecutive steps with non-finite gradients are skipped before the run stops."
        )


def _check_processes(config: Any, online: OnlineSampling | None, microbatches: int) -> None:
    """What this process count and the online sampler allow."""
    count = jax.process_count()
    if int(config.train.batch_size) % count:
        raise ConfigError(
            f"train.batch_size={config.train.batch_size} is not divisible by the {count} processes; "
            "each process reads an equal share of the global batch."
        )
    if online is None:
        return
    if config.loss.name == "gail":
        what, instead = "GAIL (loss.name='gail')", "another objective"
    else:
        what, instead = "online IQLearn (loss.alpha > 0)", "loss.alpha=0"
    if count > 1 and config.loss.name == "gail":  # online IQLearn samples on every process
        raise ConfigError(f"{what} runs on one process for now; use {instead}.")
    if microbatches > 1 and config.loss.name == "gail":  # online IQLearn accumulates (jirl.train.step)
        raise ConfigError(
            f"{what} does not combine with train.microbatches > 1 yet; set train.microbatches=1 or use "
            f"{instead}."
        )
