"""Policy batches for online objectives: the model's own responses to the prompts of the expert batch.

Every `online.sample_every` steps the current parameters sample one response per expert example
(same prompt), or for adversarial imitation K responses to each of the first n / K prompts (so the
rewards have a per-prompt baseline); the (prompt, sampled response) examples are packed into a batch
of the expert batch's shape, with `loss_mask` on the sampled tokens (EOS included when the model
ended). With K responses per prompt the batch also holds `example_ids` and `group_ids` (1-based,
0 on padding) and `sample_logp`, log pi of each token at the params that sampled it.
Between samplings the last policy batch is reused. For an encoder-decoder the prompts are the
encoder segments (prompt + EOS), and the policy batch pairs them with the sampled responses
(`pack_seq2seq`), as the pipeline pairs expert ones.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from jirl import data, sampling, sharding
from jirl.errors import ConfigError
from jirl.train import device_policy

KEYS = ("inputs", "targets", "loss_mask", "segment_ids", "positions")
ENCODER_KEYS = ("encoder_inputs", "encoder_segment_ids", "encoder_positions")
GROUP_KEYS = ("example_ids", "group_ids")


def prompts_of(batch: dict[str, np.ndarray]) -> list[list[int]]:
    """BOS + prompt of every example of a packed (or padded) decoder batch, in row order; for an
    encoder-decoder batch, the encoder segments (prompt + EOS) in row and segment order.

    Within a decoder segment the prompt positions come first (loss_mask 0): their inputs are BOS,
    p_1 .. p_{n-1}, and the input at the first response position is p_n. A multi-turn conversation
    (several runs of loss_mask 1) is prompted with everything before its last run: the conversation
    up to its last assistant turn plus the generation prompt.
    """
    if "encoder_inputs" in batch:
        return [
            batch["encoder_inputs"][row][batch["encoder_segment_ids"][row] == seg].tolist()
            for row in range(batch["encoder_inputs"].shape[0])
            for seg in np.unique(batch["encoder_segment_ids"][row][batch["encoder_segment_ids"][row] > 0])
        ]
    prompts = []
    for row in range(batch["inputs"].shape[0]):
        segments = batch["segment_ids"][row]
        for seg in np.unique(segments[segments > 0]):
            where = np.flatnonzero(segments == seg)
            prompts.append(
                batch["inputs"][
                    row, where[: last_response_start(batch["loss_mask"][row, where]) + 1]
                ].tolist()
            )
    return prompts


def last_response_start(mask: np.ndarray) -> int:
    """The position where the last run of 1s in one example's loss mask starts (its length without one)."""
    starts = np.flatnonzero((mask > 0) & (np.concatenate([[0.0], mask[:-1]]) == 0))
    return int(starts[-1]) if starts.size else len(mask)


def pack(
    sequences: Sequence[tuple[list[int], list[int]]],
    batch_size: int,
    seq_len: int,
    groups: Sequence[int] | None = None,
):
    """First-fit packing of (prompt ids, response ids) examples into a [batch_size, seq_len] batch.

    Each example is `prompt + response` as next-token pairs (inputs = seq[:-1], targets = seq[1:]),
    cut to seq_len; loss_mask is 1 where the target is a response token. With `groups` (the prompt
    index of each example), also `example_ids` (i + 1 on the tokens of example i) and `group_ids`
    (its group + 1), 0 on padding. Returns (batch, number of examples dropped: no room left in any
    row, or no response token within seq_len).
    """
    keys = KEYS + (GROUP_KEYS if groups is not None else ())
    batch = {k: np.zeros((batch_size, seq_len), np.float32 if k == "loss_mask" else np.int32) for k in keys}
    used = np.zeros(batch_size, np.int64)
    counts = np.zeros(batch_size, np.int64)
    dropped = 0
    for index, (prompt, response) in enumerate(sequences):
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
        if groups is not None:
            batch["example_ids"][row, span] = index + 1
            batch["group_ids"][row, span] = groups[index] + 1
        used[row] += n
    return batch, dropped


