"""The experiment file: both objectives load, and they differ only in the `loss` block."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "train"))
from configs import load_arith  # noqa: E402

from jirl import losses, models  # noqa: E402
from jirl.experiment import make_objective, model_config  # noqa: E402
from jirl.forward import HeadOptions  # noqa: E402


@pytest.mark.parametrize("objective", ["iqlearn", "gail"])
def test_objectives_differ_only_under_loss(objective):
    mle, other = load_arith("mle").to_dict(), load_arith(objective).to_dict()
    assert set(mle) == set(other)
    assert [k for k in mle if mle[k] != other[k]] == ["loss"]
    assert mle["loss"]["name"] == "mle" and other["loss"]["name"] == objective


@pytest.mark.parametrize("objective", ["mle", "iqlearn", "iqlearn_online", "gail"])
def test_config_builds_its_model_and_loss(objective):
    config = load_arith(objective)
    for key in (
        "train.steps",
        "train.batch_size",
        "train.seed",
        "train.log_every",
        "model.preset",
        "loss.name",
    ):
        section, name = key.split(".")
        assert name in config[section], key
    assert model_config(config).num_params() == models.get_config("small").num_params()
    make_objective(config)
    assert set(config.loss) - {"name", *HeadOptions.keys()} == set(losses.options(config.loss.name))


def test_unknown_objective_is_named():
    accepted = r"\['gail', 'iqlearn', 'iqlearn_online', 'mle'\]"
    with pytest.raises(ValueError, match=f"unknown objective 'ppo'; accepted: {accepted}"):
        load_arith("ppo")
