"""Every sequence-model experiment file loads for both objectives, differs between them only in `loss`,
and builds."""

import os

import pytest

from jirl import data, losses
from jirl.experiment import load_config, make_objective, model_config
from jirl.forward import HeadOptions

EXPERIMENTS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "experiments")
FILES = {
    "arith.py": lambda objective: objective,
    "arith_shifted.py": lambda objective: objective,
    "gsm8k.py": lambda objective: objective,
    "translate.py": lambda objective: objective,
    "jsonl.py": lambda objective: objective,
    "summarize.py": lambda objective: f"tldr,{objective}",
}
MDP_FILES = {"gridworld_irl.py"}  # feature-based IRL on MDPs (kind mdp_irl): tested in tests/irl


def test_every_experiment_file_is_covered():
    assert sorted(f for f in os.listdir(EXPERIMENTS) if f.endswith(".py")) == sorted({*FILES, *MDP_FILES})
    for name in MDP_FILES:
        assert load_config(os.path.join(EXPERIMENTS, name)).kind == "mdp_irl"


@pytest.mark.parametrize("name", sorted(FILES))
def test_objective_is_one_block(name):
    arg = FILES[name]
    mle = load_config(os.path.join(EXPERIMENTS, name), arg("mle")).to_dict()
    iq = load_config(os.path.join(EXPERIMENTS, name), arg("iqlearn")).to_dict()
    assert [k for k in mle if mle[k] != iq[k]] == ["loss"]
    config = load_config(os.path.join(EXPERIMENTS, name), arg("iqlearn"))
    task = data.get_task(config.task.name)
    assert config.eval.split in task.splits
    assert model_config(config, tokenizer_vocab_size=8000).vocab_size in (259, 8000)
    assert set(config.loss) - {"name", *HeadOptions.keys()} == set(losses.options("iqlearn"))
    make_objective(config)


def test_summarize_names_its_tasks():
    with pytest.raises(ValueError, match=r"unknown summarisation task 'cnn'; accepted: \['xsum', 'tldr'\]"):
        load_config(os.path.join(EXPERIMENTS, "summarize.py"), "cnn,mle")
