"""Shape-only presets of public checkpoints: their parameter counts are those of transformers' models."""

import pytest
import torch
import transformers

from jirl import models
from jirl.models import hf

PUBLIC = ["llama3_8b", "gemma2_2b", "qwen2_7b", "gpt2_124m", "t5_base", "t5_large", "t5_xl"]


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


def test_published_sizes():
    sizes = {name: models.get_config(name).num_params() / 1e9 for name in PUBLIC}
    assert sizes["llama3_8b"] == pytest.approx(8.03, abs=0.01)
    assert sizes["gemma2_2b"] == pytest.approx(2.61, abs=0.01)
    assert sizes["qwen2_7b"] == pytest.approx(7.62, abs=0.01)
    assert models.get_config("gpt2_124m").num_params() == 124_439_808
    assert sizes["t5_base"] == pytest.approx(0.248, abs=0.001)
    assert sizes["t5_large"] == pytest.approx(0.783, abs=0.001)
    assert sizes["t5_xl"] == pytest.approx(2.85, abs=0.01)
