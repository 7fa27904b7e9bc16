"""Qwen3 and Llama 3.2 checkpoints (the parity of logits, export and decoding is test_hf_checkpoint.py's,
over hf_models.MODELS): Llama 3.2's config.json as published loads as is; Qwen3's q/k norms are an
option of jirl's decoder; what jirl does not implement is refused by name."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from hf_models import SHAPE, TOKENS, hf_logits, random_hf, saved_folder

from jirl import models
from jirl.errors import ConfigError
from jirl.models import hf


def _edit_config(folder, drop=(), **changes):
    path = folder / "config.json"
    config = {k: v for k, v in json.loads(path.read_text()).items() if k not in drop}
    path.write_text(json.dumps({**config, **changes}))


def test_llama3_2_config_json_as_published_loads_as_is(tmp_path):
    """The Hub's Llama-3.2 config.json has `rope_scaling` and a top-level `rope_theta` (transformers 4),
    not transformers 5's `rope_parameters`."""
    model = random_hf("llama3_2")
    model.save_pretrained(tmp_path)
    rope = dict(model.config.rope_parameters)
    theta = rope.pop("rope_theta")
    _edit_config(tmp_path, drop=("rope_parameters",), rope_scaling=rope, rope_theta=theta)
    ours = hf.load(tmp_path)
    cfg = ours.config
    assert cfg.tie_embeddings and cfg.rope_scaling == "llama3" and cfg.rope_theta == 500_000.0
    assert (cfg.rope_factor, cfg.rope_original_max_len) == (32.0, 512)
    assert hf.family_of(cfg) == "llama"
    np.testing.assert_allclose(
        np.asarray(ours(jnp.asarray(TOKENS))), hf_logits(model, TOKENS), atol=1e-4, rtol=0
    )


def test_qwen3_q_and_k_norms_are_per_head_parameters_of_the_layers(tmp_path):
    model = random_hf("qwen3_untied")
    model.save_pretrained(tmp_path)
    cfg, params = hf.load_params(tmp_path)
    assert cfg.qk_norm and not cfg.qkv_bias and hf.family_of(cfg) == "qwen3"
    q_norm = model.model.layers[1].self_attn.q_norm.weight.detach().numpy()
    assert params["layers"]["q_norm"].shape == params["layers"]["k_norm"].shape == (2, 16)  # [L, head_dim]
    np.testing.assert_array_equal(params["layers"]["q_norm"][1], q_norm)


def test_qwen3_with_attention_biases_matches_transformers(tmp_path):
    """attention_bias=True: biases on q, k, v and o (as Llama's), with the q/k norms after the biases."""
    torch.manual_seed(0)
    config = transformers.Qwen3Config(
        **SHAPE, num_key_value_heads=2, head_dim=8, max_position_embeddings=128, attention_bias=True
    )
    model = transformers.Qwen3ForCausalLM(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(tmp_path)
    ours = hf.load(tmp_path)
    assert ours.config.qkv_bias and ours.config.out_bias and ours.config.qk_norm
    np.testing.assert_allclose(
        np.asarray(ours(jnp.asarray(TOKENS))), hf_logits(model, TOKENS), atol=1e-4, rtol=0
    )
    out = tmp_path / "out"
    hf.save(models.split(ours)[1], ours.config, out)
    assert json.loads((out / "config.json").read_text())["attention_bias"] is True
    assert hf.load(out).config == ours.config


def test_a_qk_norm_config_is_qwen3_and_no_other_family():
    cfg = models.get_config("tiny", qk_norm=True)
    assert hf.family_of(cfg) == "qwen3" and hf.config_to_hf(cfg)["architectures"] == ["Qwen3ForCausalLM"]
    with pytest.raises(ConfigError, match=r"options \['qk_norm'\].*model_type 'llama'"):
        hf.config_to_hf(cfg, "llama")
    with pytest.raises(ConfigError, match=r"options \['qk_norm'\].*model_type 'qwen2'"):
        hf.config_to_hf(models.get_config("tiny", qk_norm=True, qkv_bias=True), "qwen2")
    # Qwen3's attention_bias puts a bias on o too: q/k/v biases alone are not Qwen3.
    with pytest.raises(ConfigError, match=r"options \['out_bias'\].*model_type 'qwen3'"):
        hf.config_to_hf(models.get_config("tiny", qk_norm=True, qkv_bias=True))


def test_qk_norm_is_refused_where_jirl_does_not_implement_it():
    with pytest.raises(ConfigError, match="model.qk_norm=True is not supported with model.norm='layer'"):
        models.get_config("gpt2_124m", qk_norm=True)
    with pytest.raises(ConfigError, match="model.qk_norm=True is not supported in a T5 encoder-decoder"):
        models.get_config("t5_tiny", qk_norm=True)


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(use_sliding_window=True, sliding_window=4), "use_sliding_window=True"),
        (dict(rope_parameters=dict(rope_type="yarn", factor=4.0, rope_theta=1e6)), "rope_type='yarn'"),
        (dict(layer_types=["full_attention", "sliding_attention"]), "layer_types="),
        (dict(hidden_act="relu"), "hidden_act='relu'"),
    ],
)
def test_qwen3_options_jirl_lacks_are_refused_by_name(tmp_path, changes, message):
    folder = saved_folder(tmp_path, "qwen3_tied")
    _edit_config(folder, **changes)
    with pytest.raises(ConfigError, match="option " + message + ".*not supported") as error:
        hf.load(folder)
    assert "\n" not in str(error.value)
