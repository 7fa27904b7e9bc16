"""LoRA training (`model.lora`): only the adapters train and the base stays bit-identical, every
objective trains through them, a resume is exact and refuses another base, and `jirl export` writes
merged weights or a PEFT folder that transformers / peft load with jirl's logits."""

import json
import os
import shutil
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
import transformers
from configs import ROOT, load_arith
from flax import nnx

from jirl import cli, experiment, losses, models
from jirl.models import hf, lora
from jirl.optimizer import make_optimizer
from jirl.train import lora as train_lora
from jirl.train import make_train_step
from jirl.train.checkpoint import Checkpointer
from jirl.train.workdir import load_trained

sys.path.insert(0, os.path.join(ROOT, "tests", "models", "hf"))
from hf_models import SHAPE, hf_logits  # noqa: E402

JSONL = os.path.join(ROOT, "experiments", "jsonl.py")
FIXTURES = os.path.join(ROOT, "tests", "data", "fixtures")
ALL = tuple(lora.TARGETS)


def _batch(seed, b=2, t=16):
    tokens = np.random.default_rng(seed).integers(3, 259, (b, t + 1)).astype(np.int32)
    mask = np.zeros((b, t), np.float32)
    mask[:, t // 2 :] = 1
    return {
        "inputs": jnp.asarray(tokens[:, :-1]),
        "targets": jnp.asarray(tokens[:, 1:]),
        "loss_mask": jnp.asarray(mask),
    }


def test_dropout_masks_of_the_expert_and_policy_streams_are_independent():
    """One step's key, folded per stream: the same rows through both streams drop different units."""
    from jirl.train import step as step_lib

    seen = {}

    def loss_of(params, expert, policy, adapters, policy_adapters):
        seen["expert"], seen["policy"] = adapters, policy_adapters
        return jnp.zeros(()), {}

    config = lora.LoraConfig(rank=2, alpha=4.0, dropout=0.5)
    step_lib._lora_loss_fn(loss_of, config, None, jax.random.key(3))({"layers": {}}, {}, {})
    assert seen["expert"].dropout == seen["policy"].dropout == 0.5
    kept = [np.asarray(jax.random.bernoulli(seen[k].key, 0.5, (4096,))) for k in ("expert", "policy")]
    assert 0.45 < (kept[0] == kept[1]).mean() < 0.55  # independent masks agree on about half the units


def _dropout_keys_of_one_step(monkeypatch, microbatches: int) -> set:
    """The distinct dropout keys the adapters of one LoRA step on a tiny model draw with."""
    from jirl.models import layers

    seen, lora_delta = set(), layers.lora_delta

    def spy(x, adapter, contract=1):
        jax.debug.callback(lambda k: seen.add(tuple(np.asarray(k).ravel())), jax.random.key_data(adapter.key))
        return lora_delta(x, adapter, contract)

    cfg = models.get_config("tiny")
    config = lora.LoraConfig(rank=2, alpha=4.0, dropout=0.5, targets=("q_proj",))
    tx, schedule = make_optimizer(load_arith().train)
    graphdef = nnx.graphdef(nnx.eval_shape(lambda: models.create(cfg, seed=0)))
    base = jax.jit(lambda: models.split(models.create(cfg, seed=0))[1])()
    state = jax.jit(lambda: train_lora.fresh_state(cfg, config, tx, seed=0))()
    step = make_train_step(graphdef, losses.get("mle"), tx, schedule, lora=config, microbatches=microbatches)
    with monkeypatch.context() as patch:
        patch.setattr(layers, "lora_delta", spy)
        jax.block_until_ready(step.with_base(base)(state, _batch(0, b=4)))
    return seen


def test_each_microbatch_draws_its_own_dropout_masks(monkeypatch):
    """M microbatches of one step draw with M different keys per layer, not one key M times."""
    one = _dropout_keys_of_one_step(monkeypatch, microbatches=1)
    two = _dropout_keys_of_one_step(monkeypatch, microbatches=2)
    assert len(one) == models.get_config("tiny").num_layers  # a key per layer (q_proj alone)
    assert len(two) == 2 * len(one), (len(one), len(two))


@pytest.mark.parametrize(
    "name, opts, online, dropout",
    [
        ("mle", dict(entropy_bonus=0.01), False, 0.0),
        ("iqlearn", dict(lam=0.5), False, 0.1),
    ],
    ids=["mle_entropy_bonus", "iqlearn_offline_dropout"],  # online: the loop test below
)
def test_only_the_adapters_train_and_the_base_stays_bit_identical(name, opts, online, dropout):
    cfg = models.get_config("tiny")
    config = lora.LoraConfig(rank=4, alpha=8.0, dropout=dropout, targets=ALL)
    train = load_arith().train
    train.update(learning_rate=1e-2, warmup_steps=0, weight_decay=0.0)  # every change is a gradient's
    tx, schedule = make_optimizer(train)
    graphdef = nnx.graphdef(nnx.eval_shape(lambda: models.create(cfg, seed=0)))
    base = jax.jit(lambda: models.split(models.create(cfg, seed=0))[1])()
    frozen = jax.tree.map(np.array, base)
    state = jax.jit(lambda: train_lora.fresh_state(cfg, config, tx, seed=0))()
    start = jax.tree.map(np.array, state.params)
    step = make_train_step(graphdef, losses.get(name, **opts), tx, schedule, lora=config).with_base(base)
    expert, policy = _batch(0), (_batch(1) if online else None)
    history = []
    for _ in range(4):
        state, metrics = step(state, expert, policy)
        history.append(float(metrics["loss"]))
    assert all(np.isfinite(history)) and history[-1] < history[0], history
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.array, base), frozen)  # bit-identical
    # The state holds the adapters alone, and so does the optimizer state (Adam's moments of A and B).
    assert set(state.params) == {"layers"} and set(state.params["layers"]) == set(config.weights)
    shapes = {x.shape for x in jax.tree.leaves(state.params)}
    assert {x.shape for x in jax.tree.leaves(state.opt_state) if x.ndim} == shapes
    for name_, adapter in state.params["layers"].items():  # gradients reached A and B
        assert not np.array_equal(adapter["a"], start["layers"][name_]["a"]), name_
        assert float(jnp.abs(adapter["b"]).max()) > 0, name_


