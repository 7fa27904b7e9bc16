"""A config becomes one typed Run, every block checked before any data or device work."""

import os
import re

import jax
import pytest
from ml_collections import ConfigDict

from jirl import data, experiment, forward, losses, models
from jirl.errors import ConfigError
from jirl.experiment import OnlineSampling, Run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARITH = os.path.join(ROOT, "experiments", "arith.py")


def _tiny(objective="iqlearn", data_dir="data"):
    config = experiment.load_config(ARITH, objective)
    config.task.update(config="tiny", data_dir=data_dir, seq_len=128)
    config.model.preset = "tiny"
    config.train.batch_size = 4
    return config


def test_build_gives_every_part_of_the_run(tiny_data_dir):
    run = experiment.build(_tiny(data_dir=tiny_data_dir))
    assert isinstance(run, Run)
    assert run.task is data.get_task("arith") and run.data_dir == tiny_data_dir
    assert isinstance(run.tokenizer, data.ByteTokenizer)
    # the experiment's compute keys apply, scan_layers and attention resolved for the devices
    assert run.model == models.get_config("tiny").for_platform(jax.default_backend())
    assert run.model.scan_layers is not None and run.model.attention != "auto"
    assert isinstance(run.objective, losses.Objective) and run.objective.name == "iqlearn"
    assert run.objective.options == dict(lam=0.1, gamma=1.0, alpha=0.0, stop_grad_next_value=False)
    assert run.head == forward.HeadOptions() and run.online is None
    assert dict(run.mesh.shape) == {"data": 1, "fsdp": 1, "tensor": 1} and run.rules
    assert (run.batch_size, run.local_batch_size, run.microbatches, run.eval_split) == (4, 4, 1, "validation")
    assert float(run.schedule(0)) == 0.0  # warmup from 0


def test_planning_needs_no_data(tmp_path):
    run = experiment.build(_tiny(data_dir=str(tmp_path / "nothing")), tokenize=False)
    assert run.tokenizer is None and run.model.vocab_size == 259
    assert not os.path.exists(tmp_path / "nothing")


def test_online_objectives_get_the_online_block(tmp_path):
    config = _tiny("iqlearn_online", data_dir=str(tmp_path))
    config.online.update(sample_every=3, temperature=0.7, max_new_tokens=12)
    run = experiment.build(config, tokenize=False)
    assert run.objective.needs_policy
    assert run.online == OnlineSampling(sample_every=3, temperature=0.7, max_new_tokens=12)


def test_mle_with_an_entropy_bonus_asks_the_head_for_the_expected_logit(tmp_path):
    config = _tiny("mle", data_dir=str(tmp_path))
    assert config.loss.entropy_bonus == 0.0  # plain MLE by default
    assert not experiment.build(config, tokenize=False).objective.needs_expected_logit
    config.loss.entropy_bonus = 0.1  # --config.loss.entropy_bonus=0.1
    run = experiment.build(config, tokenize=False)
    assert run.objective.name == "mle" and run.objective.needs_expected_logit
    assert run.objective.options == dict(label_smoothing=0.0, z_loss=0.0, entropy_bonus=0.1)
    config.loss.entropy_bonus = -0.5
    with pytest.raises(ConfigError, match=re.escape("loss.entropy_bonus=-0.5 is not accepted")):
        experiment.build(config, tokenize=False)


@pytest.mark.parametrize(
    "values, message",
    [
        (dict(sample_every=0), "online.sample_every=0 is not accepted; give an integer >= 1."),
        (dict(max_new_tokens=0), "online.max_new_tokens=0 is not accepted; give an integer >= 1."),
        (dict(temperature=-1.0), "online.temperature=-1.0 is not accepted; give a number >= 0."),
        (
            dict(every=2),
            "online has no key(s) ['every']; accepted: ['sample_every', 'temperature', 'max_new_tokens'].",
        ),
        (
            dict(max_new_tokens=128),  # task.seq_len=128: no room left for the prompt
            "online.max_new_tokens=128 cannot fit: a policy example is a prompt of at least one token "
            "and its response, packed into rows of task.seq_len=128 tokens (model max_len 256); give "
            "online.max_new_tokens <= 127.",
        ),
    ],
)
def test_the_online_block_is_checked(values, message, tmp_path):
    config = ConfigDict(_tiny("iqlearn_online", data_dir=str(tmp_path)).to_dict())
    config.online.update(values)
    with pytest.raises(ConfigError, match=re.escape(message)):
        experiment.build(config, tokenize=False)


