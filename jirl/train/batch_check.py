"""Host-side checks of a batch before it reaches the devices: its keys, shapes and token ids."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from jirl.errors import ConfigError

BATCH_KEYS = ("inputs", "targets", "loss_mask")
OPTIONAL_KEYS = ("segment_ids", "positions")
ENCODER_KEYS = ("encoder_inputs", "encoder_segment_ids", "encoder_positions")


def check_batch(batch: Mapping[str, np.ndarray], vocab_size: int) -> None:
    """Host-side checks before a batch reaches the device: keys, shapes and token ids."""
    missing = [k for k in BATCH_KEYS if k not in batch]
    if missing:
        raise ConfigError(
            f"batch is missing key(s) {missing}; a batch needs {list(BATCH_KEYS)} "
            f"and may have {list(OPTIONAL_KEYS)}."
        )
    shape = np.shape(batch["inputs"])
    for key in (*BATCH_KEYS, *OPTIONAL_KEYS):
        if key in batch and np.shape(batch[key]) != shape:
            raise ConfigError(
                f"batch['{key}'] has shape {np.shape(batch[key])}; every batch array "
                f"must have the shape of batch['inputs'], {shape}."
            )
    if "encoder_inputs" in batch:  # encoder-decoder: the encoder side has its own length
        enc_shape = np.shape(batch["encoder_inputs"])
        for key in ENCODER_KEYS:
            if key in batch and (np.shape(batch[key]) != enc_shape or enc_shape[0] != shape[0]):
                raise ConfigError(
                    f"batch['{key}'] has shape {np.shape(batch[key])}; encoder arrays must share the "
                    f"shape of batch['encoder_inputs'], {enc_shape}, with the batch size of "
                    f"batch['inputs'], {shape[0]}."
                )
    for key in ("inputs", "targets", "encoder_inputs"):
        if key not in batch:
            continue
        ids = np.asarray(batch[key])
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or high >= vocab_size:
            bad = low if low < 0 else high
            raise ConfigError(
                f"batch['{key}'] holds token id {bad}, outside the model vocabulary "
                f"[0, {vocab_size}); check the tokenizer against model.vocab_size."
            )
