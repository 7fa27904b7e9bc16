"""KV-cache decoding against recomputing the full forward pass."""

import functools
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jirl import models, sampling, sharding
from jirl.train.state import create_sharded_train_state


def test_greedy_decoding_matches_full_forward_argmax_for_ragged_prompts():
    graphdef, params = models.split(models.create(models.get_config("tiny"), seed=1))
    rng = np.random.default_rng(0)
    prompts = [list(rng.integers(3, 259, n)) for n in (3, 9, 1, 6)]
    outputs = sampling.generate(graphdef, params, prompts, max_new_tokens=7, eos_id=2, batch_size=3)
    for prompt, out in zip(prompts, outputs):
        # Causal: one full forward pass over prompt + out gives every step's logits (teacher forcing);
        # greedy decoding picked the argmax at each position from the last prompt token on.
        logits = models.apply(graphdef, params, jnp.asarray([list(prompt) + out]))[0]
        assert np.argmax(np.asarray(logits), axis=-1)[len(prompt) - 1 : -1].tolist() == out


def test_sampling_is_seeded():
    graphdef, params = models.split(models.create(models.get_config("tiny"), seed=1))
    prompts = [[1, 5, 6], [1, 7]]
    a = sampling.generate(graphdef, params, prompts, max_new_tokens=8, eos_id=2, temperature=1.0, seed=3)
    b = sampling.generate(graphdef, params, prompts, max_new_tokens=8, eos_id=2, temperature=1.0, seed=3)
    c = sampling.generate(graphdef, params, prompts, max_new_tokens=8, eos_id=2, temperature=1.0, seed=4)
    assert a == b and a != c


def test_too_long_prompt_is_refused():
    graphdef, params = models.split(models.create(models.get_config("tiny")))
    with pytest.raises(ValueError, match="exceeds the model's maximum length 256"):
        sampling.generate(graphdef, params, [[1] * 250], max_new_tokens=10, eos_id=2)


# --- top-k / top-p, log-probabilities, decode logits against the full forward pass ---------------

RAGGED = [[5, 17, 3], [9, 40, 41, 42, 43, 44, 45, 46, 47], [7], [100, 101, 102, 103, 104, 105]]


@pytest.fixture(scope="module")
def tiny():
    return models.split(models.create(models.get_config("tiny"), seed=1))


def _full_forward_logits(graphdef, params, prompts, generations) -> list[np.ndarray]:
    """Per prompt, float32 [N, V]: logits of one forward pass over prompt + generated tokens, at the
    positions that predict the generated tokens (rows right-padded into one batch; causal, so the
    padding after a row does not change it)."""
    seqs = [list(p) + list(g.tokens) for p, g in zip(prompts, generations)]
    block = np.zeros((len(seqs), max(map(len, seqs))), np.int32)
    for row, seq in enumerate(seqs):
        block[row, : len(seq)] = seq
    logits_BTV = np.asarray(jax.jit(models.apply, static_argnums=0)(graphdef, params, jnp.asarray(block)))
    return [
        logits_BTV[row, len(p) - 1 : len(p) - 1 + len(g.tokens)].astype(np.float32)
        for row, (p, g) in enumerate(zip(prompts, generations))
    ]


def test_decode_logits_logprobs_and_entropies_equal_the_full_forward_pass(tiny):
    graphdef, params = tiny
    gens = sampling.generate_with_logprobs(
        graphdef,
        params,
        RAGGED,
        max_new_tokens=9,
        eos_id=2,
        temperature=1.0,
        seed=7,
        batch_size=3,
        bucket=4,
        return_logits=True,
    )
    full = _full_forward_logits(graphdef, params, RAGGED, gens)
    for gen, logits_NV in zip(gens, full):
        n = len(gen.tokens)
        assert 1 <= n <= 9 and gen.logits.shape == (n, 259) and gen.logits.dtype == np.float32
        np.testing.assert_allclose(gen.logits, logits_NV, atol=1e-5, rtol=0)
        logp_NV = jax.nn.log_softmax(jnp.asarray(logits_NV), axis=-1)
        logp_N = np.take_along_axis(np.asarray(logp_NV), np.array(gen.tokens)[:, None], axis=-1)[:, 0]
        entropy_N = -np.sum(np.exp(logp_NV) * logp_NV, axis=-1)
        for got in (gen.sampling_logprobs, gen.logprobs, gen.entropies):
            assert got.dtype == np.float32 and got.shape == (n,)
        np.testing.assert_allclose(gen.logprobs, logp_N, atol=1e-5)
        np.testing.assert_allclose(gen.entropies, entropy_N, atol=1e-5)
        # temperature 1 without filters samples from the model itself: q = p
        np.testing.assert_allclose(gen.sampling_logprobs, logp_N, atol=1e-5)


