"""Hugging Face checkpoints: tiny random models of each family against transformers (logits, decoding)."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from safetensors.numpy import load_file, save_file

from jirl import models, sampling
from jirl.models import hf, layers

SHAPE = dict(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
LLAMA3_ROPE = dict(
    rope_type="llama3",
    rope_theta=10_000.0,
    factor=8.0,
    low_freq_factor=1.0,
    high_freq_factor=4.0,
    original_max_position_embeddings=64,  # with head_dim 8: one high, one medium, two low frequencies
)

FAMILIES = {
    "llama_gqa_untied": lambda: transformers.LlamaForCausalLM(
        transformers.LlamaConfig(**SHAPE, num_key_value_heads=2, max_position_embeddings=128)
    ),
    "llama3_rope_tied_biases": lambda: transformers.LlamaForCausalLM(
        transformers.LlamaConfig(
            **SHAPE,
            num_key_value_heads=1,
            max_position_embeddings=128,
            rope_parameters=LLAMA3_ROPE,
            tie_word_embeddings=True,
            attention_bias=True,
            mlp_bias=True,
        )
    ),
    "qwen2": lambda: transformers.Qwen2ForCausalLM(
        transformers.Qwen2Config(**SHAPE, num_key_value_heads=2, max_position_embeddings=128)
    ),
    "gemma": lambda: transformers.GemmaForCausalLM(
        transformers.GemmaConfig(**SHAPE, num_key_value_heads=2, head_dim=16, max_position_embeddings=128)
    ),
    "gemma2": lambda: transformers.Gemma2ForCausalLM(
        transformers.Gemma2Config(
            **SHAPE,
            num_key_value_heads=2,
            head_dim=8,
            max_position_embeddings=128,
            query_pre_attn_scalar=16,
            attn_logit_softcapping=2.0,
            final_logit_softcapping=3.0,
            sliding_window=4,
            attn_implementation="eager",
        )
    ),
    "gpt2": lambda: transformers.GPT2LMHeadModel(
        transformers.GPT2Config(vocab_size=97, n_embd=32, n_layer=2, n_head=4, n_positions=128)
    ),
}


def _random_hf(family: str) -> torch.nn.Module:
    """A tiny HF model in eval mode with every parameter perturbed (so biases and norms matter)."""
    torch.manual_seed(0)
    model = FAMILIES[family]().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model


def _hf_logits(model: torch.nn.Module, tokens_BT: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.as_tensor(tokens_BT)).logits.float().numpy()


TOKENS = np.random.default_rng(0).integers(0, 97, (2, 12))


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def pair(request, tmp_path_factory):
    """(family, HF model, its folder, the jirl model loaded from it)."""
    model = _random_hf(request.param)
    folder = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(folder)
    return request.param, model, folder, hf.load(folder)


def test_logits_match_transformers(pair):
    _, model, _, ours = pair
    theirs = _hf_logits(model, TOKENS)
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
    np.testing.assert_allclose(_hf_logits(reloaded, TOKENS), _hf_logits(model, TOKENS), atol=1e-5, rtol=0)
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


def test_sharded_checkpoint_with_an_index_loads(tmp_path):
    model = _random_hf("llama_gqa_untied")
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    assert len(list(tmp_path.glob("*.safetensors"))) > 2
    logits = hf.load(tmp_path)(jnp.asarray(TOKENS))
    np.testing.assert_allclose(np.asarray(logits), _hf_logits(model, TOKENS), atol=1e-4, rtol=0)


def test_bfloat16_checkpoint_gives_float32_params_of_the_same_values(tmp_path):
    model = _random_hf("qwen2").to(torch.bfloat16)
    model.save_pretrained(tmp_path)
    cfg, params = hf.load_params(tmp_path)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
    wq = model.model.layers[1].self_attn.q_proj.weight.detach().float().numpy()
    np.testing.assert_array_equal(params["layers"]["wq"][1], wq.T.reshape(32, 4, 8))
    np.testing.assert_array_equal(params["embed"], model.model.embed_tokens.weight.detach().float().numpy())


def test_llama3_frequencies_are_those_of_transformers():
    config = transformers.LlamaConfig(**SHAPE, max_position_embeddings=128, rope_parameters=LLAMA3_ROPE)
    theirs, _ = transformers.modeling_rope_utils.ROPE_INIT_FUNCTIONS["llama3"](config)
    ours = layers.llama3_inv_freq(8, 10_000.0, 8.0, 1.0, 4.0, 64)
    np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-6)
    default = 10_000.0 ** (-np.arange(4) / 4)
    assert ours[0] == pytest.approx(default[0]) and ours[3] == pytest.approx(default[3] / 8)
    assert default[1] / 8 < ours[1] < default[1]  # the medium band is interpolated


def test_load_params_accepts_a_config_with_other_compute_options(pair):
    _, model, folder, ours = pair
    cfg = dataclasses.replace(ours.config, scan_layers=False, remat="full")
    got, params = hf.load_params(folder, cfg)
    assert got == cfg
    logits = models.apply(models.split(models.create(cfg))[0], params, jnp.asarray(TOKENS))
    np.testing.assert_allclose(np.asarray(logits), _hf_logits(model, TOKENS), atol=1e-4, rtol=0)


# Errors, one sentence each.


def _folder(tmp_path, family="llama_gqa_untied"):
    _random_hf(family).save_pretrained(tmp_path)
    return tmp_path


def _edit_config(folder, **changes):
    path = folder / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_a_folder_without_config_json_is_refused(tmp_path):
    with pytest.raises(ValueError, match="has no config.json"):
        hf.load(tmp_path)


def test_an_unsupported_model_type_is_named(tmp_path):
    folder = _folder(tmp_path)
    _edit_config(folder, model_type="mamba")
    with pytest.raises(ValueError, match="model_type 'mamba' is not supported; accepted: .*'t5'"):
        hf.load(folder)


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
    folder = _folder(tmp_path, family)
    _edit_config(folder, **changes)
    with pytest.raises(ValueError, match="option " + message + ".*not supported"):
        hf.load(folder)


def test_a_missing_tensor_is_named(tmp_path):
    folder = _folder(tmp_path)
    tensors = load_file(folder / "model.safetensors")
    del tensors["model.layers.1.mlp.up_proj.weight"]
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="no tensor 'model.layers.1.mlp.up_proj.weight'"):
        hf.load(folder)


def test_a_tensor_of_the_wrong_shape_is_named(tmp_path):
    folder = _folder(tmp_path)
    tensors = load_file(folder / "model.safetensors")
    tensors["model.layers.0.self_attn.k_proj.weight"] = np.zeros((8, 32), np.float32)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(
        ValueError, match=r"'model.layers.0.self_attn.k_proj.weight' has shape \(8, 32\), expected"
    ):
        hf.load(folder)


def test_an_unexpected_tensor_is_named(tmp_path):
    folder = _folder(tmp_path)
    tensors = load_file(folder / "model.safetensors")
    tensors["model.layers.0.self_attn.q_norm.weight"] = np.ones(8, np.float32)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="q_norm.weight.*no place"):
        hf.load(folder)


def test_save_refuses_what_the_family_cannot_express(tmp_path):
    cfg = models.get_config("tiny", qkv_bias=True, mlp_bias=True)
    _, params = models.split(models.create(cfg))
    with pytest.raises(ValueError, match=r"options \['mlp_bias'\].*model_type 'qwen2'"):
        hf.save(params, cfg, tmp_path, model_type="qwen2")
    with pytest.raises(ValueError, match="model_type 'gpt2'"):
        hf.save(params, cfg, tmp_path, model_type="gpt2")


def test_a_jirl_preset_saves_as_llama_and_loads_back(tmp_path):
    cfg = models.get_config("tiny")
    model = models.create(cfg, seed=3)
    hf.save(models.split(model)[1], cfg, tmp_path)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, local_files_only=True).eval()
    tokens = np.random.default_rng(5).integers(0, cfg.vocab_size, (2, 10))
    np.testing.assert_allclose(np.asarray(model(jnp.asarray(tokens))), _hf_logits(theirs, tokens), atol=1e-4)
