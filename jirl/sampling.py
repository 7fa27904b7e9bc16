"""Batched KV-cache decoding: prefill the prompts, then one token per step in a `lax.while_loop`.

For an encoder-decoder (T5) the prompts are encoded once, their cross-attention keys and values
cached, and the decoder starts from `decoder_start_id`.

Prompts of different lengths are left-padded into one [B, P] block (padding is segment 0, so no
real token attends to it); each row stops at EOS or after `max_new_tokens`. Tokens are picked
greedily (temperature 0) or sampled from the softmax of z / temperature, optionally restricted
to the top-k logits and then to the top-p (nucleus) set. With `num_ids`, only ids below it are
drawn: a model whose vocabulary is padded beyond its tokenizer's (Qwen: 151,936 rows for 151,669
ids) never emits an id the tokenizer cannot decode. `eos_id` may be several ids (a tuple, as
`jirl.data.stop_ids` gives: EOS, a checkpoint's generation_config.json ids, a chat template's
end-of-turn token); a row ends at the first of any.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jirl import models
from jirl.errors import ConfigError
from jirl.models import layers


class Generation(NamedTuple):
    """One continuation and, per generated token t (float32 arrays [N]):

    sampling_logprobs: log q(a_t), q the distribution the token was drawn from (after the id limit,
        temperature, top-k and top-p; 0 for greedy decoding).
    logprobs: log softmax(z_t)[a_t] of the unmodified logits z_t.
    entropies: H_t = -sum_a p_t(a) log p_t(a), p_t = softmax(z_t), of the unmodified logits.
    logits: z_t as [N, V] float32 when asked for (`return_logits=True`), else None.
    """

    tokens: list[int]
    sampling_logprobs: np.ndarray
    logprobs: np.ndarray
    entropies: np.ndarray
    logits: np.ndarray | None = None


def stop_set(eos_id: int | Sequence[int]) -> tuple[int, ...]:
    """The ids that end a row: `eos_id` itself, or each of several."""
    return (int(eos_id),) if isinstance(eos_id, (int, np.integer)) else tuple(int(i) for i in eos_id)


def response_length(tokens: Sequence[int], eos_id: int | Sequence[int]) -> int:
    """Tokens up to and including the first stop id (all of them when none occurs)."""
    stops = set(stop_set(eos_id))
    return next((k + 1 for k, token in enumerate(tokens) if token in stops), len(tokens))


def left_pad(prompts: Sequence[Sequence[int]], length: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """[B, length] int32 prompts right-aligned, and their lengths [B]."""
    lengths = np.array([len(p) for p in prompts], np.int32)
    if lengths.min(initial=1) < 1 or lengths.max(initial=0) > length:
        raise ConfigError(f"prompt lengths must lie in [1, {length}], got {lengths.min()}..{lengths.max()}.")
    block = np.full((len(prompts), length), pad_id, np.int32)
    for row, prompt in enumerate(prompts):
        block[row, length - len(prompt) :] = prompt
    return block, lengths


def sample_token(
    logits_BV: jax.Array, key: jax.Array, *, temperature: float, top_k: int = 0, top_p: float = 1.0
) -> tuple[jax.Array, jax.Array]:
    """(token_B, log q(token)_B): a draw from q, float32.

    q = softmax(z / temperature) restricted to the top_k largest logits (0: all), then to the
    smallest set of most likely tokens whose mass reaches top_p (token j is kept when the mass of
    the tokens ranked before it is < top_p), renormalised. temperature 0 is argmax, with log q = 0.
    """
    logits_BV = logits_BV.astype(jnp.float32)
    b, v = logits_BV.shape
    if temperature == 0.0:
        return jnp.argmax(logits_BV, axis=-1).astype(jnp.int32), jnp.zeros((b,), jnp.float32)
    scaled_BV = logits_BV / temperature
    k = v if top_k <= 0 else min(top_k, v)
    if k == v and top_p >= 1.0:
        token_B = jax.random.categorical(key, scaled_BV).astype(jnp.int32)
        logq_BV = jax.nn.log_softmax(scaled_BV, axis=-1)
        return token_B, jnp.take_along_axis(logq_BV, token_B[:, None], axis=-1)[:, 0]
    scaled_BK, ids_BK = jax.lax.top_k(scaled_BV, k)  # sorted, largest first
    if top_p < 1.0:
        probs_BK = jax.nn.softmax(scaled_BK, axis=-1)
        before_BK = jnp.cumsum(probs_BK, axis=-1) - probs_BK  # mass ranked before each candidate
        before_BK = before_BK.at[:, 0].set(0.0)  # the most likely token is always kept
        scaled_BK = jnp.where(before_BK < top_p, scaled_BK, -jnp.inf)
    choice_B = jax.random.categorical(key, scaled_BK)
    logq_BK = jax.nn.log_softmax(scaled_BK, axis=-1)
    token_B = jnp.take_along_axis(ids_BK, choice_B[:, None], axis=-1)[:, 0].astype(jnp.int32)
    return token_B, jnp.take_along_axis(logq_BK, choice_B[:, None], axis=-1)[:, 0]


@functools.partial(
    jax.jit,
    static_argnames=(
        "graphdef",
        "max_new_tokens",
        "temperature",
        "top_k",
        "top_p",
        "eos_id",
        "pad_id",
        "return_logits",
        "per_row_keys",
        "num_ids",
    ),
)
def decode(
    graphdef: nnx.GraphDef,
    params: Any,
    prompt_BP: jax.Array,
    lengths_B: jax.Array,
    rng: jax.Array,
    *,
    max_new_tokens: int,
    eos_id: int | tuple[int, ...],
    pad_id: int,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    return_logits: bool = False,
    per_row_keys: bool = False,
    num_ids: int = 0,
) -> dict[str, jax.Array]:
    """Continues left-padded prompts [B, P] (real lengths [B]) by up to `max_new_tokens` tokens.

    rng: one key for the block, split at every step; with per_row_keys, one key per row ([B] keys),
    and row b draws its i-th token with fold_in(rng[b], i): a row's tokens then depend on its prompt
    and key only, not on its place in the block or on the other rows (what lets several processes
    sample their own rows of one global batch as one process would). num_ids > 0: tokens are drawn
    from ids [0, num_ids) only (logits above set to -inf before temperature, top-k and top-p); 0 is
    every id of the model's vocabulary.

    Returns "tokens" [B, N] int32 (pad_id after a row's EOS) and float32 [B, N] "sampling_logprobs",
    "logprobs", "entropies" (see `Generation`; 0 after EOS); with return_logits, "logits" [B, N, V]
    float32, the logits each token was picked from (0 after EOS). `params` may be sharded.
    """
    model = nnx.merge(graphdef, params)
    b, p = prompt_BP.shape
    n = max_new_tokens
    pad_B = p - lengths_B
    slots_BP = jnp.broadcast_to(jnp.arange(p, dtype=jnp.int32), (b, p))
    segments_BP = (slots_BP >= pad_B[:, None]).astype(jnp.int32)
    positions_BP = jnp.maximum(slots_BP - pad_B[:, None], 0)
    if model.config.is_encoder_decoder:  # the prompt is the encoder's; the decoder starts from one token
        encoded_BPD = model.encode(prompt_BP, positions=positions_BP, segment_ids=segments_BP)
        cache = model.start_cache(encoded_BPD, segments_BP, n + 1)
        step_fn = model.decode
        start_B1 = jnp.full((b, 1), model.config.decoder_start_id, jnp.int32)
        ones_B1 = jnp.ones((b, 1), jnp.int32)
        h_BPD, cache = model.decode_hidden(start_B1, positions=0 * ones_B1, segment_ids=ones_B1, cache=cache)
        lengths_B = jnp.ones_like(lengths_B)  # decoder positions of the new tokens: 1, 2, ...
    else:
        cache = models.init_cache(model.config, b, p + n)
        per_layer = {}
        if not model.config.scans_layers():  # weights cut once and a per-layer cache (`run_layers`)
            per_layer = dict(layer_params=model.layers.per_layer())
            cache = dict(cache, k=list(cache["k"]), v=list(cache["v"]))
        step_fn = functools.partial(model, **per_layer)
        h_BPD, cache = model.hidden(
            prompt_BP, positions=positions_BP, segment_ids=segments_BP, cache=cache, **per_layer
        )
    # Only the last prompt position's logits are needed: never [B, P, V].
    first_logits_BV = layers.project(h_BPD[:, -1:], model.output_projection())[:, 0]

    def cond(carry):
        i, _, _, out, done_B, _ = carry
        return (i < n) & ~jnp.all(done_B)

    limited = 0 < num_ids < first_logits_BV.shape[-1]  # static: no mask when every id is allowed

    def draw(logits_BV, key, i):
        """(token_B, log q_B, the key carried to the next step)."""
        if limited:
            logits_BV = jnp.where(jnp.arange(logits_BV.shape[-1]) < num_ids, logits_BV, -jnp.inf)
        options = dict(temperature=temperature, top_k=top_k, top_p=top_p)
        if not per_row_keys:
            key, sub = jax.random.split(key)
            return (*sample_token(logits_BV, sub, **options), key)
        row = lambda z_V, k: sample_token(z_V[None], jax.random.fold_in(k, i), **options)  # noqa: E731
        token_B1, logq_B1 = jax.vmap(row)(logits_BV, key)
        return token_B1[:, 0], logq_B1[:, 0], key

    def step(carry):
        i, logits_BV, cache, out, done_B, key = carry
        logits_BV = logits_BV.astype(jnp.float32)
        token_B, logq_B, key = draw(logits_BV, key, i)
        token_B = jnp.where(done_B, pad_id, token_B)
        logp_BV = jax.nn.log_softmax(logits_BV, axis=-1)
        logp_B = jnp.take_along_axis(logp_BV, token_B[:, None], axis=-1)[:, 0]
        entropy_B = -jnp.sum(jnp.exp(logp_BV) * logp_BV, axis=-1)
        live_B = ~done_B
        new = {
            "tokens": token_B,
            "sampling_logprobs": jnp.where(live_B, logq_B, 0.0),
            "logprobs": jnp.where(live_B, logp_B, 0.0),
            "entropies": jnp.where(live_B, entropy_B, 0.0),
        }
        if return_logits:
            new["logits"] = jnp.where(live_B[:, None], logits_BV, 0.0)
        out = {k: out[k].at[:, i].set(new[k]) for k in out}
        done_B = done_B | jnp.isin(token_B, jnp.asarray(stop_set(eos_id), jnp.int32))
        logits_B1V, cache = step_fn(
            token_B[:, None],
            positions=(lengths_B + i)[:, None],
            segment_ids=jnp.ones((b, 1), jnp.int32),
            cache=cache,
        )
        return i + 1, logits_B1V[:, 0], cache, out, done_B, key

    out = {
        "tokens": jnp.full((b, n), pad_id, jnp.int32),
        "sampling_logprobs": jnp.zeros((b, n), jnp.float32),
        "logprobs": jnp.zeros((b, n), jnp.float32),
        "entropies": jnp.zeros((b, n), jnp.float32),
    }
    if return_logits:
        out["logits"] = jnp.zeros((b, n, first_logits_BV.shape[-1]), jnp.float32)
    carry = (jnp.zeros((), jnp.int32), first_logits_BV, cache, out, jnp.zeros((b,), bool), rng)
    return jax.lax.while_loop(cond, step, carry)[3]


def _check_options(
    max_new_tokens: int, temperature: float, top_k: int, top_p: float, batch_size: int
) -> None:
    if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens={max_new_tokens!r} must be a positive integer.")
    if not temperature >= 0:
        raise ConfigError(f"temperature={temperature!r} must be >= 0 (0 is greedy).")
    if not isinstance(top_k, (int, np.integer)) or top_k < 0:
        raise ConfigError(f"top_k={top_k!r} must be an integer >= 0 (0 turns top-k off).")
    if not 0.0 < top_p <= 1.0:
        raise ConfigError(f"top_p={top_p!r} must be in (0, 1] (1 turns top-p off).")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ConfigError(f"batch_size={batch_size!r} must be a positive integer.")


def generate_with_logprobs(
    graphdef: nnx.GraphDef,
    params: Any,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    eos_id: int | Sequence[int],
    pad_id: int = 0,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int = 0,
    batch_size: int = 64,
    bucket: int = 32,
    return_logits: bool = False,
    num_ids: int = 0,
) -> list[Generation]:
    """Continues each prompt; one `Generation` per prompt, its tokens up to and including EOS (the
    first of the `eos_id` ids, when several).

    temperature 0 is greedy; otherwise tokens are drawn from softmax(z / temperature) restricted to
    the top_k logits (0: off) and then to the top_p nucleus (1: off). Prompts are processed
    `batch_size` at a time, padded to a multiple of `bucket` so that few shapes compile. num_ids > 0
    draws ids below it only (pass the tokenizer's `vocab_size`); 0 allows every id of the model's.
    """
    _check_options(max_new_tokens, temperature, top_k, top_p, batch_size)
    config = nnx.merge(graphdef, params).config
    max_len = config.max_len
    results: list[Generation] = []
    rng = jax.random.PRNGKey(seed)
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start : start + batch_size])
        longest = max(len(p) for p in chunk)
        length = -(-longest // bucket) * bucket
        if config.is_encoder_decoder:  # the prompt goes to the encoder, the new tokens to the decoder
            if max(longest, max_new_tokens) > max_len:
                raise ConfigError(
                    f"a prompt of {longest} tokens or {max_new_tokens} new tokens exceeds "
                    f"the model's maximum length {max_len}."
                )
            length = min(length, max_len)
        elif longest + max_new_tokens > max_len:
            raise ConfigError(
                f"a prompt of {longest} tokens plus {max_new_tokens} new tokens exceeds "
                f"the model's maximum length {max_len}."
            )
        else:
            length = min(length, max_len - max_new_tokens)
        n_real = len(chunk)
        if len(prompts) > batch_size:  # a short last chunk is padded: every chunk compiles once
            chunk += [chunk[-1]] * (batch_size - n_real)
        block, lengths = left_pad(chunk, length, pad_id)
        rng, sub = jax.random.split(rng)
        out = decode(
            graphdef,
            params,
            block,
            lengths,
            sub,
            max_new_tokens=int(max_new_tokens),
            eos_id=stop_set(eos_id),
            pad_id=pad_id,
            temperature=float(temperature),
            top_k=int(top_k),
            top_p=float(top_p),
            return_logits=return_logits,
            num_ids=int(num_ids),
        )
        out = jax.tree.map(np.asarray, out)
        for row in range(n_real):
            tokens = out["tokens"][row].tolist()
            n = response_length(tokens, eos_id)
            results.append(
                Generation(
                    tokens=tokens[:n],
                    sampling_logprobs=out["sampling_logprobs"][row, :n],
                    logprobs=out["logprobs"][row, :n],
                    entropies=out["entropies"][row, :n],
                    logits=out["logits"][row, :n] if return_logits else None,
                )
            )
    return results


def generate(
    graphdef: nnx.GraphDef,
    params: Any,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    eos_id: int | Sequence[int],
    pad_id: int = 0,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int = 0,
    batch_size: int = 64,
    bucket: int = 32,
    num_ids: int = 0,
) -> list[list[int]]:
    """Continues each prompt; returns the new tokens of each, up to and including EOS.

    The tokens of `generate_with_logprobs` with the same arguments (temperature 0 is greedy;
    top_k 0 and top_p 1 turn those filters off; num_ids 0 allows every id).
    """
    generations = generate_with_logprobs(
        graphdef,
        params,
        prompts,
        max_new_tokens=max_new_tokens,
        eos_id=eos_id,
        pad_id=pad_id,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        seed=seed,
        batch_size=batch_size,
        bucket=bucket,
        num_ids=num_ids,
    )
    return [g.tokens for g in generations]