def test_top_k_one_and_tiny_top_p_are_greedy(tiny):
    graphdef, params = tiny
    kwargs = dict(max_new_tokens=8, eos_id=2, batch_size=4)
    greedy = sampling.generate_with_logprobs(graphdef, params, RAGGED, **kwargs)
    assert all(np.all(g.sampling_logprobs == 0.0) for g in greedy)
    for options in (dict(top_k=1), dict(top_p=1e-6), dict(top_k=5, top_p=1e-6)):
        sampled = sampling.generate_with_logprobs(
            graphdef, params, RAGGED, temperature=1.5, seed=3, **options, **kwargs
        )
        assert [g.tokens for g in sampled] == [g.tokens for g in greedy], options
        for s, g in zip(sampled, greedy):
            np.testing.assert_allclose(s.sampling_logprobs, 0.0, atol=1e-6)  # q puts all mass on one token
            np.testing.assert_allclose(s.logprobs, g.logprobs, atol=1e-6)


def test_top_k_and_top_p_samples_lie_in_their_sets_under_the_full_forward_pass(tiny):
    graphdef, params = tiny
    k, p, t = 4, 0.6, 2.0
    for options in (dict(top_k=k), dict(top_p=p), dict(top_k=k, top_p=p)):
        gens = sampling.generate_with_logprobs(
            graphdef, params, RAGGED, max_new_tokens=12, eos_id=-1, temperature=t, seed=11, **options
        )
        full = _full_forward_logits(graphdef, params, RAGGED, gens)
        for gen, logits_NV in zip(gens, full):
            z_NV = logits_NV / t
            order_NV = np.argsort(-z_NV, axis=-1)
            rank_N = np.argmax(order_NV == np.array(gen.tokens)[:, None], axis=-1)
            if "top_k" in options:
                assert np.all(rank_N < k), (options, rank_N)
            if "top_p" in options:
                probs_NV = np.take_along_axis(np.asarray(jax.nn.softmax(z_NV, axis=-1)), order_NV, -1)
                if "top_k" in options:
                    probs_NV = probs_NV[:, :k] / probs_NV[:, :k].sum(-1, keepdims=True)
                before_N = np.array([probs_NV[i, : rank_N[i]].sum() for i in range(len(rank_N))])
                assert np.all(before_N < p + 1e-5), (options, before_N)


def test_num_ids_limits_the_drawn_ids_and_renormalises_q_over_them(tiny):
    """A vocabulary padded beyond the tokenizer's: only ids < num_ids are drawn, greedy picks the argmax
    among them, q is softmax over them, and `logprobs` stay the model's over the whole vocabulary."""
    graphdef, params = tiny
    limit = 40  # of the tiny model's 259 ids
    kwargs = dict(max_new_tokens=10, eos_id=-1, num_ids=limit)
    greedy = sampling.generate_with_logprobs(graphdef, params, RAGGED, **kwargs)
    sampled = sampling.generate_with_logprobs(graphdef, params, RAGGED, temperature=1.0, seed=5, **kwargs)
    for gens in (greedy, sampled):
        full = _full_forward_logits(graphdef, params, RAGGED, gens)
        for gen, logits_NV in zip(gens, full):
            tokens_N = np.array(gen.tokens)
            assert tokens_N.max() < limit
            logp_NV = np.asarray(jax.nn.log_softmax(logits_NV.astype(np.float64), axis=-1))
            np.testing.assert_allclose(gen.logprobs, logp_NV[np.arange(len(tokens_N)), tokens_N], atol=1e-5)
            if gens is greedy:
                assert tokens_N.tolist() == np.argmax(logits_NV[:, :limit], axis=-1).tolist()
            else:
                logq_NV = np.asarray(jax.nn.log_softmax(logits_NV[:, :limit].astype(np.float64), axis=-1))
                np.testing.assert_allclose(gen.sampling_logprobs, logq_NV[np.arange(len(tokens_N)), tokens_N],
                                           atol=1e-5)  # fmt: skip
    unlimited = sampling.generate(graphdef, params, RAGGED, max_new_tokens=10, eos_id=-1)
    assert max(max(t) for t in unlimited) >= limit  # the limit changed what this random model picks


