"""A model's forward pass up to what the objectives read: the per-position TokenStats of a batch.

    stats = token_stats(graphdef, params, batch, HeadOptions(vocab_chunk=4096))
    loss, metrics = objective(stats, batch)

`vocab_chunk` = 0 takes the statistics from the full logits [B, T, V] (the reference); N > 0 from
the final hidden states and the output layer in chunks of about N vocabulary entries
(`jirl.losses.head.from_hidden`), so that [B, T, V] is never held, and then only for up to
`response_budget` x T response positions per row when every row fits. Here models meet losses,
which know nothing of each other.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import jax
from flax import nnx

from jirl import losses, models
from jirl.errors import ConfigError
from jirl.models import layers

# Chunks of about this many vocabulary entries unless `loss.vocab_chunk` says otherwise: a byte
# vocabulary (259) is one chunk, 32k eight, Llama 3's 128k thirty-two, Gemma's 256k sixty-three; the
# head's temporaries are a few [B T, 4096] float32 buffers (benchmarks/loss_memory.py).
DEFAULT_VOCAB_CHUNK = 4096
# Statistics for at most half of each row's positions, gathered from its response tokens, when every
# row of the batch fits (prompt-heavy data); otherwise for every position.
DEFAULT_RESPONSE_BUDGET = 0.5


@dataclasses.dataclass(frozen=True)
class HeadOptions:
    """How the statistics are computed: the `loss` block's vocab_chunk and response_budget."""

    vocab_chunk: int = DEFAULT_VOCAB_CHUNK  # 0: full logits; N: chunks of about N vocabulary entries
    response_budget: float = DEFAULT_RESPONSE_BUDGET  # (0, 1]: share of a row gathered; 1: no gathering

    def __post_init__(self):
        chunk, budget = self.vocab_chunk, self.response_budget
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 0:
            raise ConfigError(
                f"loss.vocab_chunk={chunk!r} is not accepted; give an integer >= 0: 0 for full logits, "
                "N for chunks of about N vocabulary entries."
            )
        if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not 0 < budget <= 1:
            raise ConfigError(
                f"loss.response_budget={budget!r} is not accepted; give a number in (0, 1]: the share of "
                "each row whose statistics are gathered from its response tokens (1: every position)."
            )

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_config(cls, loss: Mapping[str, Any]) -> HeadOptions:
        """The options of a `loss` config block (defaults for keys it lacks), checked."""
        return cls(**{key: loss[key] for key in cls.keys() if key in loss})

    def row_budget(self, seq_len: int) -> int:
        """Slots per row for the gathered response positions (a multiple of 8); 0: every position."""
        slots = min(seq_len, 8 * math.ceil(self.response_budget * seq_len / 8))
        return slots if slots < seq_len else 0


DEFAULT_HEAD = HeadOptions()


def token_stats(
    graphdef: nnx.GraphDef,
    params: Any,
    batch: Mapping[str, jax.Array],
    options: HeadOptions = DEFAULT_HEAD,
    *,
    mean_logit: bool = False,
    expected_logit: bool = False,
    adapters: layers.Adapters | None = None,
) -> losses.TokenStats:
    """TokenStats of a decoder or encoder-decoder batch: full logits (vocab_chunk = 0) or chunks;
    `adapters`: LoRA adapters on the frozen `params` (`jirl.models.lora`)."""
    if options.vocab_chunk == 0:
        logits_BTV = models.forward_batch(graphdef, params, batch, adapters)
        return losses.head.from_logits(
            logits_BTV, batch, mean_logit=mean_logit, expected_logit=expected_logit
        )
    h_BTD, out = models.forward_hidden(graphdef, params, batch, adapters)
    return losses.head.from_hidden(
        h_BTD,
        out.weight,
        batch,
        chunk=options.vocab_chunk,
        vocab_axis=out.vocab_axis,
        softcap=out.softcap,
        mean_logit=mean_logit,
        expected_logit=expected_logit,
        row_budget=options.row_budget(h_BTD.shape[1]),
    )
