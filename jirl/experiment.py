"""Experiment files: the blocks they share, and loading one (`experiments/NAME.py` with `get_config(arg)`).

An experiment file builds its config from `base_config(task, objective)` and changes what its task
needs; the objective is always the `loss` block, one of `OBJECTIVES`, so swapping it is one word.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from typing import Any

from ml_collections import ConfigDict

from jirl.forward import HeadOptions

# Online IQLearn (alpha > 0) samples one response per training example with the current params,
# every `sample_every` steps, at `sample_temperature`, up to `sample_max_tokens` new tokens.
_SAMPLING = dict(sample_every=1, sample_temperature=1.0, sample_max_tokens=96)
# Every objective reads the logits through the head stage (jirl.forward): vocab_chunk = 0 takes full
# logits, N > 0 chunks of about N vocabulary entries from the hidden states (never [B, T, V]), for at
# most response_budget x T response positions per row when every row of a batch fits.
_HEAD = dataclasses.asdict(HeadOptions())
OBJECTIVES = {
    "mle": dict(name="mle", label_smoothing=0.0, z_loss=0.0, **_HEAD),
    "iqlearn": dict(
        name="iqlearn", lam=0.1, gamma=1.0, alpha=0.0, stop_grad_next_value=False, **_SAMPLING, **_HEAD
    ),
    "iqlearn_online": dict(
        name="iqlearn", lam=0.1, gamma=1.0, alpha=0.1, stop_grad_next_value=False, **_SAMPLING, **_HEAD
    ),
}


def objective_block(objective: str) -> ConfigDict:
    """The `loss` block of `objective` (mle | iqlearn)."""
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective '{objective}'; accepted: {sorted(OBJECTIVES)}.")
    return ConfigDict(OBJECTIVES[objective])


def base_config(task: dict[str, Any], objective: str) -> ConfigDict:
    """Every block a run reads, with defaults sized for the `small` model on a CPU.

    task: the `task` block (name, config, data_dir, seq_len, pack, and for local tasks source).
    """
    config = ConfigDict()
    config.task = ConfigDict(dict(dict(config="default", data_dir="data", pack=True), **task))
    config.tokenizer = ConfigDict(dict(kind="byte", path="", vocab_size=0))
    # An unrolled layer loop is ~12% faster than scan for the small model on XLA:CPU.
    # init_from: a Hugging Face checkpoint folder to start from (its config.json sets the shape).
    config.model = ConfigDict(
        dict(preset="small", init_from="", dtype="float32", remat="none", scan_layers=False)
    )
    config.train = ConfigDict(
        dict(
            steps=1000,
            batch_size=16,  # global: split over processes and the data/fsdp mesh axes
            microbatches=1,  # gradient accumulation: M slices of batch_size / M rows
            seed=0,
            log_every=20,
            checkpoint_every=250,
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
        raise ValueError(f"experiment file '{path}' does not exist.")
    spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(*args)
