"""jirl.models.hf.families and the family records: config.json in and out, refusals by name."""

import json

import numpy as np
import pytest
import transformers
from hf_models import LLAMA3_ROPE, SHAPE, saved_folder

from jirl import models
from jirl.errors import ConfigError
from jirl.models import hf, layers


def _edit_config(folder, **changes):
    path = folder / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_the_registry_is_one_record_per_family():
    assert hf.FAMILIES == (
        "llama",
        "qwen2",
        "qwen3",
        "gemma",
        "gemma2",
        "gemma3_text",
        "gemma3",
        "gpt2",
        "t5",
    )
    assert hf.ARCHITECTURES["gemma2"] == "Gemma2ForCausalLM" and hf.ARCHITECTURES["t5"].startswith("T5")
    assert hf.TABLES["qwen2"] is hf.TABLES["qwen3"] is hf.TABLES["llama"] is hf.LLAMA_TABLE
    assert (
        hf.TABLES["gemma2"] is hf.TABLES["gemma3_text"] is hf.GEMMA2_TABLE
        and hf.TABLES["gpt2"] is hf.GPT2_TABLE
    )
    for name, family in hf.REGISTRY.items():
        assert isinstance(family, hf.Family) and family.model_type == name


@pytest.mark.parametrize(
    "preset, family",
    [
        ("tiny", "llama"),
        ("qwen2_7b", "qwen2"),
        ("qwen3_0_6b", "qwen3"),
        ("qwen3_8b", "qwen3"),
        ("llama3_2_1b", "llama"),
        ("gemma2_2b", "gemma2"),
        ("gemma3_1b", "gemma3_text"),
        ("gemma3_4b", "gemma3_text"),
        ("gpt2_124m", "gpt2"),
        ("t5_tiny", "t5"),
    ],
)
def test_family_of_a_preset_and_its_config_round_trip(preset, family):
    cfg = models.get_config(preset)
    assert hf.family_of(cfg) == family
    out = hf.config_to_hf(cfg)
    assert out["model_type"] == family and out["architectures"] == [hf.ARCHITECTURES[family]]
    assert hf.config_from_hf(out, dtype=cfg.dtype, remat=cfg.remat, scan_layers=cfg.scan_layers) == cfg


def test_gemma_is_the_family_of_a_plus_one_norm_without_post_norms():
    cfg = models.get_config("tiny", norm="rms_plus_one", embed_scale=True)
    assert hf.family_of(cfg) == "gemma"


def test_llama3_frequencies_are_those_of_transformers():
    config = transformers.LlamaConfig(**SHAPE, max_position_embeddings=128, rope_parameters=LLAMA3_ROPE)
    theirs, _ = transformers.modeling_rope_utils.ROPE_INIT_FUNCTIONS["llama3"](config)
    ours = layers.llama3_inv_freq(8, 10_000.0, 8.0, 1.0, 4.0, 64)
    np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-6)
    default = 10_000.0 ** (-np.arange(4) / 4)
    assert ours[0] == pytest.approx(default[0]) and ours[3] == pytest.approx(default[3] / 8)
    assert default[1] / 8 < ours[1] < default[1]  # the medium band is interpolated


# Errors, one sentence each, a ConfigError (the user can fix it).


def test_an_unsupported_model_type_is_named(tmp_path):
    folder = saved_folder(tmp_path)
    _edit_config(folder, model_type="mamba")
    with pytest.raises(ConfigError, match="model_type 'mamba' is not supported; accepted: .*'t5'"):
        hf.load(folder)
    with pytest.raises(ConfigError, match="model_type 'mamba' is not supported"):
        hf.config_to_hf(models.get_config("tiny"), "mamba")


