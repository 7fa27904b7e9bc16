"""The stages of the MDP IRL experiment (`jirl.irl.experiment.run`), each measured on one `Setup`.

irl: MaxEnt IRL on the instructed features (and the one-hot baseline) -> weights, maps, fit;
rationality: value noise vs Boltzmann, both ways; exact belief planning vs value noise;
anomaly: ROC-AUC of injected abnormal trajectories, scored by the learned policy;
intent: which goal an observed prefix heads for, against the fraction observed;
plots: reward maps, ROC curves, intent accuracy.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jirl.irl import anomaly, belief, demos, intent, maxent, plots, rationality, soft_vi, stats
from jirl.irl.features import reward_from_terms
from jirl.irl.mdp import MDP, Layout, with_goal


@dataclasses.dataclass(frozen=True, eq=False)
class Setup:
    """Everything the stages read, built and checked from the config before anything is written."""

    mdp: MDP
    layout: Layout
    true_reward_SA: jax.Array
    features_SAF: jax.Array
    feature_names: tuple[str, ...]
    baseline_SAF: jax.Array | None  # the one-hot baseline's features (irl.baseline)
    goal: int
    goals: list[int]  # intent.goals as states
    other_goals: list[int]  # those that are not world.goal
    successor_SA: Any  # deterministic successors (rationality.enabled), else None
    pomdp_world: Any  # the belief-planning instance (rationality.pomdp_size), else None
    expert: soft_vi.Solution  # soft-optimal under the true reward
    train: demos.Trajectories
    test: demos.Trajectories
    keys: dict[str, jax.Array]  # one PRNG key per stage that samples
    horizon: int


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
        horizon=int(config.irl.get("horizon", 0)) or None,
        warm_start=bool(config.irl.get("warm_start", True)),
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


class IRLOutcome(NamedTuple):
    result: maxent.IRLResult  # on the instructed features
    maps: dict[str, np.ndarray]  # title -> mean_a r(s, a): true, recovered (and baseline)
    metrics: dict[str, Any]


def irl_stage(config, setup: Setup, progress: bool) -> IRLOutcome:
    """MaxEnt IRL on the instructed features (and the one-hot baseline): fit, weights, rank of the map."""
    mdp, train, test = setup.mdp, setup.train, setup.test
    result, learned_SA, learned_ll = _irl(config, mdp, setup.features_SAF, train, test, progress)
    true_map, learned_map = _state_reward(setup.true_reward_SA, mdp), _state_reward(learned_SA, mdp)
    names = setup.feature_names
    metrics = {
        "features": list(names),
        "weights": dict(zip(names, np.asarray(result.weights_F).round(4).tolist())),
        "expert_feature_expectations": np.asarray(result.expert_fe_F).round(5).tolist(),
        "model_feature_expectations": np.asarray(result.model_fe_F).round(5).tolist(),
        "feature_expectation_gap": maxent.relative_gap(result.model_fe_F, result.expert_fe_F),
        "spearman_state_reward": _spearman(true_map, learned_map),
        "test_ll_per_step": learned_ll,
        "test_ll_per_step_true_reward": float(
            demos.log_likelihood_per_step(setup.expert.log_policy_SA, test)
        ),
        "final_objective": float(result.objective_K[-1]),
    }
    maps = {"true reward (mean over actions)": true_map, "recovered: instructed features": learned_map}
    if setup.baseline_SAF is not None:
        base, base_SA, base_ll = _irl(
            config, mdp, setup.baseline_SAF, train, test, progress, l2=config.irl.baseline_l2
        )
        base_map = _state_reward(base_SA, mdp)
        metrics["baseline"] = {
            "features": list(config.baseline_features),
            "l2": float(config.irl.baseline_l2),
            "feature_expectation_gap": maxent.relative_gap(base.model_fe_F, base.expert_fe_F),
            "spearman_state_reward": _spearman(true_map, base_map),
            "test_ll_per_step": base_ll,
        }
        maps["recovered: one-hot baseline"] = base_map
    return IRLOutcome(result, maps, metrics)


def rationality_stage(config, setup: Setup) -> dict[str, Any]:
    """Each choice model fitted to each kind of agent (held-out nats/step), and the POMDP comparison."""
    rc, mdp, horizon = config.rationality, setup.mdp, setup.horizon
    u_SA, _ = rationality.utilities(mdp, setup.true_reward_SA, setup.successor_SA)
    k = jax.random.split(setup.keys["rationality"], 4)
    n_train, n_test = int(rc.train), int(rc.test)
    vn = [
        rationality.sample_value_noise(k[i], mdp, u_SA, setup.successor_SA, rc.sigma, n, horizon)
        for i, n in ((0, n_train), (1, n_test))
    ]
    bz = [
        rationality.sample_boltzmann(k[i], mdp, u_SA, rc.temperature, n, horizon)
        for i, n in ((2, n_train), (3, n_test))
    ]
    metrics = {
        "value_noise_agent": dict(
            rationality.compare(mdp, u_SA, setup.successor_SA, *vn), true_sigma=rc.sigma
        ),
        "boltzmann_agent": dict(
            rationality.compare(mdp, u_SA, setup.successor_SA, *bz), true_temperature=rc.temperature
        ),
    }
    if setup.pomdp_world is not None:
        metrics["pomdp"] = belief.compare(setup.pomdp_world)
    return metrics


def anomaly_stage(config, setup: Setup, result: maxent.IRLResult) -> tuple[dict[str, Any], dict[str, Any]]:
    """(scores found, metrics): injected abnormal trajectories scored by the learned policy."""
    abnormal, waypoints = abnormal_set(
        config, setup.keys["anomaly"], setup.mdp, setup.layout, setup.expert.log_policy_SA, setup.other_goals
    )
    found = anomaly.evaluate(result.log_policy_SA, setup.test, abnormal)
    metrics = {
        "auc": found["auc"],
        "auc_by_kind": found["auc_by_kind"],
        "normal": setup.test.num,
        "abnormal": {k: v.num for k, v in abnormal.items()},
        "erratic_prob": float(config.anomaly.erratic_prob),
        "waypoints": waypoints,
    }
    return found, metrics


def intent_stage(config, setup: Setup, result: maxent.IRLResult) -> tuple[np.ndarray, dict[str, Any]]:
    """(accuracy, metrics): goal recognition by the learned reward against the fraction observed."""
    mdp, layout, goals = setup.mdp, setup.layout, setup.goals
    trajectories, labels = intent_set(config, setup.keys["intent"], mdp, layout, goals)
    goal_mdps, _ = intent.goal_worlds(mdp, layout, goals)
    learned_GSA = intent.goal_features(tuple(config.features), mdp, layout, goals) @ result.weights_F
    model = intent.goal_log_policies(goal_mdps, learned_GSA)
    fractions = [float(f) for f in config.intent.fractions]
    accuracy = intent.accuracy_by_fraction(model, trajectories, labels, fractions)
    return accuracy, {
        "goals": [list(map(int, rc)) for rc in config.intent.goals],
        "trajectories": len(labels),
        "fractions": fractions,
        "accuracy": accuracy.round(4).tolist(),
        "chance": 1.0 / len(goals),
    }


def write_plots(workdir: str, setup: Setup, maps, found, accuracy, metrics: dict[str, Any]) -> None:
    """reward_map.png, roc.png and intent.png in `workdir`."""
    plots.reward_maps(
        os.path.join(workdir, "reward_map.png"),
        setup.layout,
        maps,
        f"Spearman(true, recovered) = {metrics['irl']['spearman_state_reward']:.3f} over non-goal states",
    )
    all_abnormal = np.concatenate(list(found["abnormal_scores"].values()))
    curves = {"all injected": (*stats.roc_curve(found["normal_scores"], all_abnormal), found["auc"])}
    for kind, scores in found["abnormal_scores"].items():
        curves[kind] = (*stats.roc_curve(found["normal_scores"], scores), found["auc_by_kind"][kind])
    plots.roc(os.path.join(workdir, "roc.png"), curves)
    fractions, chance = metrics["intent"]["fractions"], metrics["intent"]["chance"]
    plots.intent(os.path.join(workdir, "intent.png"), fractions, accuracy, chance)
