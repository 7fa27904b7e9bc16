"""Gemma 3 (text) checkpoints (the parity of logits, export and decoding is test_hf_checkpoint.py's, over
hf_models.MODELS): gemma-3-1b's config.json as published loads as is; both RoPEs and the 5:1 window
pattern read from either form of config.json; linear RoPE scaling; the multimodal Gemma 3 read as its
text model; what jirl does not implement is refused by name."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
import transformers
from hf_models import SHAPE, TOKENS, hf_logits, perturbed
from safetensors.numpy import load_file, save_file

from jirl import models
from jirl.errors import ConfigError
from jirl.models import hf, layers

# gemma-3-1b-pt's config.json (transformers 4 keys), shrunk: 6 layers of width 32, head_dim 8, a
# window of 4 (512 in the checkpoint) under the 12 test tokens, a vocabulary of 97; the rest as published.
GEMMA3_1B_SHRUNK = dict(
    architectures=["Gemma3ForCausalLM"],
    attention_bias=False,
    attention_dropout=0.0,
    attn_logit_softcapping=None,
    bos_token_id=2,
    cache_implementation="hybrid",
    eos_token_id=[1, 106],
    final_logit_softcapping=None,
    head_dim=8,
    hidden_activation="gelu_pytorch_tanh",
    hidden_size=32,
    initializer_range=0.02,
    intermediate_size=64,
    max_position_embeddings=128,
    model_type="gemma3_text",
    num_attention_heads=4,
    num_hidden_layers=6,
    num_key_value_heads=1,
    pad_token_id=0,
    query_pre_attn_scalar=8,
    rms_norm_eps=1e-06,
    rope_local_base_freq=10000,
    rope_scaling=None,
    rope_theta=1000000,
    sliding_window=4,
    sliding_window_pattern=6,
    torch_dtype="float32",
    use_cache=True,
    vocab_size=97,
)


def test_gemma3_1b_config_json_as_published_loads_as_is(tmp_path):
    config = transformers.AutoConfig.for_model(**GEMMA3_1B_SHRUNK, attn_implementation="eager")
    model = perturbed(lambda: transformers.Gemma3ForCausalLM(config))
    model.save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(GEMMA3_1B_SHRUNK))  # not transformers 5's rewrite
    ours = hf.load(tmp_path)
    cfg = ours.config
    assert (cfg.sliding_window, cfg.sliding_pattern, cfg.query_scale) == (4, 6, 0.0)  # 0: head_dim
    assert (cfg.rope_theta, cfg.rope_local_theta, cfg.rope_scaling) == (1e6, 1e4, "none")
    assert cfg.qk_norm and cfg.post_norms and cfg.tie_embeddings and cfg.norm == "rms_plus_one"
    assert [cfg.is_global_layer(i) for i in range(6)] == [t == "full_attention" for t in config.layer_types]
    assert hf.family_of(cfg) == "gemma3_text"
    np.testing.assert_allclose(
        np.asarray(ours(jnp.asarray(TOKENS))), hf_logits(model, TOKENS), atol=1e-4, rtol=0
    )
    out = hf.config_to_hf(cfg)  # transformers 5's form
    assert out["layer_types"] == config.layer_types
    assert out["rope_parameters"] == {
        "full_attention": {"rope_type": "default", "rope_theta": 1e6},
        "sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
    }


def test_the_window_pattern_reads_from_layer_types_or_sliding_window_pattern():
    base = dict(GEMMA3_1B_SHRUNK, num_hidden_layers=8)
    every_third = ["sliding_attention", "sliding_attention", "full_attention"] * 2 + ["sliding_attention"] * 2
    for hub in (dict(base, sliding_window_pattern=3), dict(base, layer_types=every_third)):
        cfg = hf.config_from_hf(hub)
        assert cfg.sliding_pattern == 3 and [cfg.is_global_layer(i) for i in range(8)] == [
            t == "full_attention" for t in every_third
        ]
    # Fewer layers than the pattern: every layer is local (transformers' default pattern, 6).
    cfg = hf.config_from_hf(dict(base, num_hidden_layers=2, sliding_window_pattern=None))
    assert not cfg.is_global_layer(0) and not cfg.is_global_layer(1)
    assert hf.config_to_hf(cfg)["layer_types"] == ["sliding_attention"] * 2


def test_one_rope_for_every_layer_round_trips():
    """Equal local and global RoPE parameters are one RoPE (rope_local_theta 0), written as equal again."""
    same = {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}
    hub = dict(GEMMA3_1B_SHRUNK, rope_parameters={"full_attention": same, "sliding_attention": same})
    cfg = hf.config_from_hf(hub)
    assert (cfg.rope_local_theta, cfg.rope_scaling, cfg.rope_factor) == (0.0, "linear", 2.0)
    rope = hf.config_to_hf(cfg)["rope_parameters"]
    assert rope["full_attention"] == rope["sliding_attention"] == same


def test_linear_rope_scaling_is_that_of_transformers_for_llama_too(tmp_path):
    rope = dict(rope_type="linear", factor=4.0, rope_theta=10_000.0)
    config = transformers.LlamaConfig(**SHAPE, max_position_embeddings=128, rope_parameters=rope)
    theirs, _ = transformers.modeling_rope_utils.ROPE_INIT_FUNCTIONS["linear"](config)
    np.testing.assert_array_equal(layers.default_inv_freq(8, 10_000.0) / np.float32(4.0), theirs.numpy())
    model = perturbed(lambda: transformers.LlamaForCausalLM(config))
    model.save_pretrained(tmp_path)
    ours = hf.load(tmp_path)
    assert (ours.config.rope_scaling, ours.config.rope_factor, hf.family_of(ours.config)) == (
        "linear",
        4.0,
        "llama",
    )
    assert hf.config_to_hf(ours.config)["rope_parameters"] == rope
    np.testing.assert_allclose(
        np.asarray(ours(jnp.asarray(TOKENS))), hf_logits(model, TOKENS), atol=1e-4, rtol=0
    )


def test_a_gemma3_config_is_gemma3_text_and_no_other_family():
    cfg = models.get_config("gemma3_1b")
    with pytest.raises(ConfigError, match=r"options \['qk_norm', 'rope_local_theta'\].*'gemma2'"):
        hf.config_to_hf(cfg, "gemma2")
    # transformers' Gemma 3 has no attention soft-cap (and Gemma 3 has none).
    with pytest.raises(ConfigError, match=r"options \['attn_softcap'\].*'gemma3_text'"):
        hf.config_to_hf(models.get_config("gemma3_1b", attn_softcap=50.0))
    with pytest.raises(ConfigError, match=r"options \['post_norms'\].*'gemma3_text'"):
        hf.config_to_hf(models.get_config("gemma3_1b", post_norms=False))


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(attn_logit_softcapping=50.0), "attn_logit_softcapping=50.0"),
        (dict(use_bidirectional_attention=True), "use_bidirectional_attention=True"),
        (dict(rope_scaling=dict(rope_type="yarn", factor=8.0)), "rope_type='yarn'"),
        (
            dict(
                rope_parameters=dict(sliding_attention=dict(rope_type="linear", factor=2.0, rope_theta=1e4))
            ),
            r"rope_parameters\['sliding_attention'\]=",
        ),
        (dict(rope_parameters=dict(rope_type="default", rope_theta=1e6)), "rope_parameters="),
        (dict(layer_types=["full_attention"] + ["sliding_attention"] * 5), "layer_types="),
        (dict(hidden_activation="relu"), "hidden_activation='relu'"),
    ],
)
def test_gemma3_options_jirl_lacks_are_refused_by_name(changes, message):
    with pytest.raises(ConfigError, match="option " + message + ".*not supported") as error:
        hf.config_from_hf(dict(GEMMA3_1B_SHRUNK, **changes))
    assert "\n" not in str(error.value)


def _multimodal_gemma3():
    """A tiny Gemma3ForConditionalGeneration: the shrunk gemma-3-1b text model and a one-layer SigLIP."""
    text = {k: v for k, v in GEMMA3_1B_SHRUNK.items() if k not in ("architectures", "torch_dtype")}
    vision = dict(model_type="siglip_vision_model", hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                  num_attention_heads=2, image_size=28, patch_size=14)  # fmt: skip
    config = transformers.Gemma3Config(
        text_config=text, vision_config=vision, mm_tokens_per_image=4, image_token_index=96,
        boi_token_index=94, eoi_token_index=95, attn_implementation="eager",
    )  # fmt: skip
    return perturbed(lambda: transformers.Gemma3ForConditionalGeneration(config))


def test_the_multimodal_gemma3_loads_as_its_text_model(tmp_path):
    """model_type gemma3: text_config and the language model's tensors; the vision tower is skipped;
    the text logits are transformers'; it is written back as gemma3_text."""
    model = _multimodal_gemma3()
    model.save_pretrained(tmp_path)  # tensors named language_model.model.* (as the published files)
    ours = hf.load(tmp_path)
    assert ours.config == hf.config_from_hf(GEMMA3_1B_SHRUNK) and hf.family_of(ours.config) == "gemma3_text"
    theirs = hf_logits(model, TOKENS)
    np.testing.assert_allclose(np.asarray(ours(jnp.asarray(TOKENS))), theirs, atol=1e-4, rtol=0)
    # transformers 5's module names (model.language_model.*) are found too.
    tensors = load_file(tmp_path / "model.safetensors")
    renamed = {k.replace("language_model.model.", "model.language_model."): v for k, v in tensors.items()}
    save_file(renamed, tmp_path / "model.safetensors", metadata={"format": "pt"})
    _, params = hf.load_params(tmp_path)
    np.testing.assert_array_equal(params["embed"], tensors["language_model.model.embed_tokens.weight"])
    with pytest.raises(ConfigError, match="written as Hugging Face model_type 'gemma3_text'"):
        hf.config_to_hf(ours.config, "gemma3")