def pack_seq2seq(
    sequences: Sequence[tuple[list[int], list[int]]],
    batch_size: int,
    seq_len: int,
    start_id: int,
    groups: Sequence[int] | None = None,
) -> tuple[dict[str, np.ndarray], int]:
    """First-fit packing of (encoder prompt, response) examples into an encoder-decoder batch.

    Encoder side: the prompt (cut to seq_len); decoder side: inputs [start] + response[:-1],
    targets = response, loss_mask 1, both cut to seq_len. An example takes the same row and
    segment id on both sides; `groups` as in `pack` (decoder side). Returns (batch, number of
    examples dropped for want of room).
    """
    keys = KEYS + (GROUP_KEYS if groups is not None else ())
    batch = {k: np.zeros((batch_size, seq_len), np.float32 if k == "loss_mask" else np.int32) for k in keys}
    batch.update({k: np.zeros((batch_size, seq_len), np.int32) for k in ENCODER_KEYS})
    used_enc, used_dec = np.zeros(batch_size, np.int64), np.zeros(batch_size, np.int64)
    counts = np.zeros(batch_size, np.int64)
    dropped = 0
    for index, (prompt, response) in enumerate(sequences):
        prompt, response = list(prompt)[:seq_len], list(response)[:seq_len]
        rows = np.flatnonzero((used_enc + len(prompt) <= seq_len) & (used_dec + len(response) <= seq_len))
        if not response or not prompt or rows.size == 0:
            dropped += 1
            continue
        row = int(rows[0])
        counts[row] += 1
        enc = slice(int(used_enc[row]), int(used_enc[row]) + len(prompt))
        dec = slice(int(used_dec[row]), int(used_dec[row]) + len(response))
        batch["encoder_inputs"][row, enc] = prompt
        batch["encoder_segment_ids"][row, enc] = counts[row]
        batch["encoder_positions"][row, enc] = np.arange(len(prompt))
        batch["inputs"][row, dec] = [start_id] + response[:-1]
        batch["targets"][row, dec] = response
        batch["loss_mask"][row, dec] = 1.0
        batch["segment_ids"][row, dec] = counts[row]
        batch["positions"][row, dec] = np.arange(len(response))
        if groups is not None:
            batch["example_ids"][row, dec] = index + 1
            batch["group_ids"][row, dec] = groups[index] + 1
        used_enc[row] += len(prompt)
        used_dec[row] += len(response)
    return batch, dropped


