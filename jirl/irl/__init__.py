"""Feature-based IRL on MDPs: instructed basis functions, limited rationality by value noise,
abnormal behaviour and intent (after Singliar and Margineantu, "Scalable Inverse Reinforcement
Learning via Instructed Feature Construction").

    mdp, layout = gridworld(12, 12, goal=(11, 11), landmarks={"hazard": (6, 3)})
    features_SAF, names = compile_features(("terrain(mud)", "distance(hazard)"), mdp, layout)
    result = maxent_irl(mdp, features_SAF, demonstrations)

One concept per module: mdp (arrays, generators, validation), soft_vi (soft / hard value iteration,
visitation), features (the vocabulary), demos (trajectories), maxent (MaxEnt IRL with optax),
rationality (Boltzmann vs value noise), belief (exact belief planning on a small instance),
anomaly, intent, stats (Spearman, ROC), plots, experiment (`jirl train` for kind == "mdp_irl").
"""

from jirl.irl.demos import Trajectories, sample_trajectories
from jirl.irl.features import VOCABULARY, compile_features, reward_from_terms
from jirl.irl.maxent import maxent_irl
from jirl.irl.mdp import MDP, Layout, gridworld, make_mdp, road_graph, stack
from jirl.irl.soft_vi import soft_value_iteration, state_action_visitation, value_iteration

__all__ = [
    "MDP",
    "Layout",
    "Trajectories",
    "VOCABULARY",
    "compile_features",
    "gridworld",
    "make_mdp",
    "maxent_irl",
    "reward_from_terms",
    "road_graph",
    "sample_trajectories",
    "soft_value_iteration",
    "stack",
    "state_action_visitation",
    "value_iteration",
]
