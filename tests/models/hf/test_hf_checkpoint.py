"""jirl.models.hf.checkpoint: tiny random models of each decoder family loaded, run and saved against
transformers (logits, decoding); a checkpoint that does not fit is refused by tensor name."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from hf_models import MODELS, TOKENS, hf_logits, random_hf, saved_folder
from safetensors.numpy import load_file, save_file

from jirl import models, sampling
from jirl.errors import ConfigError
from jirl.models import hf


@pytest.fixture(scope="module", params=sorted(MODELS))
def pair(request, tmp_path_factory):
    """(family, HF model, its folder, the jirl model loaded from it)."""
    model = random_hf(request.param)
    folder = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(folder)
    return request.param, model, folder, hf.load(folder)


def test_logits_match_transformers(pair):
    _, model, _, ours = pair
    theirs = hf_logits(model, TOKENS)
    np.testing.assert_allclose(np.asarray(ours(jnp.asarray(TOKENS))), theirs, atol=1e-4, rtol=0)
    assert np.abs(theirs).max() > 1.0  # not trivially small


def test_saved_folder_loads_in_transformers_with_the_same_logits(pair, tmp_path):
    family, model, _, ours = pair
    graphdef, params = models.split(ours)
    hf.save(params, ours.config, tmp_path)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path, attn_implementation="eager", local_files_only=True
    ).eval()
    assert type(reloaded) is type(model)
    np.testing.assert_allclose(hf_logits(reloaded, TOKENS), hf_logits(model, TOKENS), atol=1e-5, rtol=0)
    again = hf.load(tmp_path)
    assert again.config == ours.config


def test_greedy_continuation_matches_transformers(pair):
    _, model, _, ours = pair
    prompts = [TOKENS[0, :5].tolist(), TOKENS[1, :9].tolist()]
    graphdef, params = models.split(ours)
    got = sampling.generate(graphdef, params, prompts, max_new_tokens=6, eos_id=-1, bucket=16)
    for prompt, tokens in zip(prompts, got):
        with torch.no_grad():
            out = model.generate(torch.tensor([prompt]), max_new_tokens=6, do_sample=False)
        assert tokens == out[0, len(prompt) :].tolist()


def test_num_params_counts_the_loaded_parameters(pair):
    _, model, _, ours = pair
    _, params = models.split(ours)
    n = sum(p.size for p in jax.tree.leaves(params))
    assert n == ours.config.num_params() == sum(p.numel() for p in model.parameters())


def test_every_new_parameter_has_logical_axes_of_its_rank(pair):
    _, _, _, ours = pair
    axes = models.logical_axes(ours)
    _, params = models.split(ours)
    known = {"vocab", "embed", "heads", "kv", "mlp", "layers", None}
    flat_axes = jax.tree_util.tree_leaves_with_path(axes, is_leaf=lambda x: isinstance(x, tuple))
    for (path, names), value in zip(flat_axes, jax.tree.leaves(params)):
        assert len(names) == value.ndim and set(names) <= known, (path, names)


def test_load_params_accepts_a_config_with_other_compute_options(pair):
    _, model, folder, ours = pair
    cfg = dataclasses.replace(ours.config, scan_layers=False, remat="full")
    got, params = hf.load_params(folder, cfg)
    assert got == cfg
    logits = models.apply(models.split(models.create(cfg))[0], params, jnp.asarray(TOKENS))
    np.testing.assert_allclose(np.asarray(logits), hf_logits(model, TOKENS), atol=1e-4, rtol=0)


def test_a_jirl_preset_saves_as_llama_and_loads_back(tmp_path):
    cfg = models.get_config("tiny")
    model = models.create(cfg, seed=3)
    hf.save(models.split(model)[1], cfg, tmp_path)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, local_files_only=True).eval()
    tokens = np.random.default_rng(5).integers(0, cfg.vocab_size, (2, 10))
    np.testing.assert_allclose(np.asarray(model(jnp.asarray(tokens))), hf_logits(theirs, tokens), atol=1e-4)


# A checkpoint that does not fit: one sentence each, a ConfigError (the user can fix it).


def _edit_tensors(folder, **changes):
    """Rewrites folder/model.safetensors with `changes` (a name -> array, or -> None to delete)."""
    tensors = load_file(folder / "model.safetensors")
    for name, value in changes.items():
        if value is None:
            del tensors[name]
        else:
            tensors[name] = value
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


def test_a_missing_tensor_is_named(tmp_path):
    folder = saved_folder(tmp_path)
    _edit_tensors(folder, **{"model.layers.1.mlp.up_proj.weight": None})
    with pytest.raises(ConfigError, match="no tensor 'model.layers.1.mlp.up_proj.weight'"):
        hf.load(folder)


def test_a_tensor_of_the_wrong_shape_is_named(tmp_path):
    folder = saved_folder(tmp_path)
    _edit_tensors(folder, **{"model.layers.0.self_attn.k_proj.weight": np.zeros((8, 32), np.float32)})
    with pytest.raises(
        ConfigError, match=r"'model.layers.0.self_attn.k_proj.weight' has shape \(8, 32\), expected"
    ):
        hf.load(folder)


def test_an_unexpected_tensor_is_named(tmp_path):
    folder = saved_folder(tmp_path)
    _edit_tensors(folder, **{"model.layers.0.self_attn.q_norm.weight": np.ones(8, np.float32)})
    with pytest.raises(ConfigError, match="q_norm.weight.*no place"):
        hf.load(folder)


def test_buffers_and_a_base_model_without_its_head_prefix_load(tmp_path):
    """Buffers such as rotary_emb.inv_freq are skipped; names without "model." are found."""
    folder = saved_folder(tmp_path)
    tensors = load_file(folder / "model.safetensors")
    renamed = {k.removeprefix("model."): v for k, v in tensors.items()}
    renamed["layers.0.self_attn.rotary_emb.inv_freq"] = np.ones(4, np.float32)
    save_file(renamed, folder / "model.safetensors", metadata={"format": "pt"})
    _, params = hf.load_params(folder)
    np.testing.assert_array_equal(params["embed"], tensors["model.embed_tokens.weight"])