TARGETS = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"


def _train(workdir, base, data_dir, *extra):
    """Online IQLearn with rank-4 LoRA on every projection of `base`, 2 steps, a checkpoint after each."""
    return cli.main([
        "train", f"--config={JSONL}:iqlearn_online", f"--workdir={workdir}", "--progress=false",
        f"--config.task.data_dir={data_dir}", f"--config.task.source={FIXTURES}/jsonl/qa.jsonl",
        "--config.task.config=qa", "--config.task.prompt_field=instruction",
        "--config.task.response_field=meta.answer", "--config.task.seq_len=48", "--config.task.pack=false",
        "--config.online.max_new_tokens=8", "--config.train.batch_size=4", "--config.train.steps=2",
        "--config.train.checkpoint_every=1", "--config.train.warmup_steps=0",
        "--config.train.learning_rate=0.05",
        "--config.eval.every=0", f"--config.model.init_from={base}", "--config.model.lora.rank=4",
        "--config.model.lora.alpha=8", f"--config.model.lora.targets={TARGETS}", *extra,
    ])  # fmt: skip


def _hf_base(folder, seed):
    import torch

    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        **dict(SHAPE, vocab_size=259), num_key_value_heads=2, max_position_embeddings=256
    )
    transformers.LlamaForCausalLM(config).save_pretrained(folder)


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """(root, base folder, workdir): a tiny random Llama and 2 online IQLearn steps of LoRA on it."""
    root = tmp_path_factory.mktemp("lora")
    _hf_base(root / "base", seed=0)
    assert _train(root / "run", root / "base", root / "data") == 0
    return root, root / "base", root / "run"


