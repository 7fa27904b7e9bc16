"""Shape-only presets of public checkpoints: their parameter counts are those of transformers' models."""

import pytest
import torch
import transformers

from jirl import models
from jirl.models import hf

PUBLIC = [
    "llama3_8b",
    "llama3_2_1b",
    "gemma2_2b",
    "gemma3_1b",
    "gemma3_4b",
    "qwen2_7b",
    "qwen3_0_6b",
    "qwen3_8b",
    "gpt2_124m",
    "t5_base",
    "t5_large",
    "t5_xl",
]

# The config.json of the public checkpoints (as published on the Hugging Face Hub), shape keys only.
_QWEN3 = dict(
    model_type="qwen3",
    head_dim=128,
    num_key_value_heads=8,
    vocab_size=151_936,
    max_position_embeddings=40_960,
    rope_theta=1_000_000.0,
    rms_norm_eps=1e-6,
    rope_scaling=None,
    attention_bias=False,
    use_sliding_window=False,
    hidden_act="silu",
)
HUB_CONFIGS = {
    "qwen3_0_6b": dict(_QWEN3, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                       num_attention_heads=16, tie_word_embeddings=True),
    "qwen3_8b": dict(_QWEN3, hidden_size=4096, intermediate_size=12_288, num_hidden_layers=36,
                     num_attention_heads=32, tie_word_embeddings=False),
    "llama3_2_1b": dict(
        model_type="llama", hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
        num_attention_heads=32, num_key_value_heads=8, head_dim=64, vocab_size=128_256,
        max_position_embeddings=131_072, rope_theta=500_000.0, rms_norm_eps=1e-5, tie_word_embeddings=True,
        attention_bias=False, mlp_bias=False, hidden_act="silu", pretraining_tp=1,
        rope_scaling=dict(rope_type="llama3", factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
                          original_max_position_embeddings=8192),
    ),
    # gemma-3-1b-pt/-it (Gemma3ForCausalLM): the transformers-4 form of the RoPE keys.
    "gemma3_1b": dict(
        model_type="gemma3_text", architectures=["Gemma3ForCausalLM"], hidden_size=1152,
        intermediate_size=6912, num_hidden_layers=26, num_attention_heads=4, num_key_value_heads=1,
        head_dim=256, vocab_size=262_144, max_position_embeddings=32_768, query_pre_attn_scalar=256,
        rms_norm_eps=1e-6, rope_theta=1_000_000, rope_local_base_freq=10_000, rope_scaling=None,
        sliding_window=512, sliding_window_pattern=6, hidden_activation="gelu_pytorch_tanh",
        attention_bias=False, attn_logit_softcapping=None, final_logit_softcapping=None,
        cache_implementation="hybrid",
    ),
    # gemma-3-4b-pt/-it (Gemma3ForConditionalGeneration): its text_config names a few keys and leaves
    # the rest (heads, head_dim, vocabulary, RoPE bases, window pattern) to Gemma3TextConfig's defaults.
    "gemma3_4b": dict(
        model_type="gemma3_text", hidden_size=2560, intermediate_size=10_240, num_hidden_layers=34,
        rope_scaling=dict(factor=8.0, rope_type="linear"), sliding_window=1024,
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", PUBLIC + ["t5_tiny", "llama_1b", "llama_7b"])
def test_parameter_count_matches_the_transformers_model_of_the_same_config(name):
    cfg = models.get_config(name)
    hf_config = transformers.AutoConfig.for_model(**hf.config_to_hf(cfg))
    auto = transformers.AutoModelForSeq2SeqLM if cfg.is_encoder_decoder else transformers.AutoModelForCausalLM
    with torch.device("meta"):  # shapes only, no memory
        model = auto.from_config(hf_config)
    count = sum(p.numel() for p in model.parameters())
    if cfg.is_encoder_decoder and not cfg.tie_embeddings:
        count += cfg.vocab_size * cfg.embed_dim  # transformers 5 builds T5 with a tied head; v1.1 has its own
    assert cfg.num_params() == count


@pytest.mark.parametrize("name", sorted(HUB_CONFIGS))
def test_a_preset_is_the_config_of_its_public_checkpoint(name):
    """The preset is what jirl reads from the checkpoint's config.json, and transformers builds a model of
    that config.json with the preset's parameter count."""
    hub = HUB_CONFIGS[name]
    assert hf.config_from_hf(hub) == models.get_config(name)
    hf_config = transformers.AutoConfig.for_model(**hub)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(hf_config)
    assert models.get_config(name).num_params() == sum(p.numel() for p in model.parameters())


def test_published_sizes():
    sizes = {name: models.get_config(name).num_params() / 1e9 for name in PUBLIC}
    assert sizes["llama3_8b"] == pytest.approx(8.03, abs=0.01)
    assert sizes["gemma2_2b"] == pytest.approx(2.61, abs=0.01)
    assert sizes["gemma3_1b"] == pytest.approx(1.00, abs=0.01)
    assert sizes["gemma3_4b"] == pytest.approx(3.88, abs=0.01)  # the text model: 4.3B with the vision tower
    assert sizes["qwen2_7b"] == pytest.approx(7.62, abs=0.01)
    assert sizes["qwen3_0_6b"] == pytest.approx(0.596, abs=0.001)  # 0.44B without the embeddings
    assert sizes["qwen3_8b"] == pytest.approx(8.19, abs=0.01)
    assert sizes["llama3_2_1b"] == pytest.approx(1.24, abs=0.01)
    assert models.get_config("gpt2_124m").num_params() == 124_439_808
    assert sizes["t5_base"] == pytest.approx(0.248, abs=0.001)
    assert sizes["t5_large"] == pytest.approx(0.783, abs=0.001)
    assert sizes["t5_xl"] == pytest.approx(2.85, abs=0.01)
