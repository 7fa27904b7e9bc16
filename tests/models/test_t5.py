"""The T5 encoder-decoder against transformers' T5 (v1.1 gated-GELU untied, original ReLU tied)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from jirl import models, sampling
from jirl.models import hf, layers

V = 96
VARIANTS = {
    "t5_v1_1_untied": dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False),
    "t5_relu_tied": dict(feed_forward_proj="relu", tie_word_embeddings=True),
}
SHAPE = dict(
    vocab_size=V, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=3, num_heads=4,
    relative_attention_num_buckets=8, relative_attention_max_distance=20, decoder_start_token_id=0,
)  # fmt: skip
RNG = np.random.default_rng(0)
ENCODER_TOKENS = RNG.integers(2, V, (2, 30))  # longer than max_distance: the log buckets are used
DECODER_TOKENS = RNG.integers(2, V, (2, 25))


def _hf_folder(variant: str, folder) -> transformers.T5ForConditionalGeneration:
    """A tiny random T5 saved to `folder` and the transformers model read back from it."""
    torch.manual_seed(0)
    options = VARIANTS[variant]
    model = transformers.T5ForConditionalGeneration(transformers.T5Config(**SHAPE, **options)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
        if not options["tie_word_embeddings"]:  # transformers 5 ties T5's head; real v1.1 has its own
            model.lm_head.weight = torch.nn.Parameter(torch.randn(V, 32))
    model.save_pretrained(folder)
    path = folder / "config.json"  # as Flan-T5's config.json says it
    path.write_text(json.dumps({**json.loads(path.read_text()), **options}))
    reference = transformers.T5ForConditionalGeneration.from_pretrained(folder, local_files_only=True).eval()
    reference.generation_config.eos_token_id = None
    return reference


def _hf_logits(model, encoder_BS, decoder_BT, encoder_mask_BS=None) -> np.ndarray:
    with torch.no_grad():
        mask = None if encoder_mask_BS is None else torch.as_tensor(encoder_mask_BS)
        out = model(
            input_ids=torch.as_tensor(encoder_BS),
            attention_mask=mask,
            decoder_input_ids=torch.as_tensor(decoder_BT),
        )
    return out.logits.float().numpy()


_apply = jax.jit(models.apply, static_argnums=0)


def _forward(model, *tokens, **kwargs) -> jax.Array:
    """model(*tokens, **kwargs), compiled as one program (op by op, each new shape costs seconds)."""
    return _apply(*models.split(model), *tokens, **kwargs)


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def pair(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    reference = _hf_folder(request.param, folder)
    return request.param, reference, folder, hf.load(folder)


def test_relative_buckets_match_transformers():
    relative = torch.arange(-300, 300)[None, :]
    bucket = transformers.models.t5.modeling_t5.T5Attention._relative_position_bucket
    for bidirectional in (True, False):
        for buckets, distance in ((32, 128), (8, 20)):
            theirs = bucket(relative, bidirectional=bidirectional, num_buckets=buckets, max_distance=distance)
            ours = layers.relative_bucket(jnp.asarray(relative.numpy()), bidirectional, buckets, distance)
            np.testing.assert_array_equal(np.asarray(ours), theirs.numpy())


def test_logits_match_transformers(pair):
    variant, reference, _, ours = pair
    assert (
        ours.config.is_encoder_decoder
        and ours.config.tie_embeddings == VARIANTS[variant]["tie_word_embeddings"]
    )
    theirs = _hf_logits(reference, ENCODER_TOKENS, DECODER_TOKENS)
    got = np.asarray(_forward(ours, jnp.asarray(ENCODER_TOKENS), jnp.asarray(DECODER_TOKENS)))
    np.testing.assert_allclose(got, theirs, atol=1e-4, rtol=0)
    assert np.abs(theirs).max() > 1.0


def test_encoder_padding_is_an_attention_mask(pair):
    """Encoder segment 0 (padding) = transformers' attention_mask 0, for every real decoder position."""
    _, reference, _, ours = pair
    mask = np.ones_like(ENCODER_TOKENS)
    mask[0, 17:] = 0
    theirs = _hf_logits(reference, ENCODER_TOKENS, DECODER_TOKENS, mask)
    got = _forward(
        ours, jnp.asarray(ENCODER_TOKENS), jnp.asarray(DECODER_TOKENS), encoder_segment_ids=jnp.asarray(mask)
    )
    np.testing.assert_allclose(np.asarray(got), theirs, atol=1e-4, rtol=0)


