"""Meshes, rules and shardings; the 8-device checks run in a subprocess (tests/sharding_check.py)."""

import functools
import json
import os
import subprocess
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jirl import sharding
from jirl.models import layers

CHECK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sharding_check.py")
MESH_222 = jax.sharding.AbstractMesh((2, 2, 2), sharding.MESH_AXES)
MESH_181 = jax.sharding.AbstractMesh((1, 8, 1), sharding.MESH_AXES)


@functools.lru_cache(maxsize=None)
def _eight_devices(mode: str) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu")  # the check adds 8 devices to the inherited XLA_FLAGS
    proc = subprocess.run(
        [sys.executable, CHECK, mode], capture_output=True, text=True, env=env, timeout=600, check=False
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["device_count"] == 8
    return result


@pytest.mark.parametrize("mode", ["scan", "unrolled"])
def test_meshes_train_like_one_device(mode):
    """(8,1,1), (1,8,1), (2,2,2), (1,2,4), (1,4,2): 2 steps of tiny and t5_tiny, mle and iqlearn,
    full logits, vocabulary chunks and gathered response positions = one device with full logits."""
    cases = _eight_devices(mode)["cases"]
    assert cases
    for case in cases:
        where = (
            f"{case['preset']} {case['mesh']} {case['loss']} microbatches={case['microbatches']} "
            f"vocab_chunk={case['vocab_chunk']} response_budget={case['response_budget']}"
        )
        np.testing.assert_allclose(case["losses"], case["ref_losses"], rtol=1e-5, atol=1e-6, err_msg=where)
        assert case["metric_keys"] == case["ref_metric_keys"], where
        assert case["metric_violations"] == 0, where  # every metric within rtol 1e-5, atol 1e-6
        # Params and optimizer state within rtol 1e-5, atol 1e-4 (see sharding_check.py).
        assert case["state_violations"] == 0, where
        assert case["params_moved"] > 1e-3, where
        assert case["out_shardings_as_given"], where
        assert case["init_violations"] in (None, 0), where  # the jitted sharded init = the eager init
    # Each loop on its own meshes (together: every axis alone and mixed), so that neither test needs
    # the other's subprocess (they may run on different workers).
    meshes = {"scan": {(8, 1, 1), (1, 8, 1), (2, 2, 2)}, "unrolled": {(2, 2, 2), (1, 2, 4), (1, 4, 2)}}
    assert {tuple(c["mesh"]) for c in cases} == meshes[mode]
    assert "t5_tiny" in {c["preset"] for c in cases}  # the encoder-decoder, on a mesh, in both loops
    # vocabulary chunks with the vocabulary sharded over `tensor`, in both loops
    assert any(c["vocab_chunk"] and c["mesh"][2] > 1 for c in cases)


def test_fsdp8_holds_an_eighth_of_the_state_per_device():
    result = _eight_devices("memory")
    for name in ("params", "opt_state"):
        part = result[name]
        assert part["num_devices"] == 8
        for per_device in part["per_device_bytes"]:
            assert per_device == pytest.approx(part["total_bytes"] / 8, rel=0.02), (name, part)
    assert result["params"]["total_bytes"] == 4 * result["num_params"]
    assert result["opt_state"]["total_bytes"] == 2 * result["params"]["total_bytes"]  # mu and nu


def test_a_non_finite_step_is_skipped_on_a_mesh():
    result = _eight_devices("nonfinite")
    assert result["unchanged"] and result["step"] == 1  # params and Adam state as they were
    assert result["counts"] == [1, 1] and result["counts_after_good"] == [0, 1]
    assert result["moved_after_good"] > 0


def test_gail_trains_on_a_mesh_like_one_device():
    """The adversarial step (policy, pi_ref, discriminator, both optimizers) on (2, 2, 2) with
    vocabulary chunks = one device with full logits, over a step on fresh samples (ratio 1) and one on
    the same samples after an update (ratios != 1)."""
    result = _eight_devices("adversarial")
    np.testing.assert_allclose(result["losses"], result["ref_losses"], rtol=1e-5, atol=1e-6)
    assert result["metric_violations"] == 0  # every metric within rtol 1e-5, atol 1e-6
    assert result["state_violations"] == dict.fromkeys(
        ("params", "opt_state", "reference", "discriminator", "discriminator_opt_state"), 0
    )
    assert result["state_max_abs_diff"]["reference"] == 0.0  # pi_ref never moves
    assert result["clip_fractions"][0] == 0.0  # fresh samples: every ratio is 1


def test_make_mesh_names_a_shape_that_does_not_fit():
    devices = jax.devices()[:1] * 8  # only the count matters before the mesh is built
    with pytest.raises(
        ValueError,
        match=r"mesh data=2 x fsdp=3 x tensor=1 = 6 devices, but 8 are available; sizes must multiply",
    ):
        sharding.make_mesh({"data": 2, "fsdp": 3, "tensor": 1}, devices)
    with pytest.raises(ValueError, match=r"cannot take the rest of 8 devices, as 3 does not divide 8"):
        sharding.make_mesh({"data": 3, "fsdp": -1}, devices)
    with pytest.raises(ValueError, match="at most one -1"):
        sharding.make_mesh({"data": -1, "fsdp": -1}, devices)
    with pytest.raises(ValueError, match=r"no axis/axes \['model'\]; accepted axes"):
        sharding.make_mesh({"model": 8}, devices)


def test_make_mesh_on_the_available_devices():
    mesh = sharding.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
    assert mesh.axis_names == sharding.MESH_AXES
    assert mesh.shape["data"] == jax.device_count()
    assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)


