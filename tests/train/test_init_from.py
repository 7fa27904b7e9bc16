"""Fine-tuning a Hugging Face checkpoint: `model.init_from` starts from its weights, `jirl export` writes
them back in a folder transformers loads."""

import json
import os

import numpy as np
import torch
import transformers
from configs import ARITH

from jirl import cli


def _tiny_llama(folder):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=259, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=False,
    )  # fmt: skip
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(folder)
    return model


def _logits(model, tokens):
    with torch.no_grad():
        return model(torch.as_tensor(tokens)).logits.float().numpy()


def test_train_from_a_checkpoint_and_export_it_back(tiny_data_dir, tmp_path, capsys):
    original = _tiny_llama(tmp_path / "hf")
    (tmp_path / "hf" / "chat_template.jinja").write_text("{{ messages[0]['content'] }}")  # travels along
    (tmp_path / "hf" / "additional_chat_templates").mkdir()  # so do the named ones
    (tmp_path / "hf" / "additional_chat_templates" / "last.jinja").write_text("{{ messages[-1]['content'] }}")
    workdir = tmp_path / "run"
    common = [f"--workdir={workdir}", "--progress=false", f"--config.task.data_dir={tiny_data_dir}",
              "--config.task.config=tiny", "--config.task.seq_len=128", "--config.train.batch_size=2",
              "--config.train.log_every=1", "--config.eval.every=0", "--config.eval.num_examples=2",
              "--config.eval.max_new_tokens=4"]  # fmt: skip
    # Learning rate 0: the weights after training are the checkpoint's, which makes the round trip exact.
    code = cli.main(["train", f"--config={ARITH}:mle", *common, f"--config.model.init_from={tmp_path / 'hf'}",
                     "--config.train.steps=1", "--config.train.learning_rate=0.0"])  # fmt: skip
    assert code == 0
    assert "starting from the pretrained weights" in capsys.readouterr().out
    with open(workdir / "summary.json") as f:
        assert json.load(f)["num_params"] == sum(p.numel() for p in original.parameters())
    assert cli.main(["export", f"--workdir={workdir}", f"--out={tmp_path / 'out'}"]) == 0
    assert "(llama)" in capsys.readouterr().out
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path / "out", local_files_only=True
    ).eval()
    tokens = np.random.default_rng(0).integers(0, 259, (2, 10))
    np.testing.assert_allclose(_logits(reloaded, tokens), _logits(original, tokens), atol=1e-5)
    assert sorted(os.listdir(tmp_path / "out")) == [
        "additional_chat_templates", "chat_template.jinja", "config.json", "model.safetensors"
    ]  # fmt: skip
    assert os.listdir(tmp_path / "out" / "additional_chat_templates") == ["last.jinja"]


def test_export_needs_a_trained_run(tmp_path, capsys):
    assert cli.main(["export", f"--workdir={tmp_path}", f"--out={tmp_path / 'out'}"]) == 2
    assert f"no checkpoint in {tmp_path}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def _tiny_t5(folder):
    torch.manual_seed(0)
    config = transformers.T5Config(
        vocab_size=259, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=2, num_heads=4,
        feed_forward_proj="gated-gelu", decoder_start_token_id=0,
    )  # fmt: skip
    model = transformers.T5ForConditionalGeneration(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(folder)
    return model


def _t5_logits(model, encoder_tokens, decoder_tokens):
    with torch.no_grad():
        encoder, decoder = torch.as_tensor(encoder_tokens), torch.as_tensor(decoder_tokens)
        out = model(input_ids=encoder, decoder_input_ids=decoder)
    return out.logits.float().numpy()


def test_t5_trains_evaluates_and_exports_through_the_cli(tiny_data_dir, tmp_path, capsys):
    """A T5 checkpoint goes through `jirl train` (IQLearn, encoder-decoder batches), `jirl eval` with
    reranking, and `jirl export`; with learning rate 0 the exported weights are the original's."""
    original = _tiny_t5(tmp_path / "hf")
    workdir = tmp_path / "run"
    code = cli.main(["train", f"--config={ARITH}:iqlearn", f"--workdir={workdir}", "--progress=false",
                     f"--config.task.data_dir={tiny_data_dir}", "--config.task.config=tiny",
                     "--config.task.seq_len=128", "--config.train.batch_size=2", "--config.train.log_every=1",
                     "--config.eval.every=0", "--config.eval.num_examples=2",
                     "--config.eval.max_new_tokens=4", f"--config.model.init_from={tmp_path / 'hf'}",
                     "--config.train.steps=1", "--config.train.learning_rate=0.0"])  # fmt: skip
    assert code == 0
    with open(workdir / "metrics.jsonl") as f:
        records = [json.loads(line) for line in f]
    assert all(np.isfinite(r["loss"]) for r in records if "loss" in r)
    capsys.readouterr()
    code = cli.main(["eval", f"--workdir={workdir}", "--samples=2", "--num_prompts=2", "--max_new_tokens=4",
                     "--rerank=2"])  # fmt: skip
    assert code == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["by_temperature"][0]["distinct_1"] > 0 and report["rerank"]["n"] == 2
    assert cli.main(["export", f"--workdir={workdir}", f"--out={tmp_path / 'out'}"]) == 0
    assert "(t5)" in capsys.readouterr().out
    reloaded = transformers.T5ForConditionalGeneration.from_pretrained(
        tmp_path / "out", local_files_only=True
    ).eval()
    rng = np.random.default_rng(0)
    enc, dec = rng.integers(3, 259, (2, 10)), rng.integers(3, 259, (2, 6))
    np.testing.assert_allclose(_t5_logits(reloaded, enc, dec), _t5_logits(original, enc, dec), atol=1e-5)


def test_a_jirl_workdir_is_a_starting_point(tiny_data_dir, tmp_path, capsys):
    """`model.init_from` = a jirl workdir: its newest checkpoint's params and model shape (whatever the
    preset says), a fresh optimizer; with learning rate 0 the fine-tuned weights are the base's."""
    import jax

    from jirl.train.workdir import load_trained

    common = ["--progress=false", f"--config.task.data_dir={tiny_data_dir}", "--config.task.config=tiny",
              "--config.task.seq_len=128", "--config.train.batch_size=2", "--config.eval.every=0",
              "--config.eval.num_examples=2", "--config.eval.max_new_tokens=4"]  # fmt: skip
    base = tmp_path / "base"
    code = cli.main(["train", f"--config={ARITH}:mle", f"--workdir={base}", *common,
                     "--config.model.preset=tiny", "--config.train.steps=1"])  # fmt: skip
    assert code == 0
    tuned = tmp_path / "tuned"
    code = cli.main(["train", f"--config={ARITH}:iqlearn", f"--workdir={tuned}", *common,
                     "--config.model.preset=small", f"--config.model.init_from={base}",
                     "--config.train.steps=1", "--config.train.learning_rate=0.0"])  # fmt: skip
    assert code == 0
    assert f"starting from the step-1 weights of the run in {base}" in capsys.readouterr().out
    before, after = load_trained(str(base)), load_trained(str(tuned))
    assert after.run.model == before.run.model  # the base's shape, not the `small` preset
    assert after.step == 1
    for a, b in zip(jax.tree.leaves(after.params), jax.tree.leaves(before.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