@pytest.mark.parametrize(
    "family, changes, message",
    [
        ("llama_gqa_untied", dict(rope_parameters=dict(rope_type="yarn", factor=2.0)), "rope_type='yarn'"),
        ("llama_gqa_untied", dict(hidden_act="relu"), "hidden_act='relu'"),
        ("llama_gqa_untied", dict(pretraining_tp=2), "pretraining_tp=2"),
        ("qwen2", dict(use_sliding_window=True), "use_sliding_window=True"),
        ("gpt2", dict(scale_attn_by_inverse_layer_idx=True), "scale_attn_by_inverse_layer_idx=True"),
        ("gemma2", dict(layer_types=["full_attention", "sliding_attention"]), "layer_types="),
    ],
)
def test_unsupported_options_are_refused_by_name(tmp_path, family, changes, message):
    folder = saved_folder(tmp_path, family)
    _edit_config(folder, **changes)
    with pytest.raises(ConfigError, match="option " + message + ".*not supported"):
        hf.load(folder)


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(max_position_embeddings=None), r"config.json lacks \['max_position_embeddings'\]"),
        (dict(rope_parameters=dict(rope_type="linear")), r"'linear' RoPE scaling lacks \['factor'\]"),
        (
            dict(rope_parameters=dict(rope_type="llama3", factor=8.0)),
            r"'llama3' RoPE scaling lacks \['low_freq_factor', 'high_freq_factor'\]",
        ),
    ],
)
def test_missing_required_keys_are_named(changes, message):
    config = {**hf.config_to_hf(models.get_config("tiny"), "llama"), "model_type": "llama", **changes}
    with pytest.raises(ConfigError, match=message):
        hf.config_from_hf(config)


def test_save_refuses_what_the_family_cannot_express(tmp_path):
    cfg = models.get_config("tiny", qkv_bias=True, mlp_bias=True)
    _, params = models.split(models.create(cfg))
    with pytest.raises(ConfigError, match=r"options \['mlp_bias'\].*model_type 'qwen2'"):
        hf.save(params, cfg, tmp_path, model_type="qwen2")
    with pytest.raises(ConfigError, match="model_type 'gpt2'"):
        hf.save(params, cfg, tmp_path, model_type="gpt2")


def test_a_gated_erf_gelu_t5_cannot_be_exported():
    cfg = models.get_config("t5_tiny", activation="gelu", gated_mlp=True)
    with pytest.raises(ConfigError, match="'gated-gelu' is the tanh form"):
        hf.config_to_hf(cfg)


@pytest.mark.parametrize(
    "preset, model_type, family",
    [
        ("tiny", None, "llama, qwen2, qwen3 or gemma"),
        ("gpt2_124m", "gpt2", "gpt2"),
        ("tiny", "gemma2", "llama"),
    ],
)
def test_an_activation_a_family_has_no_name_for_is_refused(preset, model_type, family):
    cfg = models.get_config(preset, activation="relu")
    message = rf"model.activation='relu' cannot be expressed as Hugging Face {family}"
    with pytest.raises(ConfigError, match=message):
        hf.config_to_hf(cfg, model_type)


@pytest.mark.parametrize("model_type", ["gemma", "gemma2"])
def test_keys_a_gemma_config_omits_take_transformers_defaults(model_type):
    """A config.json naming only the shape reads as transformers' own config class fills it in
    (Gemma 2: softcaps 50 / 30, window 4096; both: head_dim 256), and an explicit null stays off."""
    import transformers

    minimal = dict(model_type=model_type, vocab_size=97, hidden_size=32, intermediate_size=64,
                   num_hidden_layers=4, num_attention_heads=2, num_key_value_heads=1)  # fmt: skip
    config_class = transformers.GemmaConfig if model_type == "gemma" else transformers.Gemma2Config
    filled = config_class(**{k: v for k, v in minimal.items() if k != "model_type"}).to_dict()
    assert hf.config_from_hf(minimal) == hf.config_from_hf(filled)
    assert hf.config_from_hf(minimal).head_dim == 256
    if model_type == "gemma2":
        cfg = hf.config_from_hf(minimal)
        assert (cfg.attn_softcap, cfg.final_softcap, cfg.sliding_window) == (50.0, 30.0, 4096)
        off = hf.config_from_hf(dict(minimal, attn_logit_softcapping=None, final_logit_softcapping=None))
        assert (off.attn_softcap, off.final_softcap) == (0.0, 0.0)
