"""Greedy KV-cache decoding tokens/s of jirl against Hugging Face `generate`: same Llama shape, same
weights, same prompts, alternated in one process.

    python benchmarks/decode_hf.py [--shapes small,issue_512] [--batch 8] [--prompt 32] [--new 128]
        [--repeats 5] [--warmup 1]

Needs the `hf` extra (torch, transformers). For each shape (those of benchmarks/peer_step.py, or a
jirl model preset), jirl's initial model (seed 0) is written as a Hugging Face folder and loaded by
`transformers.LlamaForCausalLM` (float32, its default attention implementation). Both continue the
same --batch random prompts of --prompt tokens each (no padding) by exactly --new tokens, greedily,
with a KV cache: jirl with `jirl.sampling.decode` (one jitted loop; prefill, then one token per step
against a preallocated cache; it also computes each token's log-probability and entropy), Hugging
Face with `model.generate(do_sample=False, use_cache=True)` under `torch.inference_mode`. Neither
stops early: jirl's EOS id is -1 and Hugging Face's is unset, so every row decodes all --new tokens.
torch's thread count is left at its default (reported as `torch_threads`). Runs alternate (jirl,
HF, then HF, jirl, ...); compile and --warmup runs are excluded. Prints one JSON line per shape: the
median seconds and tokens/s of each, `ratio` = jirl tokens/s / HF tokens/s (goal: >= 2), and how
far the two agree: `same_tokens` (fraction of equal new tokens) and `rows_identical` (fraction of
rows equal throughout). Same weights, greedy: they agree, up to a rare late divergence where float
rounding flips a near-tie.
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
from peer_step import SHAPES  # benchmarks/peer_step.py: name -> (ModelConfig fields, batch, seq)

from jirl import models, sampling
from jirl.models import hf as jirl_hf

NO_EOS = -1  # never produced: jirl decodes every row to --new tokens


def _fields(name: str) -> dict:
    if name in SHAPES:
        return dict(SHAPES[name][0])
    return dict(models.PRESETS[name])


def measure(name: str, args: argparse.Namespace) -> dict:
    import torch
    import transformers

    fields = _fields(name)
    fields["max_len"] = max(fields.get("max_len", 0), args.prompt + args.new)
    cfg = models.ModelConfig(**fields)
    graphdef, params = models.split(models.create(cfg, seed=0))
    rng = np.random.default_rng(0)
    prompts = rng.integers(3, cfg.vocab_size, (args.batch, args.prompt)).astype(np.int32)
    block, lengths = jnp.asarray(prompts), jnp.full((args.batch,), args.prompt, jnp.int32)
    key = jax.random.PRNGKey(0)

    transformers.utils.logging.disable_progress_bar()
    with tempfile.TemporaryDirectory() as folder:
        jirl_hf.save(jax.tree.map(np.asarray, params), cfg, folder, model_type="llama")
        model = transformers.LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32)
    model.eval()
    generation = transformers.GenerationConfig(
        max_new_tokens=args.new,
        do_sample=False,
        use_cache=True,
        eos_token_id=None,
        bos_token_id=None,
        pad_token_id=0,
    )
    input_ids = torch.from_numpy(prompts.astype(np.int64))
    attention_mask = torch.ones_like(input_ids)

    def jirl_decode() -> np.ndarray:
        out = sampling.decode(
            graphdef, params, block, lengths, key, max_new_tokens=args.new, eos_id=NO_EOS, pad_id=0
        )
        return np.asarray(jax.block_until_ready(out["tokens"]))

    def hf_generate() -> np.ndarray:
        with torch.inference_mode():
            out = model.generate(
                input_ids=input_ids, attention_mask=attention_mask, generation_config=generation
            )
        return out[:, args.prompt :].numpy()

    sides = {"jirl": jirl_decode, "hf": hf_generate}
    first = {side: fn() for side, fn in sides.items()}  # compiles (jirl)
    for side, tokens in first.items():
        if tokens.shape != (args.batch, args.new):
            raise SystemExit(f"{side} produced {tokens.shape} new tokens, not {(args.batch, args.new)}.")
    equal = first["jirl"] == first["hf"]
    for _ in range(args.warmup):
        for fn in sides.values():
            fn()
    times: dict[str, list[float]] = {side: [] for side in sides}
    for i in range(args.repeats):
        for side in ["jirl", "hf"] if i % 2 == 0 else ["hf", "jirl"]:
            start = time.perf_counter()
            sides[side]()
            times[side].append(time.perf_counter() - start)
    median = {side: statistics.median(t) for side, t in times.items()}
    rate = {side: args.batch * args.new / m for side, m in median.items()}
    return {
        "benchmark": "decode_hf",
        "shape": name,
        "embed_dim": cfg.embed_dim,
        "num_layers": cfg.num_layers,
        "mlp_dim": cfg.mlp_dim,
        "num_heads": cfg.num_heads,
        "num_kv_heads": cfg.num_kv_heads,
        "vocab_size": cfg.vocab_size,
        "batch": args.batch,
        "prompt": args.prompt,
        "new_tokens": args.new,
        "repeats": args.repeats,
        "backend": jax.default_backend(),
        "device_kind": jax.devices()[0].device_kind,
        "jax_version": jax.__version__,
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "torch_threads": torch.get_num_threads(),
        "hf_attention": model.config._attn_implementation,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "jirl_median_s": round(median["jirl"], 4),
        "hf_median_s": round(median["hf"], 4),
        "jirl_tokens_per_s": round(rate["jirl"], 1),
        "hf_tokens_per_s": round(rate["hf"], 1),
        "ratio": round(rate["jirl"] / rate["hf"], 3),
        "same_tokens": round(float(equal.mean()), 4),
        "rows_identical": round(float(equal.all(axis=1).mean()), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shapes",
        default="small,issue_512",
        help=f"comma-separated, among {list(SHAPES)} or a jirl model preset",
    )
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--prompt", type=int, default=32, help="prompt tokens per row")
    parser.add_argument("--new", type=int, default=128, help="new tokens per row")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args()
    for name in args.shapes.split(","):
        if name not in SHAPES and name not in models.PRESETS:
            parser.error(f"unknown shape {name!r}; accepted: {list(SHAPES)} or {sorted(models.PRESETS)}")
        print(json.dumps(measure(name, args)), flush=True)


if __name__ == "__main__":
    main()
