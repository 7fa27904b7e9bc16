"""jirl.models.lora: the `model.lora` block checked, adapters that start as the base, the factored
form equal to the merged weights, and targets a model lacks refused by name."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jirl import models
from jirl.errors import ConfigError
from jirl.models import layers, lora

ALL = tuple(lora.TARGETS)


@pytest.fixture(scope="module")
def tiny():
    """(config, graphdef, params) of the tiny model, made once."""
    cfg = models.get_config("tiny")
    graphdef = nnx.graphdef(nnx.eval_shape(lambda: models.create(cfg, seed=0)))
    return cfg, graphdef, jax.jit(lambda: models.split(models.create(cfg, seed=0))[1])()


TOKENS = np.random.default_rng(0).integers(0, 259, (2, 12))


@functools.cache
def _forward(graphdef, scale):
    def forward(params, adapters):
        ad = None if adapters is None else layers.Adapters(adapters["layers"], scale)
        return models.forward_batch(graphdef, params, {"inputs": jnp.asarray(TOKENS)}, ad)

    return jax.jit(forward)


def _logits(graphdef, params, adapters=None, scale=1.0):
    """The model's logits of TOKENS (jitted), with the adapters when given."""
    return np.asarray(_forward(graphdef, scale)(params, adapters))


def test_step_zero_is_the_base_model_and_the_factored_form_is_the_merged_one(tiny):
    cfg, graphdef, params = tiny
    config = lora.LoraConfig(rank=4, alpha=8.0, targets=ALL)
    adapters = lora.init_adapters(cfg, config, seed=1)
    base = _logits(graphdef, params)
    np.testing.assert_array_equal(_logits(graphdef, params, adapters, config.scale), base)  # B = 0
    # A like PEFT's kaiming-uniform: |A| <= 1/sqrt(fan_in); wo's fan-in is heads x head_dim.
    assert float(jnp.abs(adapters["layers"]["wo"]["a"]).max()) <= (cfg.num_heads * cfg.head_dim) ** -0.5
    rng = np.random.default_rng(2)
    moved = jax.tree.map(lambda x: x + 0.1 * rng.standard_normal(x.shape, np.float32), adapters)
    factored = _logits(graphdef, params, moved, config.scale)
    assert float(np.abs(factored - base).max()) > 0.1
    np.testing.assert_allclose(
        factored, _logits(graphdef, jax.jit(lora.merge, static_argnums=2)(params, moved, config)), atol=2e-5
    )
    # Scanned layers take the adapters' layer axis too.
    scanned = nnx.graphdef(nnx.eval_shape(lambda: models.create(dataclasses.replace(cfg, scan_layers=True))))
    np.testing.assert_allclose(_logits(scanned, params, moved, config.scale), factored, atol=2e-5)


def test_adapter_shapes_and_logical_axes():
    cfg = models.get_config("tiny")
    config = lora.LoraConfig(rank=3, alpha=3.0, targets=("q_proj", "o_proj", "down_proj"))
    adapters = lora.init_adapters(cfg, config, seed=0)["layers"]
    d, h, hd, f, L = cfg.embed_dim, cfg.num_heads, cfg.head_dim, cfg.mlp_dim, cfg.num_layers
    shapes = {n: (a["a"].shape, a["b"].shape) for n, a in adapters.items()}
    assert shapes == {
        "wq": ((L, d, 3), (L, 3, h, hd)),
        "wo": ((L, h, hd, 3), (L, 3, d)),
        "w_down": ((L, f, 3), (L, 3, d)),
    }
    axes = lora.adapter_axes(cfg, config)["layers"]
    assert axes["wq"] == {"a": ("layers", "embed", None), "b": ("layers", None, "heads", "kv")}
    assert axes["wo"] == {"a": ("layers", "heads", "kv", None), "b": ("layers", None, "embed")}
    assert lora.num_adapter_params(cfg, config) == sum(
        a.size + b.size for a, b in (x.values() for x in adapters.values())
    )


def test_the_block_defaults_to_off_and_reads_its_keys():
    assert lora.from_config(None) is None and lora.from_config(lora.defaults()) is None
    config = lora.from_config(dict(lora.defaults(), rank=8, targets="q_proj, v_proj,o_proj"))
    assert (config.rank, config.alpha, config.scale, config.targets) == (
        8,
        16,
        2.0,
        ("q_proj", "v_proj", "o_proj"),
    )
    assert lora.from_config(dict(rank=4, alpha=4.0, base_dtype="bfloat16")).base_dtype == "bfloat16"


@pytest.mark.parametrize(
    "block, message",
    [
        (dict(rank=-1), "model.lora.rank=-1 is not accepted; give an integer >= 1 (0: LoRA off)"),
        (
            dict(rank=0, targets=("q_proj",)),
            "model.lora.rank=0 turns LoRA off; give a rank >= 1 to use model.lora.targets",
        ),
        (dict(rank=0, base_dtype="bfloat16"), "give a rank >= 1 to use model.lora.base_dtype='bfloat16'"),
        (
            dict(rank=4, targets=("q_proj", "c_attn")),
            "model.lora.targets names ['c_attn'], which LoRA cannot adapt",
        ),
        (dict(rank=4, base_dtype="float16"), "model.lora.base_dtype='float16' is not accepted"),
        (dict(rank=4, dropout=1.0), "model.lora.dropout=1.0 is not accepted"),
        (dict(rank=4, alpha=-2.0), "model.lora.alpha=-2.0 is not accepted"),
        (dict(rank=4, ranks=2), "model.lora has no key(s) ['ranks']"),
        (dict(rank=4, targets=None), "model.lora.targets=None is not accepted; give module names"),
    ],
)
def test_bad_blocks_are_refused_in_one_sentence(block, message):
    with pytest.raises(
        ConfigError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")
    ):
        lora.from_config(block)


@pytest.mark.parametrize(
    "preset, overrides, targets, message",
    [
        (
            "tiny",
            dict(gated_mlp=False),
            ("gate_proj",),
            "names ['gate_proj'], which this model does not have",
        ),
        ("gpt2_124m", {}, ("q_proj",), "a gpt2 model does not have"),
        ("t5_tiny", {}, ("q_proj",), "a t5 model does not have"),
    ],
)
def test_targets_the_model_lacks_are_refused_by_name(preset, overrides, targets, message):
    cfg = models.get_config(preset, **overrides)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        lora.LoraConfig(rank=2, alpha=2.0, targets=targets).check_model(cfg)
