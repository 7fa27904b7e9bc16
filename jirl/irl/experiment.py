"""Feature-based IRL on an MDP, end to end: `jirl train` runs this for configs with kind == "mdp_irl".

    world -> expert demonstrations (soft-optimal under the true reward) -> MaxEnt IRL on the
    instructed features (and on the one-hot baseline) -> rationality models (value noise vs
    Boltzmann, both ways; exact belief planning vs value noise on a small instance) -> anomaly
    ROC-AUC -> intent accuracy against the fraction observed.

Writes to the workdir: metrics.json, reward_map.png, roc.png, intent.png, demos.jsonl (the
training demonstrations, in the format `demos.path` reads). Every config error is a ValueError
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
from jirl.irl import anomaly, belief, demos, intent, maxent, plots, rationality, soft_vi, stats
from jirl.irl.features import compile_features, reward_from_terms
from jirl.irl.mdp import MDP, Layout, deterministic_successors, gridworld, road_graph, with_goal

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
    """ValueError for a setting out of its range (before anything runs or is written)."""
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
    if config.irl.optimizer not in maxent.OPTIMIZERS:
        raise ConfigError(f"irl.optimizer='{config.irl.optimizer}'; accepted: {list(maxent.OPTIMIZERS)}.")
    if not 0.0 < float(config.anomaly.erratic_prob) <= 1.0:
        raise ConfigError(f"anomaly.erratic_prob={config.anomaly.erratic_prob}; accepted: 0 < p <= 1.")
    if int(config.anomaly.waypoints) > mdp.num_states - 1:
        raise ConfigError(f"anomaly.waypoints={config.anomaly.waypoints}; accepted: 1..{mdp.num_states - 1}.")
    for f in config.intent.fractions:
        if not 0.0 <= float(f) <= 1.0:
            raise ConfigError(f"intent.fractions has {f}; accepted: fractions in [0, 1].")


def _state_reward(reward_SA, mdp: MDP) -> np.ndarray:
    """mean_a r(s, a), NaN at terminal states (for maps and rank correlations)."""
    values = np.asarray(reward_SA, np.float64).mean(-1)
    return np.where(np.asarray(mdp.terminal_S) > 0, np.nan, values)


def _spearman(a, b) -> float:
    keep = ~np.isnan(a)
    return stats.spearman(a[keep], b[keep])


def _irl(config, mdp, features_SAF, train, test, progress, l2=None):
    result = maxent.maxent_irl(
        mdp,
        features_SAF,
        train,
        steps=config.irl.steps,
        learning_rate=config.irl.learning_rate,
        l2=config.irl.l2 if l2 is None else l2,
        optimizer=config.irl.optimizer,
        progress=progress,
    )
    reward_SA = features_SAF @ result.weights_F
    return result, reward_SA, float(demos.log_likelihood_per_step(result.log_policy_SA, test))


def true_goal_policies(config, mdp: MDP, layout: Layout, targets) -> tuple[MDP, jax.Array]:
    """(goal MDPs, log pi_g) of the expert's reward with each target cell as the goal."""
    goal_mdps, _ = intent.goal_worlds(mdp, layout, targets)
    reward_GSA = jnp.stack(
        [reward_from_terms(config.world.reward, *with_goal(mdp, layout, g)) for g in targets]
    )
    return goal_mdps, intent.goal_log_policies(goal_mdps, reward_GSA, config.demos.temperature)


def abnormal_set(config, key, mdp: MDP, layout: Layout, expert_log_policy_SA, other_goals):
    """The injected abnormal trajectories ({kind: Trajectories}) and the detour waypoints."""
    ac = config.anomaly
    rng = np.random.default_rng(int(config.seed))
    candidates = np.flatnonzero(np.asarray(mdp.terminal_S) == 0)
    waypoints = [int(s) for s in rng.choice(candidates, int(ac.waypoints), replace=False)]
    other_mdps, other_policies = true_goal_policies(
        config, mdp, layout, other_goals or [layout.landmarks["goal"]]
    )
    way_mdps, way_policies = true_goal_policies(config, mdp, layout, waypoints)
    abnormal = anomaly.inject(
        key,
        mdp,
        expert_log_policy_SA,
        kinds=tuple(ac.kinds),
        per_kind=int(ac.per_kind),
        horizon=int(config.demos.horizon),
        other_goal_mdps=other_mdps,
        other_goal_log_policies=other_policies,
        waypoint_mdps=way_mdps,
        waypoint_log_policies=way_policies,
        erratic_prob=float(ac.erratic_prob),
    )
    return abnormal, waypoints


