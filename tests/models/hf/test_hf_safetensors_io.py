"""jirl.models.hf.safetensors_io: config.json, sharded folders, bfloat16 read as float32."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from hf_models import TOKENS, hf_logits, random_hf
from safetensors.torch import save_file

from jirl.errors import ConfigError
from jirl.models import hf
from jirl.models.hf import safetensors_io


def test_sharded_checkpoint_with_an_index_loads(tmp_path):
    model = random_hf("llama_gqa_untied")
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    assert len(list(tmp_path.glob("*.safetensors"))) > 2
    logits = hf.load(tmp_path)(jnp.asarray(TOKENS))
    np.testing.assert_allclose(np.asarray(logits), hf_logits(model, TOKENS), atol=1e-4, rtol=0)


def test_bfloat16_checkpoint_gives_float32_params_of_the_same_values(tmp_path):
    model = random_hf("qwen2").to(torch.bfloat16)
    model.save_pretrained(tmp_path)
    cfg, params = hf.load_params(tmp_path)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
    wq = model.model.layers[1].self_attn.q_proj.weight.detach().float().numpy()
    np.testing.assert_array_equal(params["layers"]["wq"][1], wq.T.reshape(32, 4, 8))
    np.testing.assert_array_equal(params["embed"], model.model.embed_tokens.weight.detach().float().numpy())


def test_read_bfloat16_is_exact_for_every_tensor_of_a_file(tmp_path):
    tensors = {"a": torch.randn(3, 5), "b": torch.randn(7), "c": torch.tensor([1e30, -0.0, 2.5])}
    save_file({k: v.to(torch.bfloat16) for k, v in tensors.items()}, tmp_path / "x.safetensors")
    for name, value in tensors.items():
        got = safetensors_io.read_bfloat16(tmp_path / "x.safetensors", name)
        np.testing.assert_array_equal(got, value.to(torch.bfloat16).float().numpy())


def test_a_folder_without_config_json_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="has no config.json"):
        hf.load(tmp_path)


def test_a_folder_without_safetensors_is_refused(tmp_path):
    random_hf("gpt2").config.save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match=r"has no \*.safetensors file"):
        hf.load(tmp_path)
