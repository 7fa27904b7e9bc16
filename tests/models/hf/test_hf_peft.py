"""LoRA runs exported for transformers: merged weights, and a PEFT adapter folder that `peft` applies to
the base with jirl's logits (jirl.models.hf.peft, `jirl export [--adapter]`)."""

import json
import os

import numpy as np
import pytest
import transformers
from hf_models import SHAPE, hf_logits

from jirl import cli, models
from jirl.train.workdir import load_trained

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
JSONL = os.path.join(ROOT, "experiments", "jsonl.py")
FIXTURES = os.path.join(ROOT, "tests", "data", "fixtures")
TARGETS = "('q_proj','k_proj','v_proj','o_proj','gate_proj','up_proj','down_proj')"


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """(base folder, workdir): a tiny random Llama (byte vocabulary) and 2 MLE steps of rank-4 LoRA on it."""
    import torch

    root = tmp_path_factory.mktemp("lora")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        **dict(SHAPE, vocab_size=259), num_key_value_heads=2, max_position_embeddings=256
    )
    transformers.LlamaForCausalLM(config).save_pretrained(root / "base")
    workdir = root / "run"
    code = cli.main([
        "train", f"--config={JSONL}:mle", f"--workdir={workdir}", "--progress=false",
        f"--config.task.data_dir={root / 'data'}", f"--config.task.source={FIXTURES}/jsonl/qa.jsonl",
        "--config.task.config=qa", "--config.task.prompt_field=instruction",
        "--config.task.response_field=meta.answer", "--config.task.seq_len=48", "--config.task.pack=false",
        "--config.train.batch_size=4", "--config.train.steps=2", "--config.train.warmup_steps=0",
        "--config.train.learning_rate=0.05", "--config.eval.every=0",
        f"--config.model.init_from={root / 'base'}",
        "--config.model.lora.rank=4", "--config.model.lora.alpha=8", f"--config.model.lora.targets={TARGETS}",
    ])  # fmt: skip
    assert code == 0
    return root / "base", workdir


def _jirl_logits(trained, tokens):
    return np.asarray(models.apply(trained.graphdef, trained.params, tokens))


def test_merged_export_loads_in_transformers_with_the_adapted_logits(lora_run, tmp_path, capsys):
    base, workdir = lora_run
    trained = load_trained(str(workdir))
    tokens = np.random.default_rng(0).integers(0, 259, (2, 10))
    ours = _jirl_logits(trained, tokens)
    original = hf_logits(transformers.AutoModelForCausalLM.from_pretrained(base).eval(), tokens)
    assert np.abs(ours - original).max() > 1e-3  # the adapters moved the model
    assert cli.main(["export", f"--workdir={workdir}", f"--out={tmp_path / 'merged'}"]) == 0
    merged = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path / "merged", local_files_only=True
    ).eval()
    np.testing.assert_allclose(hf_logits(merged, tokens), ours, atol=2e-5)


def test_adapter_export_is_a_peft_folder_with_the_adapted_logits(lora_run, tmp_path, capsys):
    import peft

    base, workdir = lora_run
    out = tmp_path / "adapter"
    assert cli.main(["export", f"--workdir={workdir}", f"--out={out}", "--adapter"]) == 0
    assert "LoRA adapters" in capsys.readouterr().out
    assert sorted(os.listdir(out)) == ["adapter_config.json", "adapter_model.safetensors"]
    config = json.loads((out / "adapter_config.json").read_text())
    assert (config["peft_type"], config["r"], config["lora_alpha"], config["task_type"]) == (
        "LORA",
        4,
        8.0,
        "CAUSAL_LM",
    )
    assert config["base_model_name_or_path"] == str(base)
    assert sorted(config["target_modules"]) == sorted(eval(TARGETS))
    model = peft.PeftModel.from_pretrained(
        transformers.AutoModelForCausalLM.from_pretrained(base), out
    ).eval()
    tokens = np.random.default_rng(1).integers(0, 259, (2, 10))
    np.testing.assert_allclose(
        hf_logits(model, tokens), _jirl_logits(load_trained(str(workdir)), tokens), atol=2e-5
    )