def test_a_saved_config_is_upgraded_and_read_back_without_training_checks(tmp_path):
    """A workdir's config.json from before the `online` block, with a batch this machine's devices
    could not split and a coordinator it could not reach, still builds for `jirl eval`."""
    config = ConfigDict(_tiny("iqlearn_online", data_dir=str(tmp_path)).to_dict())
    del config["online"]
    config.loss.update(sample_every=4, sample_temperature=0.5, sample_max_tokens=12)
    config.train.batch_size = 3
    config.distributed.coordinator_address = "10.0.0.1:1234"  # joining would wait for it
    upgraded = experiment.upgrade(config)
    assert "sample_every" in config.loss  # the saved config itself is left as it was
    assert dict(upgraded.online) == dict(sample_every=4, temperature=0.5, max_new_tokens=12)
    run = experiment.build(upgraded, tokenize=False, training=False)
    assert run.online == OnlineSampling(sample_every=4, temperature=0.5, max_new_tokens=12)
    with pytest.raises(ConfigError, match="loss.sample_every has moved to online.sample_every"):
        experiment.build(config, tokenize=False, training=False)


@pytest.mark.parametrize("old, new", sorted(experiment.MOVED_KEYS.items()))
def test_moved_keys_are_refused_with_where_they_went(old, new):
    config = ConfigDict(_tiny().to_dict())
    block, key = old.split(".")
    config[block][key] = 1
    with pytest.raises(ConfigError, match=f"{old} has moved to {new}; set it there."):
        experiment.build(config, tokenize=False)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("model.preset", "huge", "unknown model preset 'huge'"),
        ("loss.name", "ppo", "unknown loss 'ppo'"),
        ("train.steps", 0, "train.steps=0 and train.log_every=20 must both be at least 1."),
        ("mesh.data", 3, "mesh data=3 x fsdp=1 x tensor=1 = 3 devices, but 1 are available"),
        ("eval.split", "dev", "eval.split='dev' is not a split of task 'arith'"),
        ("task.seq_len", 4096, "task.seq_len=4096 exceeds the model's max_len=256."),
        ("checkpoint.keep", 0, "checkpoint.keep=0 must be at least 1."),
        ("train.max_nonfinite_steps", 0, "train.max_nonfinite_steps=0 is not accepted; give an integer >= 1"),
        ("loss.alpha", -0.5, "loss.alpha=-0.5 is not accepted; give a number in [0, 1]."),
    ],
)
def test_a_bad_block_fails_before_any_data_is_written(tmp_path, key, value, message):
    config = _tiny(data_dir=str(tmp_path / "data"))
    block, name = key.split(".")
    config[block][name] = value
    with pytest.raises(ConfigError, match=re.escape(message)):
        experiment.build(config, prepare=True)
    assert not os.path.exists(tmp_path / "data")


def test_a_run_from_a_jirl_workdir_reads_the_tokenizer_that_run_read(tmp_path):
    """tokenizer.kind='hf' without a path: the workdir's tokenizer, with the special tokens and the chat
    template it named, unless this config names its own."""
    import json

    from tokenizers import Tokenizer
    from tokenizers import models as tokenizer_models

    folder = tmp_path / "tok"
    folder.mkdir()
    vocab = {"<unk>": 0, "</s>": 1, "<|eot_id|>": 2, "<|end|>": 3, "a": 4}
    Tokenizer(tokenizer_models.WordLevel(vocab, unk_token="<unk>")).save(str(folder / "tokenizer.json"))
    (folder / "chat_template.jinja").write_text("{% for m in messages %}{{ m.content }}<|end|>{% endfor %}")
    (folder / "additional_chat_templates").mkdir()
    (folder / "additional_chat_templates" / "eot.jinja").write_text(
        "{% for m in messages %}{{ m.content }}<|eot_id|>{% endfor %}"
    )
    workdir = tmp_path / "run"
    (workdir / "checkpoints").mkdir(parents=True)
    saved = _tiny()
    saved.tokenizer.update(kind="hf", path=str(folder / "tokenizer.json"))
    saved.tokenizer.update(eos="<|eot_id|>", chat_template="eot")
    (workdir / "config.json").write_text(json.dumps(saved.to_dict()))
    config = _tiny()
    config.tokenizer.kind, config.model.init_from = "hf", str(workdir)
    tokenizer = experiment.run_tokenizer(config, data.get_task("arith"), str(tmp_path))
    assert tokenizer.eos_id == 2 and tokenizer.chat_template.source.endswith("<|eot_id|>{% endfor %}")
    config.tokenizer.update(eos="<|end|>", chat_template="default")
    tokenizer = experiment.run_tokenizer(config, data.get_task("arith"), str(tmp_path))
    assert tokenizer.eos_id == 3 and tokenizer.chat_template.source.endswith("<|end|>{% endfor %}")


def test_hf_only_tokenizer_keys_on_another_kind_fail_before_data_work(tmp_path):
    config = _tiny(data_dir=str(tmp_path / "nothing"))
    config.tokenizer.eos = "<|eot_id|>"
    with pytest.raises(ConfigError, match=r"^tokenizer.eos is set but applies only to tokenizer.kind='hf'"):
        experiment.build(config, prepare=True)
    assert not os.path.exists(tmp_path / "nothing")
