"""Implicit rewards against float64 NumPy loops over the same positions."""

import jax.numpy as jnp
import numpy as np
import pytest
import reference
from batches import random_batch

from jirl.losses import head, rewards


@pytest.mark.parametrize("gamma", [1.0, 0.9])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_token_rewards_and_log_probs_match_numpy(gamma, seed):
    logits, batch = random_batch(np.random.default_rng(seed))
    stats = head.from_logits(jnp.asarray(logits), batch)
    r_BT = np.asarray(rewards.token_rewards(stats, batch, gamma=gamma))
    logp_BT = np.asarray(rewards.token_log_probs(stats, batch))
    mask = batch["loss_mask"] > 0
    q, v, v_next = reference.soft_q_terms(
        logits.astype(np.float64), batch["targets"], batch["loss_mask"], batch["segment_ids"], gamma
    ).T  # in row-major order of the masked positions
    np.testing.assert_allclose(r_BT[mask], q - gamma * v_next, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(logp_BT[mask], q - v, rtol=1e-5, atol=1e-5)
    assert np.all(r_BT[~mask] == 0) and np.all(logp_BT[~mask] == 0)


def test_sequence_reward_discounts_by_response_step():
    r_BT = np.array([[0.0, 0.0, 1.0, 2.0, 3.0, 0.0], [5.0, 1.0, 1.0, 0.0, 0.0, 0.0]], np.float32)
    mask = np.array([[0, 0, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]], np.float32)
    got = np.asarray(rewards.sequence_rewards(jnp.asarray(r_BT), jnp.asarray(mask), gamma=0.5))
    np.testing.assert_allclose(got, [1.0 + 0.5 * 2.0 + 0.25 * 3.0, 5.0 + 0.5 + 0.25])
    np.testing.assert_allclose(np.asarray(rewards.sequence_rewards(r_BT, mask)), [6.0, 7.0])