def _restricted_softmax(z_V: np.ndarray, temperature: float, top_k: int, top_p: float) -> np.ndarray:
    """softmax(z / T) over the top_k logits, then over the top_p nucleus; numpy reference."""
    order = np.argsort(-z_V, kind="stable")
    keep = np.zeros(len(z_V), bool)
    keep[order[: top_k or len(z_V)]] = True
    q = np.where(keep, np.exp((z_V - z_V.max()) / temperature), 0.0)
    q /= q.sum()
    mass_before = np.cumsum(q[order]) - q[order]
    keep[order[mass_before >= top_p]] = False
    q = np.where(keep, q, 0.0)
    return q / q.sum()


@pytest.mark.parametrize(
    "temperature,top_k,top_p", [(1.0, 0, 1.0), (0.8, 0, 0.7), (1.3, 3, 1.0), (2.0, 4, 0.5)]
)
def test_sample_token_frequencies_follow_the_restricted_softmax(temperature, top_k, top_p):
    z_V = np.array([2.0, -1.0, 1.5, 0.3, 1.0, -3.0, 0.5, 0.0], np.float32)
    n = 40_000
    logits_BV = jnp.broadcast_to(jnp.asarray(z_V), (n, len(z_V)))
    draw = jax.jit(
        functools.partial(sampling.sample_token, temperature=temperature, top_k=top_k, top_p=top_p)
    )
    token_B, logq_B = map(np.asarray, draw(logits_BV, jax.random.PRNGKey(0)))
    q_V = _restricted_softmax(z_V.astype(np.float64), temperature, top_k, top_p)
    freq_V = np.bincount(token_B, minlength=len(z_V)) / n
    assert np.all(freq_V[q_V == 0] == 0)
    # 5 standard errors of a binomial frequency
    np.testing.assert_array_less(np.abs(freq_V - q_V), 5 * np.sqrt(q_V * (1 - q_V) / n) + 1e-9)
    np.testing.assert_allclose(logq_B, np.log(q_V[token_B]), atol=1e-5)


@pytest.mark.parametrize(
    "options,message",
    [
        (dict(top_p=0.0), r"top_p=0.0 must be in \(0, 1\]"),
        (dict(top_p=1.5), r"top_p=1.5 must be in \(0, 1\]"),
        (dict(top_p=-0.2), r"top_p=-0.2 must be in \(0, 1\]"),
        (dict(top_k=-1), "top_k=-1 must be an integer >= 0"),
        (dict(temperature=-0.5), "temperature=-0.5 must be >= 0"),
        (dict(max_new_tokens=0), "max_new_tokens=0 must be a positive integer"),
    ],
)
def test_bad_sampling_options_are_refused(tiny, options, message):
    graphdef, params = tiny
    kwargs = dict(dict(max_new_tokens=4, eos_id=2), **options)
    with pytest.raises(ValueError, match=message):
        sampling.generate(graphdef, params, [[1, 2]], **kwargs)
    with pytest.raises(ValueError, match=message):
        sampling.generate_with_logprobs(graphdef, params, [[1, 2]], **kwargs)


def test_params_sharded_on_a_mesh_decode_like_unsharded_params(tiny):
    graphdef, params = tiny
    mesh = sharding.make_mesh({"data": 1, "fsdp": -1, "tensor": 1}, devices=jax.devices()[:1])
    sharded_graphdef, state, _ = create_sharded_train_state(
        models.get_config("tiny"), optax.sgd(0.1), 1, mesh
    )
    assert jax.tree.leaves(state.params)[0].sharding.mesh.shape == mesh.shape
    kwargs = dict(max_new_tokens=8, eos_id=2, batch_size=4)  # greedy; sampling: the 8-device test below
    got = sampling.generate_with_logprobs(sharded_graphdef, state.params, RAGGED, **kwargs)
    want = sampling.generate_with_logprobs(graphdef, params, RAGGED, **kwargs)
    for g, w in zip(got, want):
        assert g.tokens == w.tokens
        np.testing.assert_allclose(g.logprobs, w.logprobs, atol=1e-5)