def test_rules_map_logical_axes_to_mesh_axes():
    rules = sharding.make_rules()
    assert sharding.logical_to_spec(("layers", "embed", "mlp"), (2, 32, 64), MESH_222, rules) == (
        jax.sharding.PartitionSpec(None, "fsdp", "tensor")
    )
    assert sharding.logical_to_spec(("batch", None), (8, 16), MESH_222, rules) == (
        jax.sharding.PartitionSpec(("data", "fsdp"), None)
    )
    # overrides: a mapping or a list of pairs, lists of axes allowed, new names added
    over = sharding.make_rules([("embed", ["fsdp", "tensor"]), ("mlp", None), ("experts", "data")])
    assert sharding.logical_to_spec(("embed", "mlp", "experts"), (8, 8, 2), MESH_222, over) == (
        jax.sharding.PartitionSpec(("fsdp", "tensor"), None, "data")
    )
    assert sharding.make_rules({"kv": "tensor"})["kv"] == "tensor"
    # a mesh axis is used once per array: heads takes tensor, so kv (also tensor) is replicated
    tp_kv = sharding.make_rules({"kv": "tensor"})
    assert sharding.logical_to_spec(("embed", "heads", "kv"), (32, 4, 8), MESH_222, tp_kv) == (
        jax.sharding.PartitionSpec("fsdp", "tensor", None)
    )


def test_a_dimension_that_does_not_divide_is_replicated_with_one_warning():
    sharding._warned.clear()
    with pytest.warns(UserWarning, match=r"'vocab' of size 259 is not divisible by mesh \('tensor',\) = 2"):
        spec = sharding.logical_to_spec(("vocab", "embed"), (259, 32), MESH_222)
    assert spec == jax.sharding.PartitionSpec(None, "fsdp")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sharding.logical_to_spec(("vocab", "embed"), (259, 32), MESH_222) == spec  # warned once
    assert sharding.logical_to_spec(("embed",), (16,), MESH_181) == jax.sharding.PartitionSpec("fsdp")


def test_bad_rules_and_batch_sizes_name_the_problem():
    with pytest.raises(ValueError, match=r"logical axis 'expert' has no sharding rule; known names: \["):
        sharding.logical_to_spec(("expert", "embed"), (8, 32), MESH_222)
    with pytest.raises(ValueError, match=r"mesh.rules maps 'embed' to unknown mesh axis 'model'"):
        sharding.make_rules({"embed": "model"})
    sharding.check_batch_size(8, MESH_222)
    sharding.check_batch_size(8, MESH_222, microbatches=2)
    with pytest.raises(ValueError, match=r"train.batch_size=6 is not divisible by the data-parallel size "):
        sharding.check_batch_size(6, MESH_222)
    with pytest.raises(ValueError, match=r"train.batch_size=8 / train.microbatches=4 is not divisible by"):
        sharding.check_batch_size(8, MESH_222, microbatches=4)
    with pytest.raises(ValueError, match=r"train.batch_size=8 is not divisible by train.microbatches=3"):
        sharding.check_batch_size(8, MESH_222, microbatches=3)


def test_activation_constraints_are_a_no_op_without_a_mesh():
    x_BTD = jnp.ones((2, 3, 4))
    assert layers.constrain(x_BTD, ("activation_batch", "activation_length", "activation_embed")) is x_BTD
    seen = []
    with layers.activation_sharding(lambda x, names: seen.append(names) or x):
        layers.constrain(x_BTD, ("activation_batch", None, None))
    assert seen == [("activation_batch", None, None)]
    assert layers.constrain(x_BTD, ("activation_batch",)) is x_BTD
