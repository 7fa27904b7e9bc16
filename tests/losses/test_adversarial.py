"""Adversarial imitation's math: an unbiased policy gradient on a toy bandit, KL and the discriminator
against float64 NumPy, rewards, leave-one-out advantages, the PPO clip and the option checks."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jirl.errors import ConfigError
from jirl.losses import adversarial as adv

# ---------------------------------------------------------------------------------------------------
# 1. The policy-gradient estimator is unbiased (toy bandit: vocabulary 3, responses of 2 tokens).

V, K = 3, 4


def _bandit(seed=0):
    rng = np.random.default_rng(seed)
    theta = (
        jnp.asarray(rng.normal(size=V), jnp.float32),  # step 1 logits [3]
        jnp.asarray(rng.normal(size=(V, V)), jnp.float32),  # step 2 logits given a1 [3, 3]
    )
    r1 = rng.normal(size=V).astype(np.float32)
    r2 = (2.0 * rng.normal(size=(V, V))).astype(np.float32)
    return theta, r1, r2


def _expected_return(theta, r1, r2):
    pi1 = jax.nn.softmax(theta[0])
    pi2 = jax.nn.softmax(theta[1], axis=-1)
    return jnp.sum(pi1[:, None] * pi2 * (r1[:, None] + r2))


def _token_logp(theta, tokens_BT, prev_BT, step_BT):
    """log pi of each token (step 1: a1, step 2: a2 given prev = a1); NaN on padding (step 0)."""
    ls1 = jax.nn.log_softmax(theta[0])
    ls2 = jax.nn.log_softmax(theta[1], axis=-1)
    logp_BT = jnp.where(step_BT == 1, ls1[tokens_BT], ls2[prev_BT, tokens_BT])
    return jnp.where(step_BT == 0, jnp.nan, logp_BT)


def _sample(theta, n, rng):
    """n * K sequences (a1, a2) [n K] from pi, by inverse CDF."""
    pi1 = np.asarray(jax.nn.softmax(theta[0]), np.float64)
    pi2 = np.asarray(jax.nn.softmax(theta[1], axis=-1), np.float64)
    a1 = np.minimum((rng.random(n * K)[:, None] > np.cumsum(pi1)).sum(-1), V - 1)
    a2 = np.minimum((rng.random(n * K)[:, None] > np.cumsum(pi2[a1], axis=-1)).sum(-1), V - 1)
    return a1, a2


def _pack(a1, a2, order, per_row, pad, r1, r2):
    """Examples in `order` (global ids order + 1, group ids order // K + 1), `per_row` per row, each of
    2 tokens, then `pad` padding tokens (ids 0, NaN rewards)."""
    rows = len(order) // per_row
    t = 2 * per_row + pad
    tokens, prev, step = (np.zeros((rows, t), np.int32) for _ in range(3))
    example_ids, group_ids = np.zeros((rows, t), np.int32), np.zeros((rows, t), np.int32)
    rewards = np.full((rows, t), np.nan, np.float32)
    for slot, e in enumerate(order):
        row, col = divmod(slot, per_row)
        cols = [2 * col, 2 * col + 1]
        tokens[row, cols] = a1[e], a2[e]
        prev[row, cols] = 0, a1[e]
        step[row, cols] = 1, 2
        example_ids[row, cols] = e + 1
        group_ids[row, cols] = e // K + 1
        rewards[row, cols] = r1[a1[e]], r2[a1[e], a2[e]]
    mask = (step > 0).astype(np.float32)
    return dict(
        tokens=tokens, prev=prev, step=step, example_ids=example_ids, group_ids=group_ids,
        rewards=rewards, mask=mask,
    )  # fmt: skip


def _pg_gradient(theta, b, advantages_BT):
    """-grad of the surrogate on fresh samples (rho = 1): the estimate of grad J."""

    def loss(th):
        logp_BT = _token_logp(th, b["tokens"], b["prev"], b["step"])
        return adv.policy_gradient_loss(
            logp_BT, jax.lax.stop_gradient(logp_BT), advantages_BT, b["mask"], b["example_ids"], clip=0.2
        )[0]

    g = jax.grad(loss)(theta)
    return jnp.concatenate([-g[0].ravel(), -g[1].ravel()])


def test_policy_gradient_is_unbiased_on_a_bandit():
    theta, r1, r2 = _bandit()
    g_exact = jax.grad(_expected_return)(theta, r1, r2)
    exact = np.concatenate([np.ravel(g_exact[0]), np.ravel(g_exact[1])])

    n = 3000
    a1, a2 = _sample(theta, n, np.random.default_rng(1))

    # Per group: one [1, 2K] batch each, the gradient samples for the standard error.
    groups = _pack(a1, a2, np.arange(n * K), per_row=K, pad=0, r1=r1, r2=r2)
    groups = {k: jnp.asarray(v).reshape(n, 1, 2 * K) for k, v in groups.items()}
    groups["example_ids"] = (groups["example_ids"] - 1) % K + 1  # ids 1..K within each group's batch
    groups["group_ids"] = jnp.ones_like(groups["group_ids"])

    def per_group(b):
        a_BT = adv.leave_one_out_advantages(b["rewards"], b["mask"], b["example_ids"], b["group_ids"])
        return _pg_gradient(theta, b, a_BT)

    samples = np.asarray(jax.jit(jax.vmap(per_group))(groups), np.float64)  # [n, 12]
    mean = samples.mean(0)
    stderr = samples.std(0, ddof=1) / np.sqrt(n)
    assert np.all(np.abs(mean - exact) < 4 * stderr), (mean, exact, stderr)
    assert np.all(stderr < 0.05 * np.abs(exact).max())  # the test has power

    # One packed batch, examples shuffled so groups span rows, 3 per row and a padding token (NaN
    # rewards and log-probs there): the same estimate, the mean of the per-group ones.
    order = np.random.default_rng(2).permutation(n * K)
    packed = {k: jnp.asarray(v) for k, v in _pack(a1, a2, order, 3, 1, r1, r2).items()}
    loo_BT = adv.leave_one_out_advantages(
        packed["rewards"], packed["mask"], packed["example_ids"], packed["group_ids"]
    )
    full = np.asarray(jax.jit(_pg_gradient)(theta, packed, loo_BT))
    assert np.all(np.isfinite(full))
    np.testing.assert_allclose(full, mean, rtol=1e-4, atol=1e-5)

    # The group mean including the example itself: exactly (K - 1) / K of the leave-one-out advantage,
    # so the estimate shrinks by that factor, a bias the largest component shows well past 4 standard errors.
    ids_BT = np.asarray(packed["example_ids"])
    returns = np.zeros(n * K, np.float32)
    np.add.at(returns, ids_BT[ids_BT > 0] - 1, np.asarray(packed["rewards"])[ids_BT > 0])
    self_mean = returns - returns.reshape(n, K).mean(1).repeat(K)
    self_BT = np.where(ids_BT > 0, self_mean[ids_BT - 1], 0.0) * np.asarray(packed["mask"])
    np.testing.assert_allclose(self_BT, (K - 1) / K * np.asarray(loo_BT), rtol=1e-4, atol=1e-4)
    shrunk = np.asarray(_pg_gradient(theta, packed, jnp.asarray(self_BT, jnp.float32)))
    np.testing.assert_allclose(shrunk, (K - 1) / K * full, rtol=1e-4, atol=1e-5)
    big = np.argmax(np.abs(exact))
    assert abs(shrunk[big] - exact[big]) > 4 * (K - 1) / K * stderr[big]


# ---------------------------------------------------------------------------------------------------
# 2. KL to the reference and the entropy, against float64 NumPy.


def _np_log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _read(logits, mask):
    """The logits of the read positions, in float64 (0 elsewhere: the garbage there is not read)."""
    return np.where(mask[..., None] > 0, logits, 0).astype(np.float64)


def _kl_inputs():
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(2, 5, 11)).astype(np.float32) * 2
    reference = rng.normal(size=(2, 5, 11)).astype(np.float32) * 2
    mask = np.ones((2, 5), np.float32)
    mask[0, 3:] = 0
    mask[1, 0] = 0
    logits[0, 4] = np.nan  # garbage at masked positions reaches neither value nor gradient
    reference[1, 0] = np.inf
    return logits, reference, mask


def test_kl_matches_numpy_and_gradient_goes_to_the_policy_only():
    logits, reference, mask = _kl_inputs()
    logp, logq = _np_log_softmax(_read(logits, mask)), _np_log_softmax(_read(reference, mask))
    expected_BT = mask * (np.exp(logp) * (logp - logq)).sum(-1)
    kl_BT, kl = adv.kl_to_reference(jnp.asarray(logits), jnp.asarray(reference), jnp.asarray(mask))
    np.testing.assert_allclose(kl_BT, expected_BT, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(kl, expected_BT.sum() / mask.sum(), rtol=1e-5)
    assert np.all(expected_BT[mask > 0] > 0)

    def mean_kl(z, ref):
        return adv.kl_to_reference(z, ref, jnp.asarray(mask))[1]

    g_z, g_ref = jax.grad(mean_kl, argnums=(0, 1))(jnp.asarray(logits), jnp.asarray(reference))
    assert np.all(np.isfinite(g_z))
    assert np.all(np.asarray(g_z)[mask == 0] == 0)
    assert np.any(np.abs(np.asarray(g_z)[mask > 0]) > 1e-3)
    assert np.all(np.asarray(g_ref) == 0)
    # d KL / d z_v = p_v ((log p_v - log q_v) - KL) / sum(m) at a read position.
    p = np.exp(logp[1, 2])
    expected_grad = p * ((logp[1, 2] - logq[1, 2]) - expected_BT[1, 2]) / mask.sum()
    np.testing.assert_allclose(g_z[1, 2], expected_grad, rtol=1e-4, atol=1e-7)


def test_kl_and_entropy_are_finite_with_minus_inf_logits():
    z = jnp.asarray([[[0.0, 1.0, -jnp.inf], [2.0, -jnp.inf, -jnp.inf]]])
    ref = jnp.asarray([[[1.0, 0.0, -jnp.inf], [0.0, 0.0, 0.0]]])
    mask = jnp.ones((1, 2))
    kl_BT, _ = adv.kl_to_reference(z, ref, mask)
    p = np.exp(_np_log_softmax(np.array([0.0, 1.0])))
    q = np.exp(_np_log_softmax(np.array([1.0, 0.0])))
    np.testing.assert_allclose(kl_BT[0], [np.sum(p * np.log(p / q)), np.log(3.0)], rtol=1e-5)
    g = jax.grad(lambda x: adv.kl_to_reference(x, ref, mask)[1])(z)
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(adv.entropy(z, mask), -np.sum(p * np.log(p)) / 2, rtol=1e-5)


def test_entropy_matches_numpy_without_gradient():
    logits, _, mask = _kl_inputs()
    logp = _np_log_softmax(_read(logits, mask))
    per_BT = mask * -(np.exp(logp) * logp).sum(-1)
    np.testing.assert_allclose(adv.entropy(jnp.asarray(logits), jnp.asarray(mask)), per_BT.sum() / mask.sum())
    g = jax.grad(lambda z: adv.entropy(z, jnp.asarray(mask)))(jnp.asarray(logits))
    assert np.all(np.asarray(g) == 0)


# ---------------------------------------------------------------------------------------------------
# 3. The discriminator.


def test_discriminator_loss_matches_numpy():
    rng = np.random.default_rng(3)
    d_e, d_p = rng.normal(size=(2, 6)).astype(np.float32) * 3, rng.normal(size=(3, 4)).astype(np.float32) * 3
    m_e, m_p = (rng.random((2, 6)) < 0.7).astype(np.float32), (rng.random((3, 4)) < 0.7).astype(np.float32)
    d_e[m_e == 0], d_p[m_p == 0] = np.nan, np.inf
    e64, p64 = np.nan_to_num(d_e.astype(np.float64)), np.nan_to_num(d_p.astype(np.float64), posinf=0)
    expected = (m_e * np.log1p(np.exp(-e64))).sum() / m_e.sum() + (
        m_p * np.log1p(np.exp(p64))
    ).sum() / m_p.sum()
    args = [jnp.asarray(x) for x in (d_e, m_e, d_p, m_p)]
    loss, metrics = adv.discriminator_loss(*args)
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    np.testing.assert_allclose(metrics["disc_loss"], expected, rtol=1e-5)
    np.testing.assert_allclose(
        metrics["disc_expert_accuracy"], (m_e * (e64 > 0)).sum() / m_e.sum(), rtol=1e-6
    )
    np.testing.assert_allclose(
        metrics["disc_policy_accuracy"], (m_p * (p64 < 0)).sum() / m_p.sum(), rtol=1e-6
    )
    g_e, g_p = jax.grad(lambda e, p: adv.discriminator_loss(e, args[1], p, args[3])[0], (0, 1))(
        args[0], args[2]
    )
    assert np.all(np.isfinite(g_e)) and np.all(np.isfinite(g_p))
    assert np.all(np.asarray(g_e)[m_e == 0] == 0) and np.all(np.asarray(g_p)[m_p == 0] == 0)
    # d/dd of -log sigmoid(d) / n_E is -sigmoid(-d) / n_E.
    np.testing.assert_allclose(
        np.asarray(g_e)[m_e > 0], -1 / (1 + np.exp(e64[m_e > 0])) / m_e.sum(), rtol=1e-5
    )


def test_discriminator_separates_two_token_distributions():
    rng = np.random.default_rng(4)
    expert_tokens = jnp.asarray(rng.integers(0, 5, size=(4, 8)))
    policy_tokens = jnp.asarray(rng.integers(5, 10, size=(4, 8)))
    expert_mask = jnp.ones((4, 8)).at[:, 6:].set(0)
    policy_mask = jnp.ones((4, 8)).at[1:, 5:].set(0)
    table = jnp.zeros(10)  # d[token]
    optimizer = optax.adam(0.1)

    def loss_fn(tbl):
        return adv.discriminator_loss(tbl[expert_tokens], expert_mask, tbl[policy_tokens], policy_mask)

    @jax.jit
    def step(tbl, state):
        grads, _ = jax.grad(loss_fn, has_aux=True)(tbl)
        updates, state = optimizer.update(grads, state)
        return optax.apply_updates(tbl, updates), state

    state = optimizer.init(table)
    _, before = loss_fn(table)
    for _ in range(200):
        table, state = step(table, state)
    loss, metrics = loss_fn(table)
    assert before["disc_expert_accuracy"] == 0 and before["disc_policy_accuracy"] == 0  # d = 0 everywhere
    assert metrics["disc_expert_accuracy"] > 0.95 and metrics["disc_policy_accuracy"] > 0.95
    assert loss < 0.1
    assert np.all(np.asarray(table[:5]) > 0) and np.all(np.asarray(table[5:]) < 0)


# ---------------------------------------------------------------------------------------------------
# 4. Rewards.


def test_token_rewards_match_numpy_and_stop_gradient():
    d = np.array([[-20.0, -2.0, 0.0], [0.5, 3.0, 20.0]], np.float32)
    prob = 1 / (1 + np.exp(-d.astype(np.float64)))  # D
    airl = adv.token_rewards(jnp.asarray(d), "airl")
    gail = adv.token_rewards(jnp.asarray(d), "gail")
    np.testing.assert_allclose(airl, np.log(prob) - np.log(1 - prob), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(airl, d)
    np.testing.assert_allclose(gail, -np.log(1 - prob), rtol=1e-5, atol=1e-6)
    assert airl.dtype == gail.dtype == jnp.float32
    for form in adv.REWARDS:
        g = jax.grad(lambda x, f=form: jnp.sum(adv.token_rewards(x, f)))(jnp.asarray(d))
        assert np.all(np.asarray(g) == 0)
    with pytest.raises(ConfigError, match="loss.reward='wgan'"):
        adv.token_rewards(jnp.asarray(d), "wgan")


# ---------------------------------------------------------------------------------------------------
# 5. Returns and leave-one-out advantages on a hand-built packed batch.


def test_leave_one_out_advantages_by_hand():
    nan = np.nan
    # Group 1: examples 1 (return 1 + 2), 2 (4) and 3 (6), example 3 in the second row; group 2:
    # example 4 (5) alone. Prompt tokens (mask 0) carry their example's ids; NaN rewards there.
    example_ids = np.array([[1, 1, 1, 2, 2, 0], [3, 3, 4, 4, 0, 0]], np.int32)
    group_ids = np.array([[1, 1, 1, 1, 1, 0], [1, 1, 2, 2, 0, 0]], np.int32)
    mask = np.array([[0, 1, 1, 0, 1, 0], [0, 1, 0, 1, 0, 0]], np.float32)
    rewards = np.array([[nan, 1, 2, nan, 4, nan], [nan, 6, nan, 5, nan, nan]], np.float32)
    args = [jnp.asarray(x) for x in (rewards, mask, example_ids)]

    returns = adv.sequence_returns(*args, num_segments=13)
    np.testing.assert_array_equal(returns, [0, 3, 4, 6, 5] + [0] * 8)

    advantages = adv.leave_one_out_advantages(*args, jnp.asarray(group_ids))
    a1, a2, a3 = 3 - (4 + 6) / 2, 4 - (3 + 6) / 2, 6 - (3 + 4) / 2
    expected = [[0, a1, a1, 0, a2, 0], [0, a3, 0, 5, 0, 0]]
    np.testing.assert_allclose(advantages, expected, rtol=1e-6)
    g = jax.grad(lambda r: jnp.sum(adv.leave_one_out_advantages(r, *args[1:], jnp.asarray(group_ids))))(
        jnp.asarray(np.nan_to_num(rewards))
    )
    assert np.all(np.asarray(g) == 0)


# ---------------------------------------------------------------------------------------------------
# 6. The PPO clip.


def test_policy_gradient_loss_clips_like_numpy():
    clip = 0.2
    # Ratios: 1.5 (A > 0: clipped), 0.5 (A < 0: clipped), 1.5 (A < 0: not), 0.9 (A > 0: not),
    # 0.5 (A > 0: not), a padding token with garbage, then example 3's token with ratio 1.1.
    ratio = np.array([[1.5, 0.5, 1.5, 0.9], [0.5, 1.0, 1.1, 1.0]])
    a = np.array([[2.0, -1.0, -1.0, 3.0], [2.0, 0.0, 0.5, 0.0]])
    mask = np.array([[1, 1, 1, 1], [1, 0, 1, 0]], np.float32)
    example_ids = np.array([[1, 1, 2, 2], [2, 0, 3, 0]], np.int32)
    sample_logp = np.random.default_rng(6).normal(size=(2, 4)) - 2
    logp = (sample_logp + np.log(ratio)).astype(np.float32)
    logp[1, 1] = np.nan
    inputs = [jnp.asarray(x) for x in (logp, sample_logp.astype(np.float32), a.astype(np.float32), mask)]

    def reference(c):
        bounded = np.clip(ratio, 1 - c, 1 + c) if c else ratio
        surrogate = np.minimum(ratio * a, bounded * a)
        return -(mask * surrogate).sum() / 3, (mask * (bounded * a < ratio * a)).sum() / mask.sum()

    loss, metrics = adv.policy_gradient_loss(*inputs, jnp.asarray(example_ids), clip)
    expected_loss, expected_fraction = reference(clip)
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-5)
    np.testing.assert_allclose(metrics["pg_loss"], expected_loss, rtol=1e-5)
    np.testing.assert_allclose(metrics["clip_fraction"], 2 / 6)
    np.testing.assert_allclose(metrics["clip_fraction"], expected_fraction)
    assert metrics["examples"] == 3

    g = np.asarray(
        jax.grad(lambda x: adv.policy_gradient_loss(x, *inputs[1:], example_ids, clip)[0])(inputs[0])
    )
    # d/dlogp of -rho A / E where not clipped; 0 where the clip is active and on padding.
    expected_g = np.where(
        (mask > 0) & ~((ratio > 1 + clip) & (a > 0)) & ~((ratio < 1 - clip) & (a < 0)), -ratio * a / 3, 0
    )
    np.testing.assert_allclose(g, expected_g, rtol=1e-5, atol=1e-7)

    unclipped, m0 = adv.policy_gradient_loss(*inputs, jnp.asarray(example_ids), 0.0)
    np.testing.assert_allclose(unclipped, -(mask * ratio * a).sum() / 3, rtol=1e-5)
    assert m0["clip_fraction"] == 0


# ---------------------------------------------------------------------------------------------------
# 7. Options.


@pytest.mark.parametrize(
    "options, key",
    [
        (dict(reward="wgan"), "loss.reward"),
        (dict(reward=None), "loss.reward"),
        (dict(mle_weight=-0.1), "loss.mle_weight"),
        (dict(pg_weight=-1.0), "loss.pg_weight"),
        (dict(kl=-1e-3), "loss.kl"),
        (dict(kl=float("nan")), "loss.kl"),
        (dict(kl="lots"), "loss.kl"),
        (dict(clip=-0.2), "loss.clip"),
        (dict(samples_per_prompt=0), "loss.samples_per_prompt"),
        (dict(samples_per_prompt=2.0), "loss.samples_per_prompt"),
        (dict(samples_per_prompt=True), "loss.samples_per_prompt"),
        (dict(discriminator=""), "loss.discriminator"),
        (dict(discriminator=3), "loss.discriminator"),
        (dict(discriminator_learning_rate=0.0), "loss.discriminator_learning_rate"),
        (dict(discriminator_learning_rate=-1e-4), "loss.discriminator_learning_rate"),
    ],
)
def test_check_options_refuses(options, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.") + "="):
        adv.check_options(**options)


def test_check_options_accepts():
    adv.check_options()
    adv.check_options(
        reward="gail", mle_weight=0.0, kl=0.0, clip=0.0, samples_per_prompt=np.int64(1),
        discriminator="any-name", discriminator_learning_rate=3e-4, unrelated_option=1,
    )  # fmt: skip
    assert adv.REWARDS == ("airl", "gail")
