"""IQLearn against the unsimplified IQ-Learn form in float64 NumPy, MLE, and masking properties."""

import chex
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference
from absl.testing import parameterized
from batches import on_logits, random_batch

from jirl import losses
from jirl.losses import _masking


def _np_batch(batch):
    return batch["targets"], batch["loss_mask"], batch["segment_ids"]


class IQLearnTest(parameterized.TestCase):
    @parameterized.product(gamma=[1.0, 0.9], lam=[0.0, 0.3], seed=[0, 1])
    def test_value_matches_unsimplified_reference(self, gamma, lam, seed):
        logits, batch = random_batch(np.random.default_rng(seed))
        loss, _ = on_logits(losses.get("iqlearn", gamma=gamma, lam=lam))(jnp.asarray(logits), batch)
        expected = reference.iqlearn_unsimplified(
            logits.astype(np.float64), *_np_batch(batch), gamma=gamma, lam=lam
        )
        np.testing.assert_allclose(loss, expected, rtol=1e-5, atol=1e-6)

    @parameterized.product(gamma=[1.0, 0.8], stop_grad=[False, True])
    def test_gradient_matches_reference(self, gamma, stop_grad):
        logits, batch = random_batch(np.random.default_rng(7), b=2, t=9, v=5)
        lam = 0.5
        loss_fn = on_logits(losses.get("iqlearn", gamma=gamma, lam=lam, stop_grad_next_value=stop_grad))
        grad = jax.grad(lambda z: loss_fn(z, batch)[0])(jnp.asarray(logits))
        fixed = logits.astype(np.float64)

        def ref(z):  # with stop_grad, V' is read from constant logits
            return reference.iqlearn_unsimplified(
                z, *_np_batch(batch), gamma=gamma, lam=lam, next_logits=fixed if stop_grad else None
            )

        expected = reference.numerical_grad(ref, fixed)
        np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-6)

    def test_lam_zero_is_mle_in_value_and_gradient(self):
        logits, batch = random_batch(np.random.default_rng(3))
        iq = on_logits(losses.get("iqlearn", lam=0.0, gamma=0.7))
        mle = on_logits(losses.get("mle"))
        z = jnp.asarray(logits)
        np.testing.assert_allclose(iq(z, batch)[0], mle(z, batch)[0], rtol=1e-6)
        g_iq = jax.grad(lambda x: iq(x, batch)[0])(z)
        g_mle = jax.grad(lambda x: mle(x, batch)[0])(z)
        np.testing.assert_allclose(g_iq, g_mle, rtol=1e-6, atol=1e-8)

    @parameterized.parameters(0.0, 0.1, 0.5)
    def test_online_matches_reference(self, alpha):
        rng = np.random.default_rng(11)
        e_logits, e_batch = random_batch(rng)
        p_logits, p_batch = random_batch(rng, b=2)
        fn = on_logits(losses.get("iqlearn", gamma=0.9, lam=0.2, alpha=alpha))
        loss, metrics = fn(
            jnp.asarray(e_logits), e_batch, policy_logits=jnp.asarray(p_logits), policy_batch=p_batch
        )
        expected = reference.iqlearn_online(
            (e_logits.astype(np.float64), *_np_batch(e_batch)),
            (p_logits.astype(np.float64), *_np_batch(p_batch)),
            gamma=0.9,
            lam=0.2,
            alpha=alpha,
        )
        np.testing.assert_allclose(loss, expected, rtol=1e-5)
        self.assertIn("policy_value", metrics)

    def test_online_gradient_matches_reference(self):
        rng = np.random.default_rng(5)
        e_logits, e_batch = random_batch(rng, b=2, t=8, v=4)
        p_logits, p_batch = random_batch(rng, b=2, t=8, v=4)
        fn = on_logits(losses.get("iqlearn", gamma=0.9, lam=0.2, alpha=0.3))
        g_e, g_p = jax.grad(
            lambda e, p: fn(e, e_batch, policy_logits=p, policy_batch=p_batch)[0], argnums=(0, 1)
        )(jnp.asarray(e_logits), jnp.asarray(p_logits))
        e64, p64 = e_logits.astype(np.float64), p_logits.astype(np.float64)

        def ref(e, p):
            return reference.iqlearn_online(
                (e, *_np_batch(e_batch)), (p, *_np_batch(p_batch)), gamma=0.9, lam=0.2, alpha=0.3
            )

        np.testing.assert_allclose(
            g_e, reference.numerical_grad(lambda e: ref(e, p64), e64), rtol=1e-4, atol=1e-6
        )
        np.testing.assert_allclose(
            g_p, reference.numerical_grad(lambda p: ref(e64, p), p64), rtol=1e-4, atol=1e-6
        )

    def test_metrics_are_means_over_masked_positions(self):
        logits, batch = random_batch(np.random.default_rng(2))
        _, m = on_logits(losses.get("iqlearn", gamma=0.9, lam=0.1))(jnp.asarray(logits), batch)
        q, v, v_next = reference.soft_q_terms(logits.astype(np.float64), *_np_batch(batch), 0.9).T
        r = q - 0.9 * v_next
        np.testing.assert_allclose(m["nll"], np.mean(v - q), rtol=1e-5)
        np.testing.assert_allclose(m["td_reg"], np.mean(r**2), rtol=1e-5)
        np.testing.assert_allclose(m["reward"], np.mean(r), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(m["value"], np.mean(v), rtol=1e-5)
        self.assertEqual(float(m["tokens"]), float(batch["loss_mask"].sum()))
        argmax = np.argmax(logits, -1) == batch["targets"]
        np.testing.assert_allclose(m["accuracy"], argmax[batch["loss_mask"] > 0].mean(), rtol=1e-6)

    def test_non_finite_logits_at_masked_positions_give_no_nan(self):
        logits, batch = random_batch(np.random.default_rng(4))
        masked = batch["loss_mask"] == 0
        logits[masked] = -np.inf
        logits[masked & (np.arange(logits.shape[1]) % 2 == 0)] = 3e38
        logits[0, 0, :] = np.nan if masked[0, 0] else logits[0, 0, :]
        for name, opts in [
            ("iqlearn", dict(gamma=0.9, lam=0.5)),
            ("mle", dict(label_smoothing=0.1, z_loss=1e-4)),
        ]:
            fn = on_logits(losses.get(name, **opts))
            (loss, metrics), grad = jax.value_and_grad(lambda z: fn(z, batch), has_aux=True)(
                jnp.asarray(logits)
            )
            self.assertTrue(np.isfinite(loss), name)
            self.assertTrue(all(np.isfinite(v) for v in jax.tree.leaves(metrics)), name)
            self.assertTrue(np.all(np.isfinite(grad)), name)
            self.assertTrue(np.all(np.asarray(grad)[masked] == 0), name)


@hypothesis.settings(max_examples=25, deadline=None)
@hypothesis.given(
    extra=st.integers(1, 6),
    prompt_extra=st.integers(0, 3),
    seed=st.integers(0, 10_000),
    gamma=st.sampled_from([1.0, 0.95]),
)
def test_padding_and_prompt_positions_change_nothing(extra, prompt_extra, seed, gamma):
    """Prompt positions prepended and padding appended (random logits there) change no value."""
    rng = np.random.default_rng(seed)
    logits, batch = random_batch(rng, b=2, t=10)
    fn = on_logits(losses.get("iqlearn", gamma=gamma, lam=0.3))
    loss, metrics = fn(jnp.asarray(logits), batch)

    b, _, v = logits.shape
    pad = (
        lambda x, fill: np.concatenate(  # noqa: E731
            [
                np.full((b, prompt_extra, *x.shape[2:]), fill, x.dtype),
                x,
                np.full((b, extra, *x.shape[2:]), fill, x.dtype),
            ],
            1,
        )
    )
    big_logits = pad(logits, 0.0)
    big_logits[:, :prompt_extra] = rng.normal(size=(b, prompt_extra, v)) * 50
    big_logits[:, -extra:] = rng.normal(size=(b, extra, v)) * 50
    segs = batch["segment_ids"]
    big = {
        "targets": pad(batch["targets"], 0),
        "loss_mask": pad(batch["loss_mask"], 0.0),
        "segment_ids": np.concatenate(
            [np.repeat(segs[:, :1], prompt_extra, 1), segs, np.zeros((b, extra), np.int32)], 1
        ),
    }
    big_loss, big_metrics = fn(jnp.asarray(big_logits), big)
    np.testing.assert_allclose(big_loss, loss, rtol=1e-6)
    for key in metrics:
        np.testing.assert_allclose(big_metrics[key], metrics[key], rtol=1e-6, atol=1e-7)


class VariantsTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_jit_and_no_jit_agree(self):
        logits, batch = random_batch(np.random.default_rng(9))
        batch = {k: jnp.asarray(v) for k, v in batch.items()}
        fn = on_logits(losses.get("iqlearn", gamma=0.9, lam=0.2))
        loss, metrics = self.variant(fn)(jnp.asarray(logits), batch)
        ref_loss, ref_metrics = fn(jnp.asarray(logits), batch)
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
        chex.assert_trees_all_close(metrics, ref_metrics, rtol=1e-6)


def test_unknown_loss_and_option_name_what_is_accepted():
    with pytest.raises(ValueError, match=r"unknown loss 'ppo'.*'iqlearn', 'mle'"):
        losses.get("ppo")
    with pytest.raises(ValueError, match=r"no option\(s\) \['lamda'\].*'lam'"):
        losses.get("iqlearn", lamda=0.1)


def test_bad_batches_are_named():
    logits, batch = random_batch(np.random.default_rng(0))
    fn = on_logits(losses.get("iqlearn"))
    with pytest.raises(ValueError, match="missing key.*'loss_mask'"):
        fn(jnp.asarray(logits), {"targets": batch["targets"]})
    with pytest.raises(ValueError, match=r"'targets'\] has shape"):
        fn(jnp.asarray(logits), dict(batch, targets=batch["targets"][:, :-1]))
    with pytest.raises(ValueError, match="needs the policy stream"):
        on_logits(losses.get("iqlearn", alpha=0.1))(jnp.asarray(logits), batch)
    with pytest.raises(ValueError, match=r"not logits.*from_logits.*shape \(3, 12, 7\)"):
        losses.get("iqlearn")(jnp.asarray(logits), batch)  # the old contract is refused by name


def _same_prompts_two_response_lengths(rng, *, v=6, prompt=3):
    """Expert and policy streams over the same 3 prompts, one response each, of different lengths.

    The logits at each response's first position (the state s_0 = its prompt) are equal in the two
    streams, as a causal model's are; everything after differs.
    """
    expert_lengths, policy_lengths = (5, 2, 4), (2, 3, 2)  # N_E = 11, N_P = 7 tokens
    t = prompt + max(expert_lengths + policy_lengths) + 1
    first_logits = rng.normal(size=(3, v)).astype(np.float32) * 2.0

    def stream(lengths):
        logits = rng.normal(size=(3, t, v)).astype(np.float32) * 2.0
        mask = np.zeros((3, t), np.float32)
        for row, length in enumerate(lengths):
            mask[row, prompt : prompt + length] = 1.0
            logits[row, prompt] = first_logits[row]
        batch = {
            "targets": rng.integers(0, v, (3, t)).astype(np.int32),
            "loss_mask": mask,
            "segment_ids": np.ones((3, t), np.int32),
        }
        return logits, batch

    return stream(expert_lengths), stream(policy_lengths), first_logits


def test_online_term_at_gamma_one_is_a_token_count_artifact_under_token_means():
    """At gamma = 1, the online term with token means telescopes to sum_n V(s_0,n) (1/N_P - 1/N_E): it
    reads nothing past each prompt. Per episode (what jirl computes) it is exactly 0 for the same prompts."""
    rng = np.random.default_rng(0)
    (e_logits, e_batch), (p_logits, p_batch), first_logits = _same_prompts_two_response_lengths(rng)
    e64 = (e_logits.astype(np.float64), *_np_batch(e_batch))
    p64 = (p_logits.astype(np.float64), *_np_batch(p_batch))
    v0 = np.array([np.log(np.sum(np.exp(z))) for z in first_logits.astype(np.float64)])

    def token_mean_gap(stream):  # the old normalisation: a mean over response tokens
        _, v, v_next = reference.soft_q_terms(*stream, 1.0).T
        return np.mean(v - v_next)

    n_e, n_p = e_batch["loss_mask"].sum(), p_batch["loss_mask"].sum()
    old_term = token_mean_gap(p64) - token_mean_gap(e64)
    np.testing.assert_allclose(old_term, v0.sum() * (1 / n_p - 1 / n_e), rtol=1e-6)
    assert abs(old_term) > 0.1  # the policy's shorter responses alone move it
    np.testing.assert_allclose(reference.episode_value_gaps(*p64, 1.0), v0, rtol=1e-10)

    fn = on_logits(losses.get("iqlearn", gamma=1.0, lam=0.0, alpha=0.5))
    loss, metrics = fn(
        jnp.asarray(e_logits), e_batch, policy_logits=jnp.asarray(p_logits), policy_batch=p_batch
    )
    np.testing.assert_allclose(metrics["value_gap"], 0.0, atol=1e-5)
    np.testing.assert_allclose(loss, metrics["nll"], rtol=1e-6)

    # At gamma < 1 the per-episode term keeps (1 - gamma) sum_{t >= 1} V_t: the states after s_0.
    fn = on_logits(losses.get("iqlearn", gamma=0.9, lam=0.0, alpha=0.5))
    _, metrics = fn(jnp.asarray(e_logits), e_batch, policy_logits=jnp.asarray(p_logits), policy_batch=p_batch)
    gaps = lambda s: reference.episode_value_gaps(*s, 0.9)  # noqa: E731
    expected = np.mean(gaps(p64)) - np.mean(gaps(e64))
    np.testing.assert_allclose(metrics["value_gap"], expected, rtol=1e-5)
    assert abs(expected) > 0.05


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_last_turn_mask_is_each_segments_last_run(seed):
    """Random masks with several runs per segment (multi-turn rows), against a loop over the runs."""
    rng = np.random.default_rng(seed)
    mask = (rng.random((4, 24)) < 0.6).astype(np.float32)
    segments = np.sort(rng.integers(0, 4, (4, 24)), axis=1).astype(np.int32)
    mask[segments == 0] = 0.0
    expected = np.zeros_like(mask)
    for (row, _), runs in reference.response_runs(mask, segments).items():
        expected[row, runs[-1]] = 1.0
    got = _masking.last_turn_mask(jnp.asarray(mask), jnp.asarray(segments))
    np.testing.assert_array_equal(np.asarray(got), expected)
    unpacked = reference.response_runs(mask, np.ones_like(segments))
    expected = np.zeros_like(mask)
    for (row, _), runs in unpacked.items():
        expected[row, runs[-1]] = 1.0
    np.testing.assert_array_equal(np.asarray(_masking.last_turn_mask(jnp.asarray(mask), None)), expected)


def test_online_term_of_a_conversation_reads_its_last_turn():
    """Expert rows are two-turn conversations; online sampling answers each one's last turn (the
    conversation before it is the prompt). Per last turn, the gamma = 1 term is exactly 0 for the
    same prompts; over every turn it would be mean V(s_0) of all turns minus that of the last ones."""
    rng = np.random.default_rng(3)
    v, t = 6, 16
    e_logits = rng.normal(size=(2, t, v)).astype(np.float32) * 2.0
    e_mask = np.zeros((2, t), np.float32)
    e_mask[:, 2:5] = 1.0  # the first assistant turn
    e_mask[:, 7:11] = 1.0  # the last: its prompt is positions 0-6
    p_logits = rng.normal(size=(2, t, v)).astype(np.float32) * 2.0
    p_mask = np.zeros((2, t), np.float32)
    p_mask[0, 7:9], p_mask[1, 7:13] = 1.0, 1.0  # the policy's answers, of other lengths
    p_logits[:, 7] = e_logits[:, 7]  # a causal model reads the same prompt at the answer's first state
    ones = np.ones((2, t), np.int32)
    e_batch = {
        "targets": rng.integers(0, v, (2, t)).astype(np.int32),
        "loss_mask": e_mask,
        "segment_ids": ones,
    }
    p_batch = {
        "targets": rng.integers(0, v, (2, t)).astype(np.int32),
        "loss_mask": p_mask,
        "segment_ids": ones,
    }
    e64 = (e_logits.astype(np.float64), *_np_batch(e_batch))
    p64 = (p_logits.astype(np.float64), *_np_batch(p_batch))

    def every_turn_gaps(logits, targets, mask, segments, gamma):  # S_E over both turns, as before
        first = reference.episode_value_gaps(
            logits, targets, np.where(np.arange(t) < 6, mask, 0), segments, gamma
        )
        return np.concatenate([first, reference.episode_value_gaps(logits, targets, mask, segments, gamma)])

    old_term = np.mean(reference.episode_value_gaps(*p64, 1.0)) - np.mean(every_turn_gaps(*e64, 1.0))
    assert abs(old_term) > 0.1

    fn = on_logits(losses.get("iqlearn", gamma=1.0, lam=0.0, alpha=0.5))
    loss, metrics = fn(
        jnp.asarray(e_logits), e_batch, policy_logits=jnp.asarray(p_logits), policy_batch=p_batch
    )
    np.testing.assert_allclose(metrics["value_gap"], 0.0, atol=1e-5)
    np.testing.assert_allclose(loss, metrics["nll"], rtol=1e-6)
    for gamma, lam in ((0.9, 0.1), (1.0, 0.3)):
        fn = on_logits(losses.get("iqlearn", gamma=gamma, lam=lam, alpha=0.5))
        loss, _ = fn(
            jnp.asarray(e_logits), e_batch, policy_logits=jnp.asarray(p_logits), policy_batch=p_batch
        )
        expected = reference.iqlearn_online(e64, p64, gamma=gamma, lam=lam, alpha=0.5)
        np.testing.assert_allclose(loss, expected, rtol=1e-5)
