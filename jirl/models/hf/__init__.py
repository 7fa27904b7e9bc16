"""Hugging Face checkpoints in and out: Llama 2/3, Qwen2/3, Gemma 1/2/3 (text) and GPT-2 as jirl decoders, T5
(v1.1 / Flan-T5, and the original layout) as jirl's encoder-decoder.

model = jirl.models.hf.load("folder")                 # config.json + *.safetensors (sharded or not)
logits_BTV = model(tokens_BT)                         # T5: model(encoder_tokens_BS, decoder_tokens_BT)
cfg, params = jirl.models.hf.load_params("folder")    # params: the tree of jirl.models.split
jirl.models.hf.save(params, cfg, "out")               # config.json + model.safetensors for transformers

Each family is a configuration of jirl's own decoder (`config_from_hf`) and a table of tensors
(HF name -> jirl name, layout), held as one `Family` record per model_type. Tensors are read one
at a time with safetensors (no torch) and stored as float32. A Hugging Face option that jirl does
not implement is refused by name. Dropout rates are accepted and unused: jirl's decoder has no
dropout.

Modules: family (the record), llama / gpt2 / t5 (the families), families (the registry and
configs in and out), safetensors_io (folder files), layouts (one tensor), checkpoint (load, save).
"""

from __future__ import annotations

from jirl.models.hf.checkpoint import load, load_params, save
from jirl.models.hf.families import (
    ARCHITECTURES,
    FAMILIES,
    REGISTRY,
    TABLES,
    config_from_hf,
    config_to_hf,
    family_of,
)
from jirl.models.hf.family import Family
from jirl.models.hf.gemma import GEMMA2_TABLE
from jirl.models.hf.gpt2 import GPT2_TABLE
from jirl.models.hf.llama import LLAMA_TABLE
from jirl.models.hf.safetensors_io import read_config
from jirl.models.hf.t5 import T5_TABLE

__all__ = [
    "ARCHITECTURES",
    "FAMILIES",
    "GEMMA2_TABLE",
    "GPT2_TABLE",
    "LLAMA_TABLE",
    "REGISTRY",
    "T5_TABLE",
    "TABLES",
    "Family",
    "config_from_hf",
    "config_to_hf",
    "family_of",
    "load",
    "load_params",
    "read_config",
    "save",
]
