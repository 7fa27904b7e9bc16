"""Feature-based IRL on an MDP, end to end: `jirl train` runs this for configs with kind == "mdp_irl".

    world -> expert demonstrations (soft-optimal under the true reward) -> MaxEnt IRL on the
    instructed features (and on the one-hot baseline) -> rationality models (value noise vs
    Boltzmann, both ways; exact belief planning vs value noise on a small instance) -> anomaly
    ROC-AUC -> intent accuracy against the fraction observed.

Writes to the workdir: metrics.json, reward_map.png, roc.png, intent.png, demos.jsonl (the
training demonstrations, in the format `demos.path` reads). Every config error is a ConfigError
naming the key and what is accepted, raised before anything is written.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from jirl.errors import ConfigError
from jirl.irl import anomaly, belief, demos, maxent, soft_vi, stages
from jirl.irl.features import compile_features, reward_from_terms
from jirl.irl.mdp import MDP, Layout, deterministic_successors, gridworld, road_graph

WORLDS = ("gridworld", "road_graph")


def _cell(world, rc, what: str) -> int:
    try:
        r, c = (int(v) for v in rc)
    except (TypeError, ValueError):
        raise ConfigError(f"{what}={rc!r} must be a (row, col) pair.") from None
    if not (0 <= r < world.height and 0 <= c < world.width):
        raise ConfigError(f"{what}={tuple(rc)} is outside the {world.height} x {world.width} world.")
    return r * world.width + c


def build_world(world) -> tuple[MDP, Layout]:
    """(mdp, layout) from the `world` block."""
    if world.kind not in WORLDS:
        raise ConfigError(f"world.kind='{world.kind}' is not a world; accepted: {list(WORLDS)}.")
    landmarks = {name: tuple(rc) for name, rc in world.landmarks.items()}
    if world.kind == "gridworld":
        return gridworld(
            world.height,
            world.width,
            goal=tuple(world.goal),
            terrain_names=tuple(world.terrain),
            terrain_fractions=tuple(world.terrain_fractions),
            road_rows=tuple(world.road_rows),
            road_cols=tuple(world.road_cols),
            landmarks=landmarks,
            regions={name: tuple(box) for name, box in world.regions.items()},
            move_probs=tuple(world.move_probs),
            discount=world.discount,
            seed=world.seed,
        )
    return road_graph(
        world.height,
        world.width,
        goal=_cell(world, world.goal, "world.goal"),
        landmarks={name: _cell(world, rc, f"world.landmarks.{name}") for name, rc in landmarks.items()},
        move_probs=tuple(world.move_probs),
        discount=world.discount,
        seed=world.seed,
    )


def _check_numbers(config, mdp: MDP) -> None:
    """ConfigError for a setting out of its range (before anything runs or is written)."""
    at_least_one = {
        "demos.train": config.demos.train,
        "demos.test": config.demos.test,
        "demos.horizon": config.demos.horizon,
        "irl.steps": config.irl.steps,
        "anomaly.per_kind": config.anomaly.per_kind,
        "anomaly.waypoints": config.anomaly.waypoints,
        "intent.per_goal": config.intent.per_goal,
        "rationality.train": config.rationality.train,
        "rationality.test": config.rationality.test,
    }
    for key, value in at_least_one.items():
        if int(value) < 1:
            raise ConfigError(f"{key}={value} must be at least 1.")
    positive = {
        "demos.temperature": config.demos.temperature,
        "rationality.sigma": config.rationality.sigma,
        "rationality.temperature": config.rationality.temperature,
    }
    for key, value in positive.items():
        if not float(value) > 0:
            raise ConfigError(f"{key}={value} must be > 0.")
    horizon = config.irl.get("horizon", 0)
    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 0:
        raise ConfigError(
            f"irl.horizon={horizon!r}; accepted: 0 (discounted, infinite horizon) "
            "or a whole number of steps >= 1."
        )
    if not isinstance(config.irl.get("warm_start", True), bool):
        raise ConfigError(f"irl.warm_start={config.irl.warm_start!r}; accepted: True or False.")
    if config.irl.optimizer not in maxent.OPTIMIZERS:
        raise ConfigError(f"irl.optimizer='{config.irl.optimizer}'; accepted: {list(maxent.OPTIMIZERS)}.")
    if not 0.0 < float(config.anomaly.erratic_prob) <= 1.0:
        raise ConfigError(f"anomaly.erratic_prob={config.anomaly.erratic_prob}; accepted: 0 < p <= 1.")
    if int(config.anomaly.waypoints) > mdp.num_states - 1:
        raise ConfigError(f"anomaly.waypoints={config.anomaly.waypoints}; accepted: 1..{mdp.num_states - 1}.")
    for f in config.intent.fractions:
        if not 0.0 <= float(f) <= 1.0:
            raise ConfigError(f"intent.fractions has {f}; accepted: fractions in [0, 1].")


def prepare(config) -> stages.Setup:
    """The world, features, goals and expert demonstrations; every config error is raised here."""
    seed = int(config.seed)
    names = ("train", "test", "rationality", "anomaly", "intent")
    keys = dict(zip(names, jax.random.split(jax.random.PRNGKey(seed), 5)))
    mdp, layout = build_world(config.world)
    true_reward_SA = reward_from_terms(config.world.reward, mdp, layout)
    features_SAF, feature_names = compile_features(tuple(config.features), mdp, layout)
    baseline_SAF = None
    if config.irl.baseline:
        baseline_SAF, _ = compile_features(tuple(config.baseline_features), mdp, layout)
    goal = layout.landmarks["goal"]
    goals = [_cell(config.world, rc, "intent.goals") for rc in config.intent.goals]
    if len(set(goals)) < 2:
        raise ConfigError(f"intent.goals={tuple(config.intent.goals)} must name at least two distinct cells.")
    kinds = tuple(config.anomaly.kinds)
    unknown = sorted(set(kinds) - set(anomaly.KINDS))
    if unknown or not kinds:
        raise ConfigError(
            f"anomaly.kinds={kinds}: unknown {unknown}; accepted: a non-empty subset of "
            f"{list(anomaly.KINDS)}."
        )
    other_goals = [g for g in goals if g != goal]
    if "wrong_goal" in kinds and not other_goals:
        raise ConfigError("anomaly kind 'wrong_goal' needs an intent.goals cell other than world.goal.")
    successor_SA, pomdp_world = None, None
    if config.rationality.enabled:
        successor_SA = deterministic_successors(mdp)
        if config.rationality.pomdp_size:
            try:
                pomdp_world = belief.random_world(
                    config.rationality.pomdp_size,
                    config.rationality.pomdp_uncertain,
                    seed=seed,
                    discount=float(mdp.discount),
                )
            except ValueError as e:
                raise ConfigError(f"rationality.pomdp_uncertain: {e}") from None
    _check_numbers(config, mdp)
    expert = soft_vi.soft_value_iteration(mdp, true_reward_SA, config.demos.temperature)
    if float(expert.residual) > soft_vi.TOL * max(1.0, float(jnp.max(jnp.abs(expert.value_S)))):
        raise ConfigError("soft value iteration of world.reward did not converge; check world.discount < 1.")
    horizon = int(config.demos.horizon)
    if config.demos.path:
        train = demos.load(config.demos.path, mdp)
    else:
        train = demos.sample_trajectories(
            keys["train"], mdp, expert.log_policy_SA, config.demos.train, horizon
        )
    test = demos.sample_trajectories(keys["test"], mdp, expert.log_policy_SA, config.demos.test, horizon)
    return stages.Setup(
        mdp, layout, true_reward_SA, features_SAF, tuple(feature_names), baseline_SAF, goal, goals,
        other_goals, successor_SA, pomdp_world, expert, train, test, keys, horizon,
    )  # fmt: skip


def _describe(config, setup: stages.Setup) -> dict[str, Any]:
    """The world and demonstration counts at the head of metrics.json."""
    mdp, train = setup.mdp, setup.train
    return {
        "world": {
            "kind": config.world.kind,
            "states": mdp.num_states,
            "actions": mdp.num_actions,
            "successors": int(mdp.next_SAK.shape[-1]),
            "discount": float(mdp.discount),
        },
        "demos": {
            "train": train.num,
            "train_steps": int(np.sum(train.mask_NT)),
            "test": setup.test.num,
            "from_file": bool(config.demos.path),
            "mean_length": float(np.mean(train.lengths_N)),
            "reached_goal": float(np.mean(np.asarray(demos.final_states(train)) == setup.goal)),
        },
    }


def run(config, workdir: str, progress: bool = True) -> dict[str, Any]:
    """Run the experiment; returns {"workdir", "outputs", "metrics"}."""
    started = time.perf_counter()
    setup = prepare(config)
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "demos.jsonl"), "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in demos.to_lists(setup.train))
    metrics, timings = _describe(config, setup), {}
    bar = tqdm(total=5, desc="mdp_irl", disable=not progress)

    def timed(name, stage, *args):
        bar.set_postfix(stage=name)
        t = time.perf_counter()
        out = stage(*args)
        timings[name] = time.perf_counter() - t
        bar.update()
        return out

    irl = timed("irl", stages.irl_stage, config, setup, progress)
    metrics["irl"] = irl.metrics
    if config.rationality.enabled:
        metrics["rationality"] = timed("rationality", stages.rationality_stage, config, setup)
    else:
        timed("rationality", lambda: None)
    found, metrics["anomaly"] = timed("anomaly", stages.anomaly_stage, config, setup, irl.result)
    accuracy, metrics["intent"] = timed("intent", stages.intent_stage, config, setup, irl.result)
    bar.set_postfix(stage="plots")
    stages.write_plots(workdir, setup, irl.maps, found, accuracy, metrics)
    bar.update()
    bar.close()
    timings["total"] = time.perf_counter() - started
    metrics["seconds"] = {k: round(v, 2) for k, v in timings.items()}
    metrics["config"] = config.to_dict()
    with open(os.path.join(workdir, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2, default=float)
    outputs = ["metrics.json", "reward_map.png", "roc.png", "intent.png", "demos.jsonl"]
    return {"workdir": workdir, "outputs": outputs, "metrics": metrics}