def _saved_state(workdir, step):
    """The adapter train state of the checkpoint at `step`."""
    with open(os.path.join(workdir, "config.json")) as f:
        run = experiment.build(experiment.upgrade(experiment.ConfigDict(json.load(f))), training=False)
    checkpointer = Checkpointer(str(workdir), keep=5, read_only=True)
    try:
        target = ocp.args.StandardRestore(train_lora.targets(run).state)
        restored = checkpointer.manager.restore(step, args=ocp.args.Composite(state=target))
    finally:
        checkpointer.close()
    return jax.tree.map(np.asarray, restored.state)


def test_online_iqlearn_samples_with_the_adapted_model_and_trains(lora_run):
    _, base, workdir = lora_run
    with open(workdir / "metrics.jsonl") as f:
        (record,) = [json.loads(line) for line in f if '"loss"' in line]
    assert record["policy_tokens"] > 0 and np.isfinite(record["loss"]) and record["grad_norm"] > 0
    with open(workdir / "summary.json") as f:
        summary = json.load(f)
    cfg = hf.config_from_hf(hf.read_config(base))
    expected = lora.num_adapter_params(cfg, lora.LoraConfig(4, 8.0, targets=ALL))
    assert summary["trainable_params"] == expected < summary["num_params"]


def test_a_resume_is_exact_and_refuses_another_base(lora_run, capsys):
    root, base, workdir = lora_run
    assert sorted(os.listdir(workdir / "checkpoints")) == ["1", "2"]
    resumed = root / "resumed"
    shutil.copytree(workdir, resumed)
    shutil.rmtree(resumed / "checkpoints" / "2")
    assert _train(resumed, base, root / "data") == 0  # from step 1: the base read again
    assert "resuming from the checkpoint at step 1" in capsys.readouterr().out
    jax.tree.map(np.testing.assert_array_equal, _saved_state(resumed, 2), _saved_state(workdir, 2))
    _hf_base(root / "other", seed=1)  # the same shapes, other weights
    capsys.readouterr()
    assert _train(resumed, root / "other", root / "data") == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("jirl: error:")]
    assert (
        len(errors) == 1 and "holds LoRA adapters trained on another base than model.init_from=" in errors[0]
    )


def test_merged_export_loads_in_transformers_with_the_adapted_logits(lora_run, tmp_path):
    _, base, workdir = lora_run
    trained = load_trained(str(workdir))
    tokens = np.random.default_rng(0).integers(0, 259, (2, 10))
    ours = np.asarray(models.apply(trained.graphdef, trained.params, tokens))
    original = hf_logits(transformers.AutoModelForCausalLM.from_pretrained(base).eval(), tokens)
    assert np.abs(ours - original).max() > 1e-3  # the adapters moved the model
    assert cli.main(["export", f"--workdir={workdir}", f"--out={tmp_path / 'merged'}"]) == 0
    merged = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path / "merged", local_files_only=True
    ).eval()
    np.testing.assert_allclose(hf_logits(merged, tokens), ours, atol=2e-5)


def test_adapter_export_is_a_peft_folder_with_the_adapted_logits(lora_run, tmp_path, capsys):
    import peft

    _, base, workdir = lora_run
    out = tmp_path / "adapter"
    assert cli.main(["export", f"--workdir={workdir}", f"--out={out}", "--adapter"]) == 0
    assert "LoRA adapters" in capsys.readouterr().out
    assert sorted(os.listdir(out)) == ["adapter_config.json", "adapter_model.safetensors"]
    config = json.loads((out / "adapter_config.json").read_text())
    fields = (config["peft_type"], config["r"], config["lora_alpha"], config["task_type"])
    assert fields == ("LORA", 4, 8.0, "CAUSAL_LM") and config["base_model_name_or_path"] == str(base)
    assert sorted(config["target_modules"]) == sorted(TARGETS.split(","))
    model = peft.PeftModel.from_pretrained(
        transformers.AutoModelForCausalLM.from_pretrained(base), out
    ).eval()
    tokens = np.random.default_rng(1).integers(0, 259, (2, 10))
    trained = load_trained(str(workdir))
    ours = np.asarray(models.apply(trained.graphdef, trained.params, tokens))
    np.testing.assert_allclose(hf_logits(model, tokens), ours, atol=2e-5)
