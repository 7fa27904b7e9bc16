"""The instructed-feature vocabulary: each name's values, composition, and unknown names."""

import numpy as np
import pytest

from jirl.irl import features as features_lib
from jirl.irl import mdp as mdp_lib


@pytest.fixture(scope="module")
def small():
    mdp, layout = mdp_lib.gridworld(
        5,
        6,
        goal=(4, 5),
        landmarks={"tower": (1, 1)},
        regions={"danger": (0, 3, 2, 6)},
        road_rows=(2,),
        seed=4,
    )
    return mdp, layout


def _column(spec, small):
    features_SAF, names = features_lib.compile_features((spec,), *small)
    assert features_SAF.dtype == np.float32 and features_SAF.shape[:2] == (30, 8)
    return np.asarray(features_SAF)[..., 0], names[0]


def test_state_features(small):
    mdp, layout = small
    mud, _ = _column("terrain(mud)", small)
    np.testing.assert_array_equal(mud, np.repeat((layout.terrain_S == 2)[:, None], 8, 1))
    distance, _ = _column("distance(tower)", small)
    rows, cols = np.divmod(np.arange(30), 6)
    np.testing.assert_allclose(distance[:, 0], np.hypot(rows - 1, cols - 1), rtol=1e-6)
    region, _ = _column("region(danger)", small)
    np.testing.assert_array_equal(region[:, 3], (rows < 2) & (cols >= 3))
    at_goal, _ = _column("at(goal)", small)
    assert at_goal[:, 0].tolist() == [0.0] * 29 + [1.0]
    ones, _ = _column("constant()", small)
    assert np.all(ones == 1.0)


def test_action_features(small):
    diagonal, _ = _column("action(diagonal)", small)
    np.testing.assert_array_equal(diagonal[0], [0, 1, 0, 1, 0, 1, 0, 1])
    straight, _ = _column("action(straight)", small)
    np.testing.assert_array_equal(straight[7], 1 - diagonal[7])
    north_east, _ = _column("action(ne)", small)
    np.testing.assert_array_equal(north_east[3], np.eye(8)[1])


def test_compositions(small):
    mdp, layout = small
    near, _ = _column("below(distance(tower), 1.5)", small)
    rows, cols = np.divmod(np.arange(30), 6)
    np.testing.assert_array_equal(near[:, 0], np.hypot(rows - 1, cols - 1) < 1.5)
    far, _ = _column("above(distance(tower), 3)", small)
    np.testing.assert_array_equal(far[:, 0], np.hypot(rows - 1, cols - 1) > 3)
    product, _ = _column("product(terrain(road), action(diagonal))", small)
    road = layout.terrain_S == 1
    np.testing.assert_array_equal(product, road[:, None] * np.array([0, 1] * 4)[None])
    enter_goal, _ = _column("next(at(goal))", small)
    next_SA = np.asarray(mdp.next_SAK[..., 0])
    np.testing.assert_array_equal(enter_goal, next_SA == 29)


def test_onehot_baseline_and_names(small):
    features_SAF, names = features_lib.compile_features(
        ("onehot(states)", "action( diagonal )", " product( terrain(mud), at(tower))"), *small
    )
    assert features_SAF.shape == (30, 8, 32)
    np.testing.assert_array_equal(np.asarray(features_SAF)[:, 3, :30], np.eye(30))
    assert names[0] == "onehot(states)[0]" and names[30] == "action( diagonal )"
    assert names[31] == "product( terrain(mud), at(tower))"


@pytest.mark.parametrize(
    "spec,message",
    [
        (
            "elevation(3)",
            r"unknown feature 'elevation' in 'elevation\(3\)'; accepted: \['terrain', 'distance'",
        ),
        ("product(terrain(mud), slope())", "unknown feature 'slope'"),
        ("terrain(lava)", r"unknown terrain 'lava'; accepted: \['grass', 'mud', 'road', 'water'\]"),
        ("distance(castle)", r"unknown landmark 'castle'; accepted: \['goal', 'tower'\]"),
        ("action(jump)", "unknown action type 'jump'"),
        ("terrain(mud", "unclosed"),
        ("terrain(mud))", "cannot parse"),
        ("terrain(mud, road)", r"terrain\(\) takes one terrain name; got 2"),
        ("below(distance(tower), far)", "'far' should be a number"),
        ("product(onehot(states), at(goal))", "one-column features"),
        ("next(action(diagonal))", "next\\(\\) takes a state feature"),
        ("terrain", "cannot parse feature 'terrain'"),
        ("product(mud, at(goal))", "'mud' is an argument, not a feature"),
        ("", "empty feature"),
    ],
)
def test_bad_features_are_named(spec, message, small):
    with pytest.raises(ValueError, match=message):
        features_lib.compile_features((spec,), *small)


def test_reward_from_terms(small):
    reward_SA = features_lib.reward_from_terms((("terrain(mud)", -2.0), ("action(diagonal)", -0.5)), *small)
    mud = small[1].terrain_S == 2
    np.testing.assert_allclose(np.asarray(reward_SA), -2.0 * mud[:, None] - 0.5 * np.array([0, 1] * 4)[None])
    with pytest.raises(ValueError, match="a reward is"):
        features_lib.reward_from_terms(("terrain(mud)",), *small)
    with pytest.raises(ValueError, match="feature list is empty"):
        features_lib.compile_features((), *small)
