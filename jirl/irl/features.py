"""Instructed features: a small vocabulary the analyst composes by name, compiled to features_SAF.

An experiment lists features as strings; swapping features is editing that list:

    ("terrain(mud)", "terrain(water)", "below(distance(hazard), 2.5)", "action(diagonal)",
     "product(terrain(road), action(straight))", "next(region(danger))", "onehot(states)")

Vocabulary (state features broadcast over actions; each gives one column unless noted):

    terrain(NAME)       1 where the state's terrain is NAME
    distance(LANDMARK)  Euclidean distance from the state to a named landmark (in cells / map units)
    region(NAME)        1 inside a named region
    at(LANDMARK)        1 at the landmark's state (an indicator)
    action(TYPE)        1 for actions of TYPE: a move name (n, ne, ...), 'diagonal' or 'straight'
    constant()          1 everywhere
    product(F, G)       F * G
    below(F, x)         1 where F < x;   above(F, x): 1 where F > x
    next(F)             E[F(s') | s, a]: F of the state an action leads to
    onehot(states)      one column per state (the generic baseline, F = S)

The reward is linear in the columns: r(s, a) = w . phi(s, a).
"""

from __future__ import annotations

import re
from typing import Sequence

import jax.numpy as jnp
import numpy as np

from jirl.errors import ConfigError
from jirl.irl.mdp import MDP, Layout

VOCABULARY = (
    "terrain",
    "distance",
    "region",
    "at",
    "action",
    "constant",
    "product",
    "below",
    "above",
    "next",
    "onehot",
)
DIAGONAL = ("ne", "se", "sw", "nw")
STRAIGHT = ("n", "e", "s", "w")

_TOKEN = re.compile(r"\s*(?:([A-Za-z_][\w\-]*)|(-?\d+(?:\.\d*)?(?:[eE]-?\d+)?)|([(),]))")


def _tokens(text: str) -> list[str]:
    pos, out = 0, []
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ConfigError(
                f"cannot parse feature '{text}' at '{text[pos:]}'; accepted: NAME(ARG, ...) with names from "
                f"{list(VOCABULARY)}."
            )
        out.append(m.group(m.lastindex))
        pos = m.end()
    return out


def parse(text: str):
    """A feature string as a tree: (name, [args]) with args trees, identifiers (str) or numbers."""
    tokens = _tokens(text)

    def term(i):
        if i >= len(tokens) or tokens[i] in "(),":
            raise ConfigError(
                f"cannot parse feature '{text}'; accepted: NAME(ARG, ...), e.g. 'terrain(mud)'."
            )
        name = tokens[i]
        if i + 1 >= len(tokens) or tokens[i + 1] != "(":
            return name, i + 1  # a bare identifier or number argument
        args, i = [], i + 2
        while tokens[i : i + 1] != [")"]:
            if i >= len(tokens):
                raise ConfigError(f"feature '{text}' has an unclosed '('.")
            arg, i = term(i)
            args.append(arg)
            if i >= len(tokens):
                raise ConfigError(f"feature '{text}' has an unclosed '('.")
            if tokens[i : i + 1] == [","]:
                i += 1
            elif tokens[i : i + 1] != [")"]:
                raise ConfigError(f"feature '{text}': expected ',' or ')' after argument {len(args)}.")
        return (name, args), i + 1

    if not tokens:
        raise ConfigError(f"empty feature name; accepted: NAME(ARG, ...) with names from {list(VOCABULARY)}.")
    tree, end = term(0)
    if end != len(tokens) or not isinstance(tree, tuple):
        raise ConfigError(f"cannot parse feature '{text}'; accepted: NAME(ARG, ...), e.g. 'terrain(mud)'.")
    return tree


def _number(text: str, value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"feature '{text}': '{value}' should be a number.") from None


