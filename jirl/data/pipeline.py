"""Grain input pipeline: slice, shuffle, tokenize, truncate, pack or pad, batch.

Each batch is a dict of [B, T] numpy arrays in the layout of docs/architecture.md: inputs,
targets (int32), loss_mask (float32), segment_ids and positions (int32); for an
encoder-decoder also encoder_inputs, encoder_segment_ids and encoder_positions. The
iterator is a grain `DatasetIterator`, so `get_state()` / `set_state()` resume
it exactly (for resuming a run from a checkpoint).
"""

import functools
from typing import Any

import grain
import numpy as np
from absl import flags

from jirl.data.chat import ChatTemplate
from jirl.data.tasks import Task
from jirl.data.tokenizer import Tokenizer
from jirl.errors import ConfigError

FEATURES = ("inputs", "targets", "loss_mask")
ENCODER_FEATURES = ("encoder_inputs",)
# Per-token statistics that travel with a batch but never reach the model: 1 at the first token of
# each example whose prompt or response was cut to fit (see `pop_stats`).
STATS = ("truncated",)
ENCODER_DECODER_CHAT = "chat conversations are for decoder-only models; this model is an encoder-decoder."


def truncate(prompt_ids: list[int], response_ids: list[int], seq_len: int) -> tuple[list[int], list[int]]:
    """Fits prompt + response into `seq_len` targets.

    The prompt keeps its end and the response its start. When both are long the
    prompt keeps at least half of the room, so at least ceil(seq_len / 2)
    response tokens always remain and no example has to be dropped.
    """
    room_prompt = min(len(prompt_ids), max(seq_len - len(response_ids), seq_len // 2))
    room_response = seq_len - room_prompt
    return (prompt_ids[len(prompt_ids) - room_prompt :], response_ids[:room_response])


def tokenize_example(
    prompt: str, response: str, tokenizer: Tokenizer, seq_len: int | None = None
) -> dict[str, np.ndarray]:
    """Next-token arrays for [BOS] + prompt + response + [EOS].

    inputs = seq[:-1], targets = seq[1:]; loss_mask is 1 where the target is a
    response token (EOS included). With `seq_len`, the arrays are truncated to
    at most `seq_len` (see `truncate`); BOS is always kept.
    """
    prompt_ids = tokenizer.encode(prompt)
    response_ids = tokenizer.encode(response) + [tokenizer.eos_id]
    full_length = len(prompt_ids) + len(response_ids)
    if seq_len is not None:
        prompt_ids, response_ids = truncate(prompt_ids, response_ids, seq_len)
    seq = [tokenizer.bos_id] + prompt_ids + response_ids
    mask = [0.0] * len(prompt_ids) + [1.0] * len(response_ids)
    truncated = np.zeros(len(seq) - 1, np.float32)
    truncated[0] = float(len(prompt_ids) + len(response_ids) < full_length)
    return {
        "inputs": np.asarray(seq[:-1], np.int32),
        "targets": np.asarray(seq[1:], np.int32),
        "loss_mask": np.asarray(mask, np.float32),
        "truncated": truncated,
    }


def chat_template(tokenizer: Tokenizer) -> ChatTemplate:
    """The tokenizer's chat template; chat data with a tokenizer that has none is refused."""
    template = getattr(tokenizer, "chat_template", None)
    names = getattr(tokenizer, "chat_template_names", ())
    if template is None and names:
        raise ConfigError(
            f"the data holds chat conversations and the tokenizer at {tokenizer.path.parent} has chat "
            f"templates named {', '.join(map(repr, names))} but none named 'default'; choose one with "
            "tokenizer.chat_template=NAME."
        )
    if template is None:
        where = getattr(tokenizer, "path", None)
        raise ConfigError(
            f"the data holds chat conversations but the tokenizer{f' at {where}' if where else ''} has no "
            "chat template; use tokenizer.kind='hf' with a checkpoint folder that has chat_template.jinja or "
            "chat_template in its tokenizer_config.json."
        )
    return template


def tokenize_chat(
    messages: list[dict], tokenizer: Tokenizer, seq_len: int | None = None
) -> dict[str, np.ndarray]:
    """Next-token arrays of a conversation rendered with the tokenizer's chat template (`jirl.data.chat`).

    seq = the ids of the whole rendered conversation (transformers' `apply_chat_template(messages,
    tokenize=True)`), inputs = seq[:-1], targets = seq[1:]; loss_mask is 1 where the target token
    overlaps an assistant turn's span, so a multi-turn conversation's mask has one run per assistant
    turn. With `seq_len`, the tokens before the first response token are the prompt and the rest the
    response of `truncate`; the first token (BOS, where the template writes one) is always kept.
    """
    template = chat_template(tokenizer)
    text, spans = template.response_spans(messages)
    ids, offsets = tokenizer.encode_with_offsets(text)
    if len(ids) < 2:
        raise ConfigError(
            f"a chat row renders to {len(ids)} token(s) with this chat template; a row needs at least two "
            "(a prompt token and a response token)."
        )
    in_span = np.zeros(len(ids), np.float32)
    for start, end in spans:
        in_span[[k for k, (a, b) in enumerate(offsets) if b > start and a < end]] = 1.0
    first = int(np.argmax(in_span[1:])) + 1 if np.any(in_span[1:]) else len(ids)
    keep = np.arange(len(ids))
    if seq_len is not None and len(ids) - 1 > seq_len:
        prompt, response = truncate(list(range(1, first)), list(range(first, len(ids))), seq_len)
        keep = np.asarray([0, *prompt, *response])
    seq, mask = np.asarray(ids, np.int32)[keep], in_span[keep]
    truncated = np.zeros(len(seq) - 1, np.float32)
    truncated[0] = float(len(keep) < len(ids))
    return {"inputs": seq[:-1], "targets": seq[1:], "loss_mask": mask[1:], "truncated": truncated}


def tokenize_seq2seq_example(
    prompt: str, response: str, tokenizer: Tokenizer, start_id: int, seq_len: int | None = None
) -> dict[str, np.ndarray]:
    """Encoder-decoder arrays: encoder_inputs = prompt + [EOS]; decoder inputs = [start] + response,
    targets = response + [EOS], loss_mask 1 on every target.

    With `seq_len`, each side is cut to `seq_len` tokens keeping its start (T5's convention).
    """
    prompt_ids = tokenizer.encode(prompt) + [tokenizer.eos_id]
    response_ids = tokenizer.encode(response) + [tokenizer.eos_id]
    truncated = np.zeros(min(len(response_ids), seq_len or len(response_ids)), np.float32)
    if seq_len is not None:
        truncated[0] = float(len(prompt_ids) > seq_len or len(response_ids) > seq_len)
        prompt_ids, response_ids = prompt_ids[:seq_len], response_ids[:seq_len]
    return {
        "encoder_inputs": np.asarray(prompt_ids, np.int32),
        "inputs": np.asarray([start_id] + response_ids[:-1], np.int32),
        "targets": np.asarray(response_ids, np.int32),
        "loss_mask": np.ones(len(response_ids), np.float32),
        "truncated": truncated,
    }


def pop_stats(batch: dict[str, np.ndarray]) -> dict[str, float]:
    """Removes the statistics rows from `batch`; returns {examples, truncated} counts in it."""
    truncated = batch.pop("truncated", None)
    starts = (batch["positions"] == 0) & (batch["segment_ids"] > 0)
    return {
        "examples": float(np.sum(starts)),
        "truncated": 0.0 if truncated is None else float(np.sum(truncated)),
    }


def _tokenize_record(
    record: Any, *, task: Task, tokenizer: Tokenizer, seq_len: int, start_id: int | None
) -> dict[str, np.ndarray]:
    messages = task.messages(record)
    if messages is not None:
        if start_id is not None:
            raise ConfigError(ENCODER_DECODER_CHAT)
        return tokenize_chat(messages, tokenizer, seq_len)
    prompt, response = task.prompt_response(record)
    if start_id is not None:
        return tokenize_seq2seq_example(prompt, response, tokenizer, start_id, seq_len)
    return tokenize_example(prompt, response, tokenizer, seq_len)


def _pad_row(example: dict[str, np.ndarray], seq_len: int) -> dict[str, np.ndarray]:
    """One example per row, zero-padded to `seq_len`; segment 1, padding 0 (encoder side likewise)."""
    row = {}
    for prefix, features in (("", (*FEATURES, *STATS)), ("encoder_", ENCODER_FEATURES)):
        if features[0] not in example:
            continue
        length = len(example[features[0]])
        for k in features:
            row[k] = np.zeros(seq_len, example[k].dtype)
            row[k][: len(example[k])] = example[k]
        row[prefix + "segment_ids"] = np.zeros(seq_len, np.int32)
        row[prefix + "segment_ids"][:length] = 1
        row[prefix + "positions"] = np.zeros(seq_len, np.int32)
        row[prefix + "positions"][:length] = np.arange(length, dtype=np.int32)
    return row


def _from_packed(row: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Grain names segment ids per feature; the decoder features share the inputs' ones. An
    example's segment id is the same on the encoder and the decoder side (its order in the bin)."""
    out = {k: row[k] for k in (*FEATURES, *STATS)}
    out["segment_ids"] = row["inputs_segment_ids"]
    out["positions"] = row["inputs_positions"]
    if "encoder_inputs" in row:
        out["encoder_inputs"] = row["encoder_inputs"]
        out["encoder_segment_ids"] = row["encoder_inputs_segment_ids"]
        out["encoder_positions"] = row["encoder_inputs_positions"]
    return out


def make_batches(
    task: Task,
    split: str,
    *,
    data_dir: str,
    tokenizer: Tokenizer,
    seq_len: int,
    batch_size: int,
    seed: int,
    shuffle: bool = True,
    num_epochs: int | None = None,
    pack: bool = True,
    process_index: int = 0,
    process_count: int = 1,
    worker_count: int = 0,
    prefetch: int = 0,
    task_config: str = "default",
    decoder_start_id: int | None = None,
) -> grain.DatasetIterator:
    """An iterator of [batch_size, seq_len] batches of `task`'s `split`.

    Process `process_index` of `process_count` reads records
    process_index, process_index + process_count, ... The shuffle is seeded and
    differs each epoch; `num_epochs=None` repeats forever. With a finite number
    of epochs the last batch is completed with all-zero rows. `worker_count` > 0
    prepares batches in that many processes, each `prefetch` batches ahead;
    with no workers, `prefetch` > 0 prepares them in a background thread.
    Batches carry the `STATS` rows as well; `pop_stats` takes them out. With
    `decoder_start_id`, batches are encoder-decoder ones (`tokenize_seq2seq_example`): the
    prompt goes to the encoder, the decoder starts from that token.
    """
    for key, value in (("seq_len", seq_len), ("batch_size", batch_size), ("process_count", process_count)):
        if value < 1:
            raise ConfigError(f"{key} must be a positive integer, got {value}.")
    if not 0 <= process_index < process_count:
        raise ConfigError(f"process_index must be in [0, {process_count}), got {process_index}.")
    source = task.source(split, data_dir, task_config)
    check_chat(task, source, tokenizer)
    ds = grain.MapDataset.source(source)[process_index::process_count]
    if len(ds) == 0:
        raise ConfigError(
            f"process {process_index} of {process_count} has no examples; the {split} split of task "
            f"'{task.name}' has {len(source)} examples, and each process needs at least one."
        )
    if shuffle:
        ds = ds.shuffle(seed)
    ds = ds.repeat(num_epochs).map(
        functools.partial(
            _tokenize_record, task=task, tokenizer=tokenizer, seq_len=seq_len, start_id=decoder_start_id
        )
    )
    rows = ds.to_iter_dataset()
    features = (*FEATURES, *STATS) + (ENCODER_FEATURES if decoder_start_id is not None else ())
    if pack:
        rows = grain.experimental.FirstFitPackIterDataset(
            rows,
            length_struct={k: seq_len for k in features},
            num_packing_bins=batch_size,
            seed=seed,
            shuffle_bins=shuffle,
        ).map(_from_packed)
    else:
        rows = rows.map(functools.partial(_pad_row, seq_len=seq_len))
    batches = rows.batch(
        batch_size, batch_fn=functools.partial(grain.experimental.batch_and_pad, batch_size=batch_size)
    )
    if worker_count > 0:
        if not flags.FLAGS.is_parsed():  # grain workers read absl flags (defaults)
            flags.FLAGS.mark_as_parsed()
        options = grain.MultiprocessingOptions(
            num_workers=worker_count, per_worker_buffer_size=max(prefetch, 1)
        )
        batches = batches.mp_prefetch(options)
    elif prefetch > 0:
        batches = grain.experimental.ThreadPrefetchIterDataset(batches, prefetch_buffer_size=prefetch)
    return iter(batches)


def check_chat(task: Task, source: Any, tokenizer: Tokenizer) -> None:
    """Refuses chat data (its first record is a conversation) when the tokenizer has no chat template."""
    if len(source) and task.messages(source[0]) is not None:
        chat_template(tokenizer)


def eval_prompts(
    task: Task,
    split: str,
    *,
    data_dir: str,
    tokenizer: Tokenizer,
    limit: int | None = None,
    task_config: str = "default",
    encoder_decoder: bool = False,
) -> list[tuple[list[int], str]]:
    """(BOS + prompt ids, reference answer) for the first `limit` records; for an encoder-decoder
    (prompt ids + EOS, reference), the encoder's input. A chat record's prompt is the conversation
    before its last assistant turn plus the template's generation prompt, tokenized whole (the template
    writes BOS where the model has one)."""
    source = task.source(split, data_dir, task_config)
    count = len(source) if limit is None else min(limit, len(source))
    out = []
    for i in range(count):
        record = source[i]
        messages = task.messages(record)
        if messages is not None:
            if encoder_decoder:
                raise ConfigError(ENCODER_DECODER_CHAT)
            out.append((tokenizer.encode(chat_template(tokenizer).prompt(messages)), task.reference(record)))
            continue
        prompt, _ = task.prompt_response(record)
        ids = tokenizer.encode(prompt)
        ids = ids + [tokenizer.eos_id] if encoder_decoder else [tokenizer.bos_id] + ids
        out.append((ids, task.reference(record)))
    return out
