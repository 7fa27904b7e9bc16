"""Tokens/s of KV-cache decoding against recomputing the full forward pass at every step.

    python benchmarks/decode.py [--preset small] [--batch 8] [--prompt 32] [--new 256] [--repeats 3]

Both decode greedily from the same model and left-padded prompts, each as one jitted loop: A is
`jirl.sampling.decode` (prefill, then one token per step against the KV cache); B re-runs the model
over a fixed [B, prompt + new] token buffer at every step (causal, so the unwritten slots are not
seen) and appends the argmax at the current position. Both must produce the same tokens. Compile
and one warm-up run are excluded; A and B alternate; prints one JSON line with the median rates
and "ratio" = kv / recompute (target >= 5).
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jirl import models, sampling

NO_EOS = -1  # never sampled: every row decodes all new tokens, so both loops do the same work


@functools.partial(jax.jit, static_argnames=("graphdef", "max_new_tokens"))
def recompute_decode(
    graphdef: nnx.GraphDef, params, prompt_BP: jax.Array, lengths_B: jax.Array, *, max_new_tokens: int
) -> jax.Array:
    """Greedy tokens [B, N]: token i = argmax of the full forward pass over the buffer, at slot P - 1 + i."""
    model = nnx.merge(graphdef, params)
    b, p = prompt_BP.shape
    total = p + max_new_tokens
    pad_B = p - lengths_B
    slots_BT = jnp.broadcast_to(jnp.arange(total, dtype=jnp.int32), (b, total))
    segments_BT = (slots_BT >= pad_B[:, None]).astype(jnp.int32)
    positions_BT = jnp.maximum(slots_BT - pad_B[:, None], 0)
    tokens_BT = jnp.zeros((b, total), jnp.int32).at[:, :p].set(prompt_BP)

    def step(i, tokens_BT):
        logits_BTV = model(tokens_BT, positions=positions_BT, segment_ids=segments_BT)
        logits_BV = jax.lax.dynamic_index_in_dim(logits_BTV, p - 1 + i, axis=1, keepdims=False)
        token_B = jnp.argmax(logits_BV.astype(jnp.float32), axis=-1).astype(jnp.int32)
        return jax.lax.dynamic_update_slice(tokens_BT, token_B[:, None], (0, p + i))

    return jax.lax.fori_loop(0, max_new_tokens, step, tokens_BT)[:, p:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--prompt", type=int, default=32, help="longest prompt; others are 3/4 of it and up")
    parser.add_argument("--new", type=int, default=256, help="new tokens per prompt")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    base = models.get_config(args.preset)
    cfg = models.get_config(args.preset, max_len=max(base.max_len, args.prompt + args.new))
    graphdef, params = models.split(models.create(cfg, seed=0))
    rng = np.random.default_rng(0)
    lengths = rng.integers(max(1, 3 * args.prompt // 4), args.prompt + 1, args.batch)
    lengths[0] = args.prompt
    prompts = [list(rng.integers(3, cfg.vocab_size, n)) for n in lengths]
    block, lengths_B = map(jnp.asarray, sampling.left_pad(prompts, args.prompt, pad_id=0))
    key = jax.random.PRNGKey(0)

    def kv() -> jax.Array:
        out = sampling.decode(
            graphdef, params, block, lengths_B, key, max_new_tokens=args.new, eos_id=NO_EOS, pad_id=0
        )
        return out["tokens"]

    def recompute() -> jax.Array:
        return recompute_decode(graphdef, params, block, lengths_B, max_new_tokens=args.new)

    runs = {"kv": kv, "recompute": recompute}
    first = {name: np.asarray(jax.block_until_ready(fn())) for name, fn in runs.items()}  # compile, warm up
    same = float(np.mean(first["kv"] == first["recompute"]))
    if same != 1.0:
        raise SystemExit(f"KV-cache and recompute decoding disagree on {1 - same:.2%} of the greedy tokens.")

    times: dict[str, list[float]] = {name: [] for name in runs}
    for i in range(args.repeats):
        for name in list(runs) if i % 2 == 0 else list(runs)[::-1]:
            start = time.perf_counter()
            jax.block_until_ready(runs[name]())
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) for name, t in times.items()}
    rates = {name: args.batch * args.new / m for name, m in medians.items()}
    print(
        json.dumps(
            {
                "benchmark": "decode",
                "preset": args.preset,
                "max_len": cfg.max_len,
                "batch": args.batch,
                "prompt": args.prompt,
                "new_tokens": args.new,
                "repeats": args.repeats,
                "backend": jax.default_backend(),
                "machine": platform.machine(),
                "kv_median_s": round(medians["kv"], 4),
                "recompute_median_s": round(medians["recompute"], 4),
                "kv_tokens_per_sec": round(rates["kv"], 1),
                "recompute_tokens_per_sec": round(rates["recompute"], 1),
                "ratio": round(rates["kv"] / rates["recompute"], 2),
            }
        )
    )


if __name__ == "__main__":
    main()
