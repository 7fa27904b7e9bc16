"""jirl's MLE train step against Hugging Face LlamaForCausalLM + torch AdamW: same shape, same
weights, same batch, alternated in one process.

    python benchmarks/peer_step.py [--shapes issue_256,issue_512,small] [--repeats 10] [--warmup 3]
        [--scan_layers default|true|false] [--threads N] [--malloc reuse|default]

Needs the `hf` extra (torch, transformers). For each shape, both sides start from the same
parameters (jirl's initial model written as a Hugging Face folder and loaded by transformers),
train on the same random tokens with every target in the loss, clip gradients at 1.0 and take an
AdamW step. The steps alternate (jirl, torch, then torch, jirl, ...) so that both see the same
machine state; compile and `--warmup` steps are excluded. Prints one JSON line per shape with the
median seconds per step of each and `ratio` = jirl tokens/s / torch tokens/s (goal: >= 1.0),
and the first step's loss of both (equal weights and data: they agree to ~1e-5). `--malloc reuse`
(the default, as `jirl train` runs) keeps freed host memory for reuse (`jirl.host_memory`); it is
one setting of the process, so both sides run under it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jirl import forward, host_memory, losses, models
from jirl.models import hf as jirl_hf
from jirl.train import create_train_state, make_train_step

# name -> (ModelConfig fields, batch, sequence length).
LLAMA = dict(max_len=512, norm_eps=1e-6)
SHAPES = {
    # The shapes of the issue that measured the gap: d=256, 4 layers, byte vocabulary, 16 x 256 ...
    "issue_256": (
        dict(
            LLAMA,
            vocab_size=260,
            embed_dim=256,
            num_layers=4,
            num_heads=4,
            num_kv_heads=4,
            head_dim=64,
            mlp_dim=1024,
        ),
        16,
        256,
    ),
    # ... and d=512, 8 layers, vocabulary 8192, 8 x 256.
    "issue_512": (
        dict(
            LLAMA,
            vocab_size=8192,
            embed_dim=512,
            num_layers=8,
            num_heads=8,
            num_kv_heads=8,
            head_dim=64,
            mlp_dim=2048,
        ),
        8,
        256,
    ),
    # The demo's model (grouped-query attention, 4 heads over 2 kv heads) at its batch.
    "small": (dict(models.PRESETS["small"]), 16, 256),
}
LEARNING_RATE = 3e-4
CLIP = 1.0


def jirl_side(fields: dict, scan_layers: str, batch: dict):
    """(config, step function closing over its state, first loss) for jirl's MLE step."""
    overrides = {} if scan_layers == "default" else {"scan_layers": scan_layers == "true"}
    cfg = models.ModelConfig(**{**fields, **overrides})
    tx = optax.chain(optax.clip_by_global_norm(CLIP), optax.adamw(LEARNING_RATE, weight_decay=0.0))
    graphdef, state = create_train_state(cfg, tx, seed=0)
    params0 = jax.tree.map(np.asarray, state.params)
    step = make_train_step(
        graphdef, losses.get("mle"), tx, optax.constant_schedule(LEARNING_RATE), head=forward.DEFAULT_HEAD
    )
    holder = {"state": state}

    def run() -> float:
        start = time.perf_counter()
        holder["state"], metrics = step(holder["state"], batch)
        loss = float(metrics["loss"])  # waits for the step
        run.last_loss = loss
        return time.perf_counter() - start

    return cfg, params0, run


def torch_side(cfg: models.ModelConfig, params0, tokens: np.ndarray):
    """A step function for LlamaForCausalLM loaded from jirl's initial parameters."""
    import torch
    import transformers

    with tempfile.TemporaryDirectory() as folder:
        jirl_hf.save(params0, cfg, folder, model_type="llama")
        model = transformers.LlamaForCausalLM.from_pretrained(folder, torch_dtype=torch.float32)
    model.config.use_cache = False
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=0.0)
    inputs = torch.from_numpy(tokens[:, :-1].astype(np.int64))
    targets = torch.from_numpy(tokens[:, 1:].astype(np.int64))

    def run() -> float:
        start = time.perf_counter()
        logits = model(input_ids=inputs).logits
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        run.last_loss = float(loss.detach())
        return time.perf_counter() - start

    return run


def measure(name: str, args) -> dict:
    fields, batch_size, seq = SHAPES[name]
    rng = np.random.default_rng(0)
    tokens = rng.integers(3, fields["vocab_size"], (batch_size, seq + 1)).astype(np.int32)
    batch = {
        "inputs": jnp.asarray(tokens[:, :-1]),
        "targets": jnp.asarray(tokens[:, 1:]),
        "loss_mask": jnp.ones((batch_size, seq), jnp.float32),
    }
    cfg, params0, jirl_step = jirl_side(fields, args.scan_layers, batch)
    torch_step = torch_side(cfg, params0, tokens)
    sides = {"jirl": jirl_step, "torch": torch_step}
    first_loss = {}
    for side, run in sides.items():
        run()  # compiles (jirl); the first step from the shared initial parameters
        first_loss[side] = run.last_loss
    for _ in range(args.warmup):
        for run in sides.values():
            run()
    times: dict[str, list[float]] = {side: [] for side in sides}
    for i in range(args.repeats):
        for side in ["jirl", "torch"] if i % 2 == 0 else ["torch", "jirl"]:
            times[side].append(sides[side]())
    median = {side: statistics.median(t) for side, t in times.items()}
    tokens_per_step = batch_size * seq
    return {
        "benchmark": "peer_step",
        "shape": name,
        "embed_dim": cfg.embed_dim,
        "num_layers": cfg.num_layers,
        "mlp_dim": cfg.mlp_dim,
        "num_heads": cfg.num_heads,
        "num_kv_heads": cfg.num_kv_heads,
        "vocab_size": cfg.vocab_size,
        "batch": batch_size,
        "seq": seq,
        "scan_layers": cfg.scans_layers(),
        "attention": cfg.attention_form(),
        "malloc_reuse": args.reused,
        "repeats": args.repeats,
        "backend": jax.default_backend(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "jirl_median_s": round(median["jirl"], 4),
        "torch_median_s": round(median["torch"], 4),
        "jirl_tokens_per_s": round(tokens_per_step / median["jirl"], 1),
        "torch_tokens_per_s": round(tokens_per_step / median["torch"], 1),
        "ratio": round(median["torch"] / median["jirl"], 3),
        "first_loss_jirl": round(first_loss["jirl"], 6),
        "first_loss_torch": round(first_loss["torch"], 6),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default=",".join(SHAPES), help=f"comma-separated, among {list(SHAPES)}")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--scan_layers", choices=("default", "true", "false"), default="default")
    parser.add_argument("--threads", type=int, default=0, help="torch's intra-op threads (0: one per CPU)")
    parser.add_argument("--malloc", choices=("reuse", "default"), default="reuse")
    args = parser.parse_args()
    args.reused = args.malloc == "reuse" and host_memory.reuse_freed_memory()
    import torch

    torch.set_num_threads(args.threads or os.cpu_count())
    for name in args.shapes.split(","):
        if name not in SHAPES:
            parser.error(f"unknown shape {name!r}; accepted: {list(SHAPES)}")
        print(json.dumps(measure(name, args)), flush=True)


if __name__ == "__main__":
    main()
