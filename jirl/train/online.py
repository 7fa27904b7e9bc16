"""Policy batches for online IQLearn: the model's own responses to the prompts of the expert batch.

Every `loss.sample_every` steps the current parameters sample one response per expert example
(same prompt); the (prompt, sampled response) examples are packed into a batch of the expert
batch's shape, with `loss_mask` on the sampled tokens (EOS included when the model ended).
Between samplings the last policy batch is reused.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx

from jirl import sampling

KEYS = ("inputs", "targets", "loss_mask", "segment_ids", "positions")


def prompts_of(batch: dict[str, np.ndarray]) -> list[list[int]]:
    """BOS + prompt of every example of a packed (or padded) decoder batch, in row order.

    Within a segment the prompt positions come first (loss_mask 0): their inputs are BOS, p_1 ..
    p_{n-1}, and the input at the first response position is p_n.
    """
    prompts = []
    for row in range(batch["inputs"].shape[0]):
        segments = batch["segment_ids"][row]
        for seg in np.unique(segments[segments > 0]):
            where = np.flatnonzero(segments == seg)
            n_prompt = int(np.sum(batch["loss_mask"][row, where] == 0))
            prompts.append(batch["inputs"][row, where[: n_prompt + 1]].tolist())
    return prompts


def pack(sequences: Sequence[tuple[list[int], list[int]]], batch_size: int, seq_len: int):
    """First-fit packing of (prompt ids, response ids) examples into a [batch_size, seq_len] batch.

    Each example is `prompt + response` as next-token pairs (inputs = seq[:-1], targets = seq[1:]),
    cut to seq_len; loss_mask is 1 where the target is a response token. Returns (batch, number of
    examples dropped: no room left in any row, or no response token within seq_len).
    """
    batch = {k: np.zeros((batch_size, seq_len), np.float32 if k == "loss_mask" else np.int32) for k in KEYS}
    used = np.zeros(batch_size, np.int64)
    counts = np.zeros(batch_size, np.int64)
    dropped = 0
    for prompt, response in sequences:
        seq = (list(prompt) + list(response))[: seq_len + 1]
        n = len(seq) - 1
        if len(response) == 0 or len(prompt) >= len(seq):  # no response token fits in seq_len
            dropped += 1
            continue
        rows = np.flatnonzero(used + n <= seq_len)
        if rows.size == 0:
            dropped += 1
            continue
        row, start = int(rows[0]), int(used[rows[0]])
        span = slice(start, start + n)
        counts[row] += 1
        batch["inputs"][row, span] = seq[:-1]
        batch["targets"][row, span] = seq[1:]
        batch["loss_mask"][row, span] = (np.arange(1, n + 1) >= len(prompt)).astype(np.float32)
        batch["segment_ids"][row, span] = counts[row]
        batch["positions"][row, span] = np.arange(n)
        used[row] += n
    return batch, dropped


class PolicySampler:
    """Samples policy responses with the current params and packs them (see the module docstring)."""

    def __init__(self, graphdef: nnx.GraphDef, tokenizer: Any, *, every: int, max_new_tokens: int,
                 temperature: float, seed: int):  # fmt: skip
        if every < 1:
            raise ValueError(f"loss.sample_every={every} must be at least 1.")
        self.graphdef, self.tokenizer = graphdef, tokenizer
        self.every, self.max_new_tokens, self.temperature, self.seed = (
            every,
            max_new_tokens,
            temperature,
            seed,
        )
        self._last: dict[str, np.ndarray] | None = None

    def __call__(self, params: Any, batch: dict[str, np.ndarray], step: int) -> tuple[dict, dict[str, float]]:
        """(policy batch, stats) for train step `step` (1-based); samples when due or when none is cached."""
        if self._last is not None and (step - 1) % self.every:
            return self._last, {}
        start = time.perf_counter()
        prompts = prompts_of(batch)
        # A multiple of 16 prompts (the last repeated): a few batch shapes, so a few compilations.
        padded = prompts + [prompts[-1]] * (-len(prompts) % 16)
        responses = sampling.generate(
            self.graphdef,
            params,
            padded,
            max_new_tokens=self.max_new_tokens,
            eos_id=self.tokenizer.eos_id,
            pad_id=self.tokenizer.pad_id,
            temperature=self.temperature,
            seed=int(jax.random.randint(jax.random.fold_in(jax.random.key(self.seed), step), (), 0, 2**30)),
            batch_size=len(padded),
        )[: len(prompts)]
        b, t = batch["inputs"].shape
        self._last, dropped = pack(list(zip(prompts, responses)), b, t)
        seconds = time.perf_counter() - start
        tokens = float(sum(len(r) for r in responses))
        return self._last, dict(
            sample_seconds=seconds,
            sample_tokens=tokens,
            sample_tokens_per_sec=tokens / max(seconds, 1e-9),
            policy_examples_dropped=float(dropped),
        )