_EIGHT_DEVICES = """
import json, os
os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
import warnings
warnings.simplefilter("ignore")
import jax, numpy as np, optax
from jirl import models, sampling, sharding
from jirl.train.state import create_sharded_train_state

prompts = %r
cfg = models.get_config("tiny")
mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
graphdef, state, _ = create_sharded_train_state(cfg, optax.sgd(0.1), 1, mesh)
kwargs = dict(max_new_tokens=6, eos_id=2, temperature=1.0, top_k=5, top_p=0.9, seed=2)
got = sampling.generate_with_logprobs(graphdef, state.params, prompts, **kwargs)
ref = sampling.generate_with_logprobs(*models.split(models.create(cfg, seed=1)), prompts, **kwargs)
specs = {str(x.sharding.spec) for x in jax.tree.leaves(state.params)}
print(json.dumps({
    "devices": jax.device_count(),
    "split": any("fsdp" in s for s in specs) and any("tensor" in s for s in specs),
    "tokens": [g.tokens for g in got],
    "ref_tokens": [r.tokens for r in ref],
    "logprob_err": max(float(np.abs(g.logprobs - r.logprobs).max()) for g, r in zip(got, ref)),
}))
"""


def test_params_sharded_over_eight_devices_decode_like_one_device():
    """A (data 2, fsdp 2, tensor 2) mesh of fake CPU devices, in a subprocess (the device count is
    fixed when jax starts)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, "-c", _EIGHT_DEVICES % (RAGGED,)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["devices"] == 8 and result["split"]
    assert result["tokens"] == result["ref_tokens"]
    assert result["logprob_err"] < 1e-5


def test_per_row_keys_make_each_row_independent_of_its_place_and_neighbours(tiny):
    """With one key per row, a row's tokens depend on its prompt and key only: the rows of a block
    reordered, or decoded among other rows, come out the same (what multi-process sampling needs)."""
    graphdef, params = tiny
    block, lengths = sampling.left_pad(RAGGED, 16, pad_id=0)
    keys = np.asarray(jax.vmap(lambda i: jax.random.fold_in(jax.random.PRNGKey(5), i))(jnp.arange(4)))
    options = dict(max_new_tokens=12, eos_id=2, pad_id=0, temperature=1.0, per_row_keys=True)

    def tokens(rows):
        out = sampling.decode(graphdef, params, block[rows], lengths[rows], keys[rows], **options)
        return np.asarray(out["tokens"])

    whole = tokens([0, 1, 2, 3])
    np.testing.assert_array_equal(tokens([3, 1, 0, 2]), whole[[3, 1, 0, 2]])
    np.testing.assert_array_equal(tokens([1, 2]), whole[[1, 2]])
    assert len({tuple(row) for row in whole}) == 4  # sampled, not one draw repeated
    one_key = sampling.decode(graphdef, params, block, lengths, jax.random.PRNGKey(5), **{
        **options, "per_row_keys": False})["tokens"]  # fmt: skip
    assert not np.array_equal(np.asarray(one_key), whole)  # a different stream than the block key's


def test_a_row_ends_at_the_first_of_several_stop_ids(tiny):
    """eos_id as a tuple (EOS, a chat end-of-turn token, ...): each row stops at the first of any,
    that token included, and its tokens up to there are the single-EOS run's."""
    graphdef, params = tiny
    free = sampling.generate(graphdef, params, RAGGED, max_new_tokens=12, eos_id=-1)
    stops = (free[0][3], free[1][5])  # ids the greedy rows produce part-way
    stopped = sampling.generate(graphdef, params, RAGGED, max_new_tokens=12, eos_id=(-1, *stops))
    for row, out in zip(free, stopped):
        n = sampling.response_length(row, stops)
        assert out == row[:n]
        assert n == len(row) or (row[n - 1] in stops and not set(row[: n - 1]) & set(stops))
    assert len(stopped[0]) <= 4 and len(stopped[1]) <= 6