def test_an_adapter_over_the_multimodal_gemma3_loads_in_peft_with_jirls_logits(tmp_path):
    """PEFT finds the adapters under Gemma3ForConditionalGeneration's model.language_model.* modules:
    the adapted logits are jirl's with W + (alpha / r) A B merged."""
    import jax
    import peft

    from jirl.models import lora as lora_lib
    from jirl.models.hf import peft as jirl_peft

    base = tmp_path / "base"
    _multimodal_gemma3().save_pretrained(base)
    ours = hf.load(base)
    cfg = ours.config
    lora = lora_lib.LoraConfig(rank=2, alpha=4.0, targets=("q_proj", "v_proj", "down_proj"))
    adapters = lora_lib.init_adapters(cfg, lora, seed=0)
    rng = np.random.default_rng(0)
    for adapter in adapters["layers"].values():  # B = 0 at init: make the adapters do something
        adapter["b"] = jnp.asarray(rng.normal(0, 0.3, adapter["b"].shape), jnp.float32)
    jirl_peft.save_adapter(adapters, cfg, lora, tmp_path / "adapter", base_model=str(base))
    model = peft.PeftModel.from_pretrained(
        transformers.AutoModelForCausalLM.from_pretrained(base), tmp_path / "adapter"
    ).eval()
    graphdef, params = models.split(ours)
    merged = lora_lib.merge(jax.device_get(params), adapters, lora)
    expected = np.asarray(models.apply(graphdef, merged, jnp.asarray(TOKENS)))
    np.testing.assert_allclose(hf_logits(model, TOKENS), expected, atol=1e-4, rtol=0)
    with model.disable_adapter():
        assert not np.allclose(hf_logits(model, TOKENS), expected, atol=1e-3)
    adapted = [name for name, _ in model.named_parameters() if "lora_A" in name]
    assert len(adapted) == 3 * cfg.num_layers and all("language_model" in name for name in adapted)