def _evaluate(tree, mdp: MDP, layout: Layout, text: str) -> np.ndarray:
    """The tree's columns as float64 [S, A, F]."""
    num_states, num_actions = mdp.num_states, mdp.num_actions
    if not isinstance(tree, tuple):
        raise ConfigError(f"feature '{text}': '{tree}' is an argument, not a feature; write e.g. '{tree}()'.")
    name, args = tree

    def state(values_S):
        return np.broadcast_to(np.asarray(values_S, np.float64)[:, None, None], (num_states, num_actions, 1))

    def need(count, what):
        if len(args) != count:
            raise ConfigError(f"feature '{text}': {name}() takes {what}; got {len(args)} argument(s).")

    def choose(kind, options):
        need(1, f"one {kind} name")
        if not isinstance(args[0], str) or args[0] not in options:
            raise ConfigError(f"feature '{text}': unknown {kind} '{args[0]}'; accepted: {sorted(options)}.")
        return args[0]

    if name == "terrain":
        index = list(layout.terrain_names).index(choose("terrain", layout.terrain_names))
        return state(layout.terrain_S == index)
    if name == "distance":
        target = layout.coords_S2[layout.landmarks[choose("landmark", layout.landmarks)]]
        return state(np.linalg.norm(layout.coords_S2 - target, axis=-1))
    if name == "region":
        return state(layout.regions[choose("region", layout.regions)])
    if name == "at":
        return state(np.arange(num_states) == layout.landmarks[choose("landmark", layout.landmarks)])
    if name == "action":
        kinds = {"diagonal": DIAGONAL, "straight": STRAIGHT, **{a: (a,) for a in layout.action_names}}
        members = kinds[choose("action type", kinds)]
        column_A = np.isin(np.asarray(layout.action_names), members).astype(np.float64)
        return np.broadcast_to(column_A[None, :, None], (num_states, num_actions, 1))
    if name == "constant":
        need(0, "no arguments")
        return np.ones((num_states, num_actions, 1))
    if name == "onehot":
        choose("basis", ("states",))
        return np.broadcast_to(np.eye(num_states)[:, None, :], (num_states, num_actions, num_states))
    if name == "product":
        need(2, "two features")
        left, right = (_evaluate(arg, mdp, layout, text) for arg in args)
        if left.shape[-1] != 1 or right.shape[-1] != 1:
            raise ConfigError(f"feature '{text}': product() takes one-column features (not onehot).")
        return left * right
    if name in ("below", "above"):
        need(2, "a feature and a threshold")
        values = _evaluate(args[0], mdp, layout, text)
        threshold = _number(text, args[1])
        return (values < threshold if name == "below" else values > threshold).astype(np.float64)
    if name == "next":
        need(1, "one feature")
        values_SAF = _evaluate(args[0], mdp, layout, text)
        if not np.all(values_SAF == values_SAF[:, :1]):
            raise ConfigError(f"feature '{text}': next() takes a state feature (not an action feature).")
        values_SF = values_SAF[:, 0]
        next_SAK, prob_SAK = np.asarray(mdp.next_SAK), np.asarray(mdp.prob_SAK, np.float64)
        return np.einsum("sak,sakf->saf", prob_SAK, values_SF[next_SAK])
    raise ConfigError(f"unknown feature '{name}' in '{text}'; accepted: {list(VOCABULARY)}.")


def compile_features(spec: Sequence[str], mdp: MDP, layout: Layout) -> tuple[jnp.ndarray, tuple[str, ...]]:
    """(features_SAF float32, column names) for a list of feature strings."""
    if isinstance(spec, str):
        spec = (spec,)
    if not spec:
        raise ConfigError("the feature list is empty; name at least one feature, e.g. ('terrain(mud)',).")
    if layout.num_states != mdp.num_states:
        raise ConfigError(f"layout has {layout.num_states} states, the MDP {mdp.num_states}.")
    columns, names = [], []
    for text in spec:
        if not isinstance(text, str):
            raise ConfigError(f"features are strings like 'terrain(mud)'; got {text!r}.")
        block = _evaluate(parse(text), mdp, layout, text)
        columns.append(block)
        if block.shape[-1] == 1:
            names.append(" ".join(text.split()))
        else:
            names.extend(f"{text}[{i}]" for i in range(block.shape[-1]))
    return jnp.asarray(np.concatenate(columns, -1), jnp.float32), tuple(names)


def reward_from_terms(terms: Sequence[Sequence], mdp: MDP, layout: Layout) -> jnp.ndarray:
    """reward_SA = sum_i w_i phi_i for terms ((feature string, weight), ...)."""
    try:
        spec = tuple(t for t, _ in terms)
        weights = [float(w) for _, w in terms]
    except (TypeError, ValueError):
        raise ConfigError(
            f"a reward is ((feature, weight), ...), e.g. (('terrain(mud)', -3.0),); got {terms!r}."
        ) from None
    features_SAF, _ = compile_features(spec, mdp, layout)
    if features_SAF.shape[-1] != len(weights):
        raise ConfigError("a reward term must be a one-column feature (not onehot(states)).")
    return features_SAF @ jnp.asarray(weights, jnp.float32)
