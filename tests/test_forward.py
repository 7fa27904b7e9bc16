"""From a model to TokenStats: vocabulary chunks from the hidden states equal the full logits through
every kind of output layer (untied, tied with Gemma 2's soft-cap, T5 untied and tied with D^-1/2)."""

import jax
import numpy as np
import pytest

from jirl import forward, losses, models


def _batch(rng, vocab, encoder_decoder, b=3, t=10):
    """Two packed examples in row 0 (prompt then response each), one in the others, padding at the end."""
    tokens = rng.integers(3, vocab, (b, t + 1)).astype(np.int32)
    segments = np.ones((b, t), np.int32)
    segments[0, 5:] = 2
    segments[2, 7:] = 0
    mask = np.ones((b, t), np.float32)
    mask[:, :2] = 0
    mask[0, 5:7] = 0
    mask[segments == 0] = 0
    positions = np.concatenate([np.arange(5), np.arange(5)])[None].repeat(b, 0).astype(np.int32)
    positions[1:] = np.arange(t)
    batch = dict(inputs=tokens[:, :-1], targets=tokens[:, 1:], loss_mask=mask, segment_ids=segments,
                 positions=positions)  # fmt: skip
    if encoder_decoder:
        batch["encoder_inputs"] = rng.integers(3, vocab, (b, 8)).astype(np.int32)
        batch["encoder_segment_ids"] = np.where(np.arange(8) < 6, 1, 0)[None].repeat(b, 0).astype(np.int32)
        batch["encoder_segment_ids"][0, 3:6] = 2
        batch["segment_ids"][0] = np.where(segments[0] == 2, 2, 1)
    return batch


@pytest.mark.parametrize(
    "preset,overrides",
    [
        ("tiny", {}),
        ("tiny", dict(tie_embeddings=True, final_softcap=5.0, norm="rms_plus_one", embed_scale=True)),
        ("t5_tiny", {}),
        ("t5_tiny", dict(tie_embeddings=True)),
    ],
)
def test_chunked_equals_full_logits_through_the_model(preset, overrides):
    cfg = models.get_config(preset, scan_layers=False, **overrides)
    graphdef, params = models.split(models.create(cfg, seed=1))
    batch = _batch(np.random.default_rng(0), cfg.vocab_size, cfg.is_encoder_decoder)
    objective = losses.get("iqlearn", lam=0.3, gamma=0.9)

    def loss(params, head):
        return objective(forward.token_stats(graphdef, params, batch, head), batch)

    grad = jax.jit(jax.value_and_grad(loss, has_aux=True), static_argnums=1)
    (ref, ref_metrics), ref_grads = grad(params, forward.HeadOptions(vocab_chunk=0))
    # 259 entries: 5 chunks of 52; every position, then the response positions gathered (8 of 10
    # slots per row fit them).
    for head in (forward.HeadOptions(64, response_budget=1.0), forward.HeadOptions(64, response_budget=0.8)):
        (got, metrics), grads = grad(params, head)
        np.testing.assert_allclose(got, ref, rtol=1e-5)
        for key in ref_metrics:
            np.testing.assert_allclose(metrics[key], ref_metrics[key], rtol=1e-5, atol=1e-6)
        for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
            scale = float(np.max(np.abs(r)))
            np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5 * scale)


def test_the_output_layer_gives_the_models_logits():
    """model(...) = softcap(hidden W) written out from the parameters: W = unembed, or the tied table's
    transpose; Gemma 2's soft-cap c tanh(z / c)."""
    tokens = np.random.default_rng(0).integers(0, 259, (2, 6))
    for tied, cap in ((True, 5.0), (False, 0.0)):
        model = models.create(models.get_config("tiny", tie_embeddings=tied, final_softcap=cap))
        h = np.asarray(model.hidden(tokens), np.float64)
        w = np.asarray(model.embed[...]).T if tied else np.asarray(model.unembed[...])
        expected = h @ w
        if cap:
            expected = cap * np.tanh(expected / cap)
        np.testing.assert_allclose(model(tokens), expected, rtol=1e-5, atol=1e-5)
        out = model.output_projection()
        assert (out.vocab_axis, out.softcap) == ((0, cap) if tied else (1, cap))


def test_head_options_are_checked_by_name():
    for bad in (-1, 2.5, "64", True):
        with pytest.raises(ValueError, match=r"loss.vocab_chunk=.* integer >= 0: 0 for full logits"):
            forward.HeadOptions.from_config({"vocab_chunk": bad})
    for bad in (0, 1.5, -0.2, "half"):
        with pytest.raises(ValueError, match=r"loss.response_budget=.* a number in \(0, 1\]"):
            forward.HeadOptions.from_config({"response_budget": bad})
    assert forward.HeadOptions.from_config({"vocab_chunk": 0, "name": "mle"}) == forward.HeadOptions(0)
    assert forward.HeadOptions(64, 0.5).row_budget(100) == 56  # a multiple of 8
    assert (
        forward.HeadOptions(64, 1.0).row_budget(100) == 0
        and forward.HeadOptions(64, 0.99).row_budget(12) == 0
    )
