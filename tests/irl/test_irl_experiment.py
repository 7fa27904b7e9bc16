"""`jirl train --config experiments/gridworld_irl.py`: a small run end to end; bad input is exit 2."""

import json
import os
import re

import numpy as np
import pytest

from jirl import cli
from jirl.experiment import load_config

EXPERIMENT = os.path.join(os.path.dirname(__file__), "..", "..", "experiments", "gridworld_irl.py")


def test_config_names_its_kind_and_blocks():
    config = load_config(EXPERIMENT)
    assert config.kind == "mdp_irl"
    for block in (
        "world",
        "features",
        "baseline_features",
        "demos",
        "irl",
        "rationality",
        "anomaly",
        "intent",
    ):
        assert block in config, block
    assert all(isinstance(f, str) for f in config.features)


def test_train_writes_metrics_and_plots(tmp_path, capsys, cli_args):
    workdir = tmp_path / "run"
    assert cli.main(cli_args(workdir)) == 0
    out = capsys.readouterr().out
    assert f"outputs in {workdir}: metrics.json, reward_map.png, roc.png, intent.png, demos.jsonl" in out
    for name in ("metrics.json", "reward_map.png", "roc.png", "intent.png", "demos.jsonl"):
        assert (workdir / name).stat().st_size > 0, name
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert metrics["irl"]["feature_expectation_gap"] < 0.01
    assert metrics["irl"]["spearman_state_reward"] > 0.9
    assert metrics["anomaly"]["auc"] > 0.9
    assert len(metrics["intent"]["accuracy"]) == 3
    pomdp = metrics["rationality"]["pomdp"]
    assert pomdp["belief_states"] > 0 and "total_variation" in pomdp["value_noise"]
    for agent in ("value_noise_agent", "boltzmann_agent"):
        assert set(metrics["rationality"][agent]) >= {"boltzmann", "value_noise", "better"}
    # The demonstrations it wrote read back in through demos.path.
    again = tmp_path / "again"
    assert cli.main(cli_args(again, **{"demos.path": str(workdir / "demos.jsonl")})) == 0
    reread = json.loads((again / "metrics.json").read_text())
    assert reread["demos"]["from_file"] and reread["demos"]["train"] == metrics["demos"]["train"]
    np.testing.assert_allclose(
        reread["irl"]["expert_feature_expectations"], metrics["irl"]["expert_feature_expectations"], rtol=1e-5
    )


def _bad_demos(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"states": [0, 1, 2], "actions": [2, 2]}\n{"states": [0, 1, 500], "actions": [2, 2]}\n')
    return {"demos.path": str(path)}


@pytest.mark.parametrize(
    "overrides,message",
    [
        (
            lambda _: {"world.move_probs": "(0.8, 0.1, 0.05)"},
            r"transition row P\(\.\|s=0, a=0\) sums to 0\.95 \(800 bad rows\); accepted: every row sums to 1",
        ),
        (
            lambda _: {"features": "('terrain(mud)', 'elevation(2)')"},
            r"unknown feature 'elevation' in 'elevation\(2\)'; accepted: \['terrain', 'distance'",
        ),
        (
            _bad_demos,
            r"bad\.jsonl trajectory 1 has state 500 at step 2, out of range; accepted: 0\.\.99\.",
        ),
        (
            lambda _: {"world.kind": "maze"},
            r"world\.kind='maze' is not a world; accepted: \['gridworld', 'road_graph'\]",
        ),
        (
            lambda _: {"irl.optimizer": "newton"},
            r"irl\.optimizer='newton'; accepted: \['lbfgs', 'adam', 'sgd'\]",
        ),
        (
            lambda _: {"irl.horizon": "-1"},
            r"irl\.horizon=-1; accepted: 0 \(discounted, infinite horizon\) or a whole number of steps >= 1",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(overrides, message, tmp_path, capsys, cli_args):
    workdir = tmp_path / "w"
    assert cli.main(cli_args(workdir, **overrides(tmp_path))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("jirl: error: "), err
    assert re.search(message, err[0]), err[0]
    assert "Traceback" not in err[0]
    assert not workdir.exists()  # nothing written for input that does not validate
