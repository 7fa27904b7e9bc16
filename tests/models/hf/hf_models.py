"""Tiny random transformers models of each decoder family, shared by the tests of jirl.models.hf."""

import numpy as np
import torch
import transformers

SHAPE = dict(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
LLAMA3_ROPE = dict(
    rope_type="llama3",
    rope_theta=10_000.0,
    factor=8.0,
    low_freq_factor=1.0,
    high_freq_factor=4.0,
    original_max_position_embeddings=64,  # with head_dim 8: one high, one medium, two low frequencies
)

MODELS = {
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
    # Llama 3.2: tied embeddings with Llama 3 RoPE scaling, nothing else (as the 1B/3B checkpoints).
    "llama3_2": lambda: transformers.LlamaForCausalLM(
        transformers.LlamaConfig(
            **SHAPE,
            num_key_value_heads=2,
            max_position_embeddings=128,
            rms_norm_eps=1e-5,
            # wavelengths 6, 167, 4440, 1e5 against 512 / 4 and 512: high, medium, low, low bands
            rope_parameters=dict(
                LLAMA3_ROPE, rope_theta=500_000.0, factor=32.0, original_max_position_embeddings=512
            ),
            tie_word_embeddings=True,
        )
    ),
    "qwen2": lambda: transformers.Qwen2ForCausalLM(
        transformers.Qwen2Config(**SHAPE, num_key_value_heads=2, max_position_embeddings=128)
    ),
    # Qwen3: q/k norms, explicit head_dim (not hidden / heads, as Qwen3-0.6B's 128 for 1024 / 16).
    "qwen3_untied": lambda: transformers.Qwen3ForCausalLM(
        transformers.Qwen3Config(
            **SHAPE, num_key_value_heads=2, head_dim=16, max_position_embeddings=128, rope_theta=1e6
        )
    ),
    "qwen3_tied": lambda: transformers.Qwen3ForCausalLM(
        transformers.Qwen3Config(
            **SHAPE, num_key_value_heads=1, head_dim=8, max_position_embeddings=128, tie_word_embeddings=True
        )
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
    # Gemma 3: 5 local layers to 1 global (layer 5; layer 6 local again), a window of 3 < the 12 test
    # tokens, q/k norms with (1 + w), tied; RoPE as 4B's: linear scaling on the global layers only, the
    # local layers' own base (100 here, 10k in the checkpoints); a query scale other than head_dim (as
    # 27B's) and a final soft-cap (None in the checkpoints; transformers applies one when set).
    "gemma3": lambda: transformers.Gemma3ForCausalLM(
        transformers.Gemma3TextConfig(
            **dict(SHAPE, num_hidden_layers=7),
            num_key_value_heads=2,
            head_dim=8,
            max_position_embeddings=128,
            query_pre_attn_scalar=16,
            sliding_window=3,
            rope_theta=10_000.0,
            rope_local_base_freq=100.0,
            rope_scaling={"rope_type": "linear", "factor": 4.0},
            final_logit_softcapping=3.0,
            attn_implementation="eager",
        )
    ),
    "gpt2": lambda: transformers.GPT2LMHeadModel(
        transformers.GPT2Config(vocab_size=97, n_embd=32, n_layer=2, n_head=4, n_positions=128)
    ),
}

TOKENS = np.random.default_rng(0).integers(0, 97, (2, 12))


def random_hf(name: str) -> torch.nn.Module:
    """A tiny HF model in eval mode with every parameter perturbed (so biases and norms matter)."""
    return perturbed(MODELS[name])


def perturbed(build) -> torch.nn.Module:
    """The model `build()` makes (seed 0), in eval mode, with every parameter perturbed."""
    torch.manual_seed(0)
    model = build().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model


def hf_logits(model: torch.nn.Module, tokens_BT: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.as_tensor(tokens_BT)).logits.float().numpy()


def saved_folder(tmp_path, name: str = "llama_gqa_untied"):
    """`tmp_path` holding a saved tiny random model `name`."""
    random_hf(name).save_pretrained(tmp_path)
    return tmp_path