def test_packed_rows_equal_separate_examples(pair):
    """Two examples packed into one row (segments 1, 2; positions restart) give each one's logits."""
    _, _, _, ours = pair
    enc_a, enc_b = ENCODER_TOKENS[0, :12], ENCODER_TOKENS[1, :10]
    dec_a, dec_b = DECODER_TOKENS[0, :9], DECODER_TOKENS[1, :7]
    packed = _forward(
        ours,
        jnp.asarray(np.concatenate([enc_a, enc_b, [0, 0]]))[None],
        jnp.asarray(np.concatenate([dec_a, dec_b, [0]]))[None],
        encoder_segment_ids=jnp.asarray([1] * 12 + [2] * 10 + [0, 0])[None],
        encoder_positions=jnp.asarray(list(range(12)) + list(range(10)) + [0, 0])[None],
        segment_ids=jnp.asarray([1] * 9 + [2] * 7 + [0])[None],
        positions=jnp.asarray(list(range(9)) + list(range(7)) + [0])[None],
    )
    alone_a = _forward(ours, jnp.asarray(enc_a)[None], jnp.asarray(dec_a)[None])
    alone_b = _forward(ours, jnp.asarray(enc_b)[None], jnp.asarray(dec_b)[None])
    np.testing.assert_allclose(np.asarray(packed[0, :9]), np.asarray(alone_a[0]), atol=1e-4, rtol=0)
    np.testing.assert_allclose(np.asarray(packed[0, 9:16]), np.asarray(alone_b[0]), atol=1e-4, rtol=0)


def test_saved_folder_loads_in_transformers_with_the_same_logits(pair, tmp_path):
    _, reference, _, ours = pair
    _, params = models.split(ours)
    hf.save(params, ours.config, tmp_path)
    reloaded = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path, local_files_only=True).eval()
    np.testing.assert_allclose(
        _hf_logits(reloaded, ENCODER_TOKENS, DECODER_TOKENS),
        _hf_logits(reference, ENCODER_TOKENS, DECODER_TOKENS),
        atol=1e-5,
        rtol=0,
    )
    assert hf.load(tmp_path).config == ours.config


def test_greedy_continuation_matches_transformers(pair):
    _, reference, _, ours = pair
    prompts = [ENCODER_TOKENS[0, :7].tolist(), ENCODER_TOKENS[1, :19].tolist()]
    graphdef, params = models.split(ours)
    got = sampling.generate(graphdef, params, prompts, max_new_tokens=8, eos_id=-1, bucket=16)
    for prompt, tokens in zip(prompts, got):
        with torch.no_grad():
            # no cache: transformers 5 sizes its T5 cache by the encoder depth (wrong for another
            # decoder depth)
            out = reference.generate(
                torch.tensor([prompt]), max_new_tokens=8, do_sample=False, use_cache=False
            )
        assert tokens == out[0, 1:].tolist()  # transformers' output starts with the decoder start token


def test_decoding_logits_equal_a_teacher_forced_forward_pass(pair):
    _, _, _, ours = pair
    graphdef, params = models.split(ours)
    prompts = [ENCODER_TOKENS[0, :5].tolist(), ENCODER_TOKENS[1, :11].tolist()]
    gens = sampling.generate_with_logprobs(
        graphdef, params, prompts, max_new_tokens=6, eos_id=-1, temperature=1.0, seed=3, bucket=16,
        return_logits=True,
    )  # fmt: skip
    for prompt, gen in zip(prompts, gens):
        decoder = [ours.config.decoder_start_id] + gen.tokens[:-1]
        full = _forward(ours, jnp.asarray(prompt)[None], jnp.asarray(decoder)[None])[0]
        np.testing.assert_allclose(gen.logits, np.asarray(full), atol=1e-4, rtol=0)  # |logits| up to ~20


def test_num_params_and_logical_axes(pair):
    _, reference, _, ours = pair
    _, params = models.split(ours)
    n = sum(p.size for p in jax.tree.leaves(params))
    hf_count = sum(p.numel() for p in reference.parameters())  # the shared table counts once
    assert n == ours.config.num_params() == hf_count
    axes = models.logical_axes(ours)
    flat = jax.tree_util.tree_leaves_with_path(axes, is_leaf=lambda x: isinstance(x, tuple))
    for (path, names), value in zip(flat, jax.tree.leaves(params)):
        assert len(names) == value.ndim, path


def test_unsupported_t5_options_are_refused_by_name(tmp_path):
    _hf_folder("t5_relu_tied", tmp_path)
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "feed_forward_proj": "gated-tanh-x"}))
    with pytest.raises(ValueError, match="feed_forward_proj='gated-tanh-x' is not supported"):
        hf.load(tmp_path)


def test_a_config_that_mixes_t5_and_decoder_options_is_refused():
    with pytest.raises(ValueError, match="position_embedding='relative'"):
        models.get_config("tiny", position_embedding="relative")
    with pytest.raises(ValueError, match="model.post_norms=True is not supported in a T5"):
        models.get_config("tiny", encoder_layers=2, position_embedding="relative", post_norms=True)
