"""Shared fixtures: one 10 x 10 world from experiments/gridworld_irl.py, its expert, demos and MaxEnt fit.

The CLI test runs the experiment with the same overrides (`SMALL`), so the jitted functions the
fixtures compile (same shapes) are reused there.
"""

import os

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXPERIMENT = os.path.join(ROOT, "experiments", "gridworld_irl.py")

# --config overrides for a small, fast run (also read by the fixtures below).
SMALL = {
    "world.height": "10",
    "world.width": "10",
    "world.goal": "(9, 9)",
    "world.road_rows": "(2,)",
    "world.road_cols": "(6,)",
    "world.landmarks.hazard": "(4, 3)",
    "demos.train": "100",
    "demos.test": "100",
    "demos.horizon": "60",
    "irl.steps": "100",
    "irl.baseline": "False",
    "rationality.train": "150",
    "rationality.test": "150",
    "rationality.pomdp_size": "4",
    "rationality.pomdp_uncertain": "2",
    "anomaly.per_kind": "30",
    "intent.goals": "((0, 9), (9, 0), (9, 9))",
    "intent.per_goal": "20",
    "intent.fractions": "(0.25, 0.5, 1.0)",
}


def small_config():
    import ast

    from jirl.experiment import load_config

    config = load_config(EXPERIMENT)
    for key, value in SMALL.items():
        block, name = key.rsplit(".", 1)
        target = config
        for part in block.split("."):
            target = target[part]
        target[name] = ast.literal_eval(value)
    return config


@pytest.fixture(scope="session")
def config():
    return small_config()


@pytest.fixture(scope="session")
def cli_args():
    """`jirl train` arguments for the small run into `workdir`, with extra --config overrides."""

    def args(workdir, **extra):
        overrides = {**SMALL, **extra}
        return ["train", "--config", EXPERIMENT, "--workdir", str(workdir), "--progress=false"] + [
            f"--config.{key}={value}" for key, value in overrides.items()
        ]

    return args


@pytest.fixture(scope="session")
def world(config):
    """(mdp, layout, true reward_SA) of the small gridworld."""
    from jirl.irl.experiment import build_world
    from jirl.irl.features import reward_from_terms

    mdp, layout = build_world(config.world)
    return mdp, layout, reward_from_terms(config.world.reward, mdp, layout)


@pytest.fixture(scope="session")
def expert(world, config):
    from jirl.irl import soft_vi

    mdp, _, reward_SA = world
    return soft_vi.soft_value_iteration(mdp, reward_SA, config.demos.temperature)


@pytest.fixture(scope="session")
def demos(world, expert, config):
    """(train, test) expert trajectories, as the experiment samples them."""
    import jax

    from jirl.irl import demos as demos_lib

    mdp = world[0]
    key_train, key_test = jax.random.split(jax.random.PRNGKey(0))
    sample = lambda key, n: demos_lib.sample_trajectories(
        key, mdp, expert.log_policy_SA, n, config.demos.horizon
    )
    return sample(key_train, config.demos.train), sample(key_test, config.demos.test)


@pytest.fixture(scope="session")
def features(world, config):
    from jirl.irl.features import compile_features

    mdp, layout, _ = world
    return compile_features(tuple(config.features), mdp, layout)


@pytest.fixture(scope="session")
def irl_fit(world, features, demos, config):
    """MaxEnt IRL on the instructed features, with the experiment's optimiser settings."""
    from jirl.irl import maxent

    mdp = world[0]
    return maxent.maxent_irl(
        mdp,
        features[0],
        demos[0],
        steps=config.irl.steps,
        learning_rate=config.irl.learning_rate,
        optimizer=config.irl.optimizer,
    )


@pytest.fixture(scope="session")
def rng():
    return np.random.default_rng(0)