def intent_set(config, key, mdp: MDP, layout: Layout, goals) -> tuple[demos.Trajectories, np.ndarray]:
    """intent.per_goal expert trajectories towards each goal, and the goal index of each."""
    goal_mdps, policies = true_goal_policies(config, mdp, layout, goals)
    per_goal, parts = int(config.intent.per_goal), []
    for i, k in enumerate(jax.random.split(key, len(goals))):
        goal_mdp = jax.tree_util.tree_map(lambda x: np.asarray(x)[i], goal_mdps)
        parts.append(demos.sample_trajectories(k, goal_mdp, policies[i], per_goal, int(config.demos.horizon)))
    return demos.merge(parts), np.repeat(np.arange(len(goals)), per_goal)


def run(config, workdir: str, progress: bool = True) -> dict[str, Any]:
    """Run the experiment; returns {"workdir", "outputs", "metrics"}."""
    started = time.perf_counter()
    timings: dict[str, float] = {}
    seed = int(config.seed)
    keys = dict(
        zip(
            ("train", "test", "rationality", "anomaly", "intent"),
            jax.random.split(jax.random.PRNGKey(seed), 5),
        )
    )

    # ---- everything that can be wrong with the config, before anything is written
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
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "demos.jsonl"), "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in demos.to_lists(train))

    stages = ["irl", "rationality", "anomaly", "intent", "plots"]
    bar = tqdm(total=len(stages), desc="mdp_irl", disable=not progress)
    metrics: dict[str, Any] = {
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
            "test": test.num,
            "from_file": bool(config.demos.path),
            "mean_length": float(np.mean(train.lengths_N)),
            "reached_goal": float(np.mean(np.asarray(demos.final_states(train)) == goal)),
        },
    }

    # ---- MaxEnt IRL on the instructed features (and the one-hot baseline)
    bar.set_postfix(stage="irl")
    t = time.perf_counter()
    result, learned_SA, learned_ll = _irl(config, mdp, features_SAF, train, test, progress)
    true_map, learned_map = _state_reward(true_reward_SA, mdp), _state_reward(learned_SA, mdp)
    metrics["irl"] = {
        "features": list(feature_names),
        "weights": dict(zip(feature_names, np.asarray(result.weights_F).round(4).tolist())),
        "expert_feature_expectations": np.asarray(result.expert_fe_F).round(5).tolist(),
        "model_feature_expectations": np.asarray(result.model_fe_F).round(5).tolist(),
        "feature_expectation_gap": maxent.relative_gap(result.model_fe_F, result.expert_fe_F),
        "spearman_state_reward": _spearman(true_map, learned_map),
        "test_ll_per_step": learned_ll,
        "test_ll_per_step_true_reward": float(demos.log_likelihood_per_step(expert.log_policy_SA, test)),
        "final_objective": float(result.objective_K[-1]),
    }
    maps = {"true reward (mean over actions)": true_map, "recovered: instructed features": learned_map}
    if baseline_SAF is not None:
        base, base_SA, base_ll = _irl(
            config, mdp, baseline_SAF, train, test, progress, l2=config.irl.baseline_l2
        )
        base_map = _state_reward(base_SA, mdp)
        metrics["irl"]["baseline"] = {
            "features": list(config.baseline_features),
            "l2": float(config.irl.baseline_l2),
            "feature_expectation_gap": maxent.relative_gap(base.model_fe_F, base.expert_fe_F),
            "spearman_state_reward": _spearman(true_map, base_map),
            "test_ll_per_step": base_ll,
        }
        maps["recovered: one-hot baseline"] = base_map
    timings["irl"] = time.perf_counter() - t
    bar.update()

    # ---- limited rationality: value noise vs Boltzmann, both ways; exact belief planning vs value noise
    bar.set_postfix(stage="rationality")
    t = time.perf_counter()
    if config.rationality.enabled:
        rc = config.rationality
        u_SA, _ = rationality.utilities(mdp, true_reward_SA, successor_SA)
        k = jax.random.split(keys["rationality"], 4)
        n_train, n_test = int(rc.train), int(rc.test)
        vn = [
            rationality.sample_value_noise(k[i], mdp, u_SA, successor_SA, rc.sigma, n, horizon)
            for i, n in ((0, n_train), (1, n_test))
        ]
        bz = [
            rationality.sample_boltzmann(k[i], mdp, u_SA, rc.temperature, n, horizon)
            for i, n in ((2, n_train), (3, n_test))
        ]
        metrics["rationality"] = {
            "value_noise_agent": dict(rationality.compare(mdp, u_SA, successor_SA, *vn), true_sigma=rc.sigma),
            "boltzmann_agent": dict(
                rationality.compare(mdp, u_SA, successor_SA, *bz), true_temperature=rc.temperature
            ),
        }
        if rc.pomdp_size:
            metrics["rationality"]["pomdp"] = belief.compare(pomdp_world)
    timings["rationality"] = time.perf_counter() - t
    bar.update()

    # ---- abnormal behaviour
    bar.set_postfix(stage="anomaly")
    t = time.perf_counter()
    abnormal, waypoints = abnormal_set(
        config, keys["anomaly"], mdp, layout, expert.log_policy_SA, other_goals
    )
    found = anomaly.evaluate(result.log_policy_SA, test, abnormal)
    all_abnormal = np.concatenate(list(found["abnormal_scores"].values()))
    metrics["anomaly"] = {
        "auc": found["auc"],
        "auc_by_kind": found["auc_by_kind"],
        "normal": test.num,
        "abnormal": {k: v.num for k, v in abnormal.items()},
        "erratic_prob": float(config.anomaly.erratic_prob),
        "waypoints": waypoints,
    }
    timings["anomaly"] = time.perf_counter() - t
    bar.update()

    # ---- intent
    bar.set_postfix(stage="intent")
    t = time.perf_counter()
    ic = config.intent
    trajectories, labels = intent_set(config, keys["intent"], mdp, layout, goals)
    goal_mdps, _ = intent.goal_worlds(mdp, layout, goals)
    learned_GSA = intent.goal_features(tuple(config.features), mdp, layout, goals) @ result.weights_F
    model = intent.goal_log_policies(goal_mdps, learned_GSA)
    fractions = [float(f) for f in ic.fractions]
    accuracy = intent.accuracy_by_fraction(model, trajectories, labels, fractions)
    metrics["intent"] = {
        "goals": [list(map(int, rc)) for rc in ic.goals],
        "trajectories": len(labels),
        "fractions": fractions,
        "accuracy": accuracy.round(4).tolist(),
        "chance": 1.0 / len(goals),
    }
    timings["intent"] = time.perf_counter() - t
    bar.update()

    # ---- plots and metrics
    bar.set_postfix(stage="plots")
    plots.reward_maps(
        os.path.join(workdir, "reward_map.png"),
        layout,
        maps,
        f"Spearman(true, recovered) = {metrics['irl']['spearman_state_reward']:.3f} over non-goal states",
    )
    curves = {"all injected": (*stats.roc_curve(found["normal_scores"], all_abnormal), found["auc"])}
    for kind, scores in found["abnormal_scores"].items():
        curves[kind] = (*stats.roc_curve(found["normal_scores"], scores), found["auc_by_kind"][kind])
    plots.roc(os.path.join(workdir, "roc.png"), curves)
    plots.intent(os.path.join(workdir, "intent.png"), fractions, accuracy, 1.0 / len(goals))
    bar.update()
    bar.close()
    timings["total"] = time.perf_counter() - started
    metrics["seconds"] = {k: round(v, 2) for k, v in timings.items()}
    metrics["config"] = config.to_dict()
    with open(os.path.join(workdir, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2, default=float)
    outputs = ["metrics.json", "reward_map.png", "roc.png", "intent.png", "demos.jsonl"]
    return {"workdir": workdir, "outputs": outputs, "metrics": metrics}
