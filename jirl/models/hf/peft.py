"""LoRA adapters out as a PEFT adapter folder: adapter_config.json and adapter_model.safetensors.

    save_adapter(adapters, cfg, lora, "out", base_model="path/of/the/base")
    # PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), "out")

PEFT's LoRA layer on a torch Linear W [out, in] adds (alpha / r) B A x with lora_A.weight [r, in] and
lora_B.weight [out, r]; jirl's adapter of W [in..., out...] is A [in..., r], B [r, out...], so PEFT's
A is jirl's A flattened to [in, r] and transposed, and PEFT's B is jirl's B flattened to [r, out] and
transposed (the family's "linear" layout, as the weights themselves). Tensor names are the family's
module names under `base_model.model.`, as PEFT saves them; over a multimodal Gemma 3 base
(model_type "gemma3", Gemma3ForConditionalGeneration) the text model's modules are under
`model.language_model.` instead of `model.`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file

from jirl.errors import ConfigError
from jirl.models import lora as lora_lib
from jirl.models.config import ModelConfig
from jirl.models.hf import families

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def module_names(cfg: ModelConfig, model_type: str | None = None) -> dict[str, str]:
    """jirl weight name -> the family's module path of layer {i} (wq: model.layers.{i}.self_attn.q_proj)."""
    family = families.get(model_type or families.family_of(cfg))
    out = {}
    for hf_name, ours, layout, *_ in family.table:
        if isinstance(ours, str) and layout == "linear" and "{i}" in hf_name and hf_name.endswith(".weight"):
            out[ours] = hf_name[: -len(".weight")]
    return out


def base_model_type(base_model: str | None) -> str | None:
    """The model_type in the base folder's config.json (None when there is no such file)."""
    path = Path(base_model or "") / "config.json"
    if not base_model or not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8")).get("model_type")


def _module_path(module: str, base_type: str | None) -> str:
    """Where the base model holds a text-model module: Gemma3ForConditionalGeneration (model_type
    gemma3) keeps its language model at model.language_model.* (transformers 5)."""
    if base_type == "gemma3" and module.startswith("model."):
        return "model.language_model." + module.removeprefix("model.")
    return module


def _targets(lora: lora_lib.LoraConfig, base_type: str | None) -> list[str] | str:
    """PEFT's target_modules: the module names, or over a multimodal Gemma 3 a regex (PEFT full-matches
    a string) that keeps the vision tower's own q_proj / v_proj out."""
    if base_type == "gemma3":
        return r"model\.language_model\..*\.(" + "|".join(sorted(lora.targets)) + ")"
    return sorted(lora.targets)


def adapter_config(
    lora: lora_lib.LoraConfig, base_model: str | None, base_type: str | None = None
) -> dict[str, Any]:
    """PEFT's LoraConfig fields for these adapters (a causal LM, no bias, no other trained modules)."""
    return dict(
        peft_type="LORA",
        task_type="CAUSAL_LM",
        r=lora.rank,
        lora_alpha=float(lora.alpha),
        lora_dropout=float(lora.dropout),
        target_modules=_targets(lora, base_type),
        base_model_name_or_path=base_model,
        bias="none",
        fan_in_fan_out=False,
        inference_mode=True,
        init_lora_weights=True,
        modules_to_save=None,
        use_rslora=False,
        use_dora=False,
    )


def save_adapter(
    adapters: dict[str, Any],
    cfg: ModelConfig,
    lora: lora_lib.LoraConfig,
    path: str | Path,
    base_model: str | None = None,
    model_type: str | None = None,
) -> None:
    """Writes the PEFT adapter folder of `adapters` (jirl's {"layers": {weight: {"a", "b"}}}) at `path`.

    base_model: the Hugging Face folder the adapters apply to (written into adapter_config.json, and
    read for its model_type: a multimodal Gemma 3 names its modules differently)."""
    base_type = base_model_type(base_model)
    modules = module_names(cfg, model_type)
    missing = [name for name in adapters["layers"] if name not in modules]
    if missing:
        raise ConfigError(f"LoRA weights {missing} have no Hugging Face module in this model's family.")
    tensors: dict[str, np.ndarray] = {}
    for name, adapter in adapters["layers"].items():
        a, b = np.asarray(adapter["a"], np.float32), np.asarray(adapter["b"], np.float32)
        r = lora.rank
        for i in range(cfg.num_layers):
            prefix = "base_model.model." + _module_path(modules[name].format(i=i), base_type)
            tensors[prefix + ".lora_A.weight"] = np.ascontiguousarray(a[i].reshape(-1, r).T)
            tensors[prefix + ".lora_B.weight"] = np.ascontiguousarray(b[i].reshape(r, -1).T)
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    config = adapter_config(lora, base_model, base_type)
    (folder / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