class PolicySampler:
    """Samples policy responses with the current params and packs them (see the module docstring).

    With `mesh`, every process samples the prompts of its own rows of the expert batch in one global
    decode (parameters as they are sharded, prompts split over the data axes like the batch), and the
    policy batch comes back as global arrays sharded like the expert batch. Row keys are
    fold_in(fold_in(key(seed), step), i) for the i-th prompt of the global batch (prompts numbered in
    process order), so that N processes draw what one process draws on the same global batch.
    Without `mesh` (one device), the batch comes back as host arrays.

    on_device: for unpacked expert batches (one example per row) of a decoder-only model, the prompts
    are read and the policy batch built on the devices from the global expert batch
    (`jirl.train.device_policy`): no host round trip but one scalar, one example per row.
    """

    def __init__(self, graphdef: nnx.GraphDef, tokenizer: Any, *, every: int, max_new_tokens: int,
                 temperature: float, seed: int, mesh: jax.sharding.Mesh | None = None, rules: Any = None,
                 samples_per_prompt: int = 0, sample_logp: Callable[[Any, dict], Any] | None = None,
                 on_device: bool = False):  # fmt: skip
        """samples_per_prompt = K > 0: K responses to each of the first n / K prompts, with group keys;
        0: one response per example. sample_logp: (params, policy batch) -> log pi of its tokens,
        stored as `sample_logp` when given."""
        if every < 1:
            raise ConfigError(f"online.sample_every={every} must be at least 1.")
        self.graphdef, self.tokenizer = graphdef, tokenizer
        self.stop_ids = data.stop_ids(tokenizer)  # a response ends at EOS or a chat end-of-turn token
        self.every, self.max_new_tokens = every, max_new_tokens
        self.temperature, self.seed = temperature, seed
        self.mesh, self.rules = mesh, rules
        self.samples_per_prompt, self.sample_logp = samples_per_prompt, sample_logp
        self.on_device = on_device
        self._last: dict[str, Any] | None = None

    @property
    def last(self) -> dict[str, Any] | None:
        """The policy batch of the latest sampling (reused until the next one), for the checkpoint."""
        return self._last

    def resume(self, batch: dict[str, Any]) -> None:
        """Continues from a checkpoint: `batch` (its saved policy batch) serves until the next sampling."""
        self._last = batch

    def keys(self, encoder_decoder: bool) -> tuple[str, ...]:
        """The keys of the policy batches this sampler makes."""
        keys = KEYS + (ENCODER_KEYS if encoder_decoder else ())
        if self.samples_per_prompt:
            keys += GROUP_KEYS
        return keys + (("sample_logp",) if self.sample_logp is not None else ())

    def due(self, step: int) -> bool:
        """Whether train step `step` samples (else it reuses the last policy batch)."""
        return self._last is None or (step - 1) % self.every == 0

    def __call__(
        self, params: Any, batch: dict[str, np.ndarray], step: int, global_batch: dict[str, Any] | None = None
    ) -> tuple[dict, dict[str, float]]:
        """(policy batch, stats) for train step `step` (1-based); samples when due or when none is cached.

        `batch` is this process's rows of the expert batch (host arrays), `global_batch` the same batch
        as global arrays (read on the devices when `on_device`); on several processes every process
        calls this at the same step."""
        if self._last is not None and (step - 1) % self.every:
            return self._last, {}
        start = time.perf_counter()
        if self.on_device:
            if global_batch is None:
                global_batch = {k: jnp.asarray(v) for k, v in batch.items()}
            policy, tokens, dropped = self._sample_on_device(params, global_batch, step)
            return self._finish(params, policy, start, tokens, dropped)
        prompts, groups = prompts_of(batch), None
        if self.samples_per_prompt:
            k = self.samples_per_prompt
            chosen = prompts[: max(1, len(prompts) // k)]
            groups = [g for g in range(len(chosen)) for _ in range(k)]
            prompts = [chosen[g] for g in groups]
        config = nnx.merge(self.graphdef, params).config
        responses = self._sample(params, prompts, step, config)
        b, t = batch["inputs"].shape
        examples = list(zip(prompts, responses))
        if config.is_encoder_decoder:
            policy, dropped = pack_seq2seq(examples, b, t, config.decoder_start_id, groups)
        else:
            policy, dropped = pack(examples, b, t, groups)
        if self.mesh is not None:
            policy = sharding.shard_batch(policy, self.mesh, self.rules)
        return self._finish(params, policy, start, float(sum(len(r) for r in responses)), dropped)

    def _finish(self, params: Any, policy: dict, start: float, tokens: float, dropped: int) -> tuple:
        """Adds `sample_logp` when asked, caches the batch; (batch, stats)."""
        if self.sample_logp is not None:
            logp = self.sample_logp(params, policy)
            policy["sample_logp"] = (
                np.asarray(logp, np.float32)
                if self.mesh is None
                else jax.device_put(logp, sharding.batch_sharding(self.mesh, self.rules))
            )
        self._last = policy
        seconds = time.perf_counter() - start
        return self._last, dict(
            sample_seconds=seconds,
            sample_tokens=tokens,
            sample_tokens_per_sec=tokens / max(seconds, 1e-9),
            policy_examples_dropped=float(dropped),
        )

    def _sample_on_device(self, params: Any, expert: dict[str, Any], step: int) -> tuple[dict, float, int]:
        """(policy batch, response tokens, examples dropped) built on the devices (`device_policy`)."""
        config = nnx.merge(self.graphdef, params).config
        expert = {k: expert[k] for k in ("inputs", "loss_mask", "segment_ids")}
        longest = int(jax.device_get(jnp.max(device_policy.prompt_lengths(expert))))
        room = config.max_len - self.max_new_tokens
        self._check_room(longest, room, config)
        k = self.samples_per_prompt
        base = jax.random.fold_in(jax.random.PRNGKey(self.seed), step)
        block, lengths, keys = device_policy.prompt_block(
            expert, base, length=min(_round_up(longest, 32), room), pad_id=self.tokenizer.pad_id,
            samples_per_prompt=k,
        )  # fmt: skip
        out = sampling.decode(
            self.graphdef, params, block, lengths, keys, max_new_tokens=self.max_new_tokens,
            eos_id=self.stop_ids, pad_id=self.tokenizer.pad_id, temperature=self.temperature,
            per_row_keys=True, num_ids=self.tokenizer.vocab_size,
        )  # fmt: skip
        policy, dropped, tokens = device_policy.policy_rows(
            expert, out["tokens"], eos_id=self.stop_ids, samples_per_prompt=k
        )
        tokens, dropped = jax.device_get((tokens, dropped))
        return policy, float(tokens), int(dropped)

    def _check_room(self, longest: int, room: int, config: Any) -> None:
        if longest > room:
            raise ConfigError(
                f"a prompt of {longest} tokens plus online.max_new_tokens={self.max_new_tokens} exceeds the "
                f"model's maximum length {config.max_len}; lower online.max_new_tokens or task.seq_len."
            )

    def _sample(self, params: Any, prompts: list[list[int]], step: int, config: Any) -> list[list[int]]:
        """This process's responses (new tokens up to and including EOS) to its prompts, from one decode
        of every process's prompts: the block is [rows x processes, length], rows and length agreed
        through one small all-gather (a multiple of 16 rows: a few shapes, so a few compilations)."""
        processes, me = jax.process_count(), jax.process_index()
        sizes = np.array([[len(prompts), max(len(p) for p in prompts)]], np.int64)
        if processes > 1:
            sizes = np.asarray(multihost_utils.process_allgather(sizes[0])).reshape(processes, 2)
        local_dp = 1 if self.mesh is None else sharding.data_parallel_size(self.mesh, self.rules) // processes
        rows = _round_up(int(sizes[:, 0].max()), math.lcm(16, max(local_dp, 1)))
        longest = int(sizes[:, 1].max())
        room = config.max_len if config.is_encoder_decoder else config.max_len - self.max_new_tokens
        self._check_room(longest, room, config)
        padded = prompts + [prompts[-1]] * (rows - len(prompts))
        block, lengths = sampling.left_pad(padded, min(_round_up(longest, 32), room), self.tokenizer.pad_id)
        first = int(sizes[:me, 0].sum())  # the global number of this process's first prompt
        base = jax.random.fold_in(jax.random.PRNGKey(self.seed), step)
        keys = np.asarray(jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.arange(rows) + first))
        inputs = (block, lengths, keys)
        if self.mesh is not None:
            rows_sharding = sharding.batch_sharding(self.mesh, self.rules)
            inputs = tuple(jax.make_array_from_process_local_data(rows_sharding, x) for x in inputs)
        out = sampling.decode(
            self.graphdef, params, *inputs, max_new_tokens=self.max_new_tokens, eos_id=self.stop_ids,
            pad_id=self.tokenizer.pad_id, temperature=self.temperature, per_row_keys=True,
            num_ids=self.tokenizer.vocab_size,
        )  # fmt: skip
        tokens = out["tokens"]
        if processes > 1:
            tokens = multihost_utils.global_array_to_host_local_array(tokens, self.mesh, rows_sharding.spec)
        responses = []
        for row in np.asarray(tokens)[: len(prompts)].tolist():
            responses.append(row[: sampling.response_length(row, self.stop_ids)])
        return responses


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple
