"""KV-cache decoding against recomputing the full forward pass."""

import jax.numpy as jnp
import numpy as np
import pytest

from jirl import models, sampling


def test_greedy_decoding_matches_full_forward_argmax_for_ragged_prompts():
    graphdef, params = models.split(models.create(models.get_config("tiny"), seed=1))
    rng = np.random.default_rng(0)
    prompts = [list(rng.integers(3, 259, n)) for n in (3, 9, 1, 6)]
    outputs = sampling.generate(graphdef, params, prompts, max_new_tokens=7, eos_id=2, batch_size=3)
    for prompt, out in zip(prompts, outputs):
        seq = list(prompt)
        for _ in range(len(out)):
            seq.append(int(jnp.argmax(models.apply(graphdef, params, jnp.asarray([seq]))[0, -1])))
        assert seq[len(prompt) :] == out


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
