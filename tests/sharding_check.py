"""Mesh checks on 8 fake CPU devices, run by tests/test_sharding.py in a subprocess.

    python tests/sharding_check.py scan|unrolled|memory|nonfinite|adversarial  ->  one JSON object on stdout

The device count is fixed when jax starts, so these checks cannot share a process with tests
that already use one device.
"""

import os
import sys

# 8 devices; the LLVM flags halve compile times (these runs are compile-bound).
os.environ["XLA_FLAGS"] = " ".join(
    [
        os.environ.get("XLA_FLAGS", ""),
        "--xla_force_host_platform_device_count=8",
        "--xla_backend_optimization_level=0",
        "--xla_llvm_disable_expensive_passes=true",
    ]
).strip()
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "train"))

import json  # noqa: E402
import warnings  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
from configs import load_arith  # noqa: E402

from jirl import losses, models, sharding  # noqa: E402
from jirl.forward import HeadOptions  # noqa: E402
from jirl.optimizer import make_optimizer  # noqa: E402
from jirl.train import create_train_state, make_train_step  # noqa: E402
from jirl.train.state import create_sharded_train_state, sharded_state_target  # noqa: E402

# Adam's g / sqrt(v) turns reduction-order noise in small gradients (the order differs across
# meshes) into parameter noise: after 2 steps on 8 x 128 positions, up to 2.9e-5 with jax 0.10
# (1.1e-5 with the dense attention) and 5.1e-5 with jax 0.12, where the parameters move by 2.7e-3;
# at 16 positions it stayed under 1e-6.
RTOL, ATOL = 1e-5, 1e-4
METRIC_ATOL = 1e-6
# T5's encoder gets small gradients (it reaches the loss through cross-attention only), and Adam's
# g / sqrt(v) turns their reduction-order noise into parameter noise of up to ~3e-5 after 2 steps.
ATOL_ENCODER_DECODER = 5e-5
LOSSES = {"mle": {}, "iqlearn": dict(lam=0.5, gamma=0.9)}
FULL, CHUNKED, GATHERED = HeadOptions(0), HeadOptions(64, 1.0), HeadOptions(64, 0.75)
# (data, fsdp, tensor), loss, scan_layers, microbatches, preset, head: every mesh, both losses, both
# layer loops, the T5 encoder-decoder, and the head from full logits, in vocabulary chunks (259
# entries: 5 chunks of 52, sharded over `tensor`) and with the response positions gathered (96 slots
# of 128 per row). 128 positions: the decoder's attention runs in blocks (models.blocked_attention).
# The one-device reference always takes full logits.
CASES = [
    ((8, 1, 1), "mle", True, 1, "tiny", FULL),
    ((1, 8, 1), "iqlearn", True, 1, "tiny", CHUNKED),
    ((2, 2, 2), "mle", False, 1, "tiny", GATHERED),
    ((1, 2, 4), "iqlearn", False, 1, "tiny", CHUNKED),
    ((2, 2, 2), "mle", True, 2, "tiny", GATHERED),
    ((2, 2, 2), "iqlearn", True, 1, "t5_tiny", CHUNKED),
    ((1, 4, 2), "mle", False, 2, "t5_tiny", FULL),
]


def _train_cfg():
    train = load_arith().train
    # The parameter noise of Adam (see ATOL) grows with the learning rate: 1e-3 keeps it small.
    train.update(learning_rate=1e-3, warmup_steps=0)
    return train


def _batch(seed, b=8, t=128, vocab=259, encoder_decoder=False):
    """Uneven masks (a row with none, one with extra tokens) so token weighting matters; an
    encoder-decoder batch adds 12 encoder tokens per row, the last 3 of row 2 padding."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(3, vocab, (b, t + 1)).astype(np.int32)
    mask = np.zeros((b, t), np.float32)
    mask[:, t // 2 :] = 1
    mask[0, :3] = 1
    mask[1] = 0
    batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "loss_mask": mask}
    if encoder_decoder:
        batch["encoder_inputs"] = rng.integers(3, vocab, (b, 12)).astype(np.int32)
        batch["encoder_segment_ids"] = np.ones((b, 12), np.int32)
        batch["encoder_segment_ids"][2, 9:] = 0
    return batch


def _run(state, step, mesh=None, encoder_decoder=False):
    """Two steps: (state on the host, metrics per step, the params' output shardings)."""
    history = []
    for i in range(2):
        batch = _batch(i, encoder_decoder=encoder_decoder)
        batch = sharding.shard_batch(batch, mesh) if mesh is not None else jax.tree.map(np.asarray, batch)
        state, metrics = step(state, batch)
        history.append({k: float(v) for k, v in jax.device_get(metrics).items()})
    return jax.device_get(state), history, jax.tree.map(lambda x: x.sharding, state.params)


def _compare(a, b, atol=ATOL):
    """Max |a - b| over the tree and how many entries break |a - b| <= atol + RTOL |b|."""
    pairs = [(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))]
    return (
        max(float(np.max(np.abs(x - y), initial=0.0)) for x, y in pairs),
        sum(int(np.sum(np.abs(x - y) > atol + RTOL * np.abs(y))) for x, y in pairs),
    )


def equivalence(scan_layers: bool):
    """The CASES with this layer loop: 2 steps on the mesh vs 2 steps on one device."""
    tx, schedule = make_optimizer(_train_cfg())
    references = {}
    results = []
    for shape, loss_name, scan, microbatches, preset, head in CASES:
        if scan != scan_layers:
            continue
        cfg = models.get_config(preset, scan_layers=scan)
        seq2seq = cfg.is_encoder_decoder
        loss_fn = losses.get(loss_name, **LOSSES[loss_name])
        if (loss_name, scan, preset) not in references:
            graphdef, state = create_train_state(cfg, tx, seed=0)
            init = jax.device_get(state)
            reference = _run(
                state, make_train_step(graphdef, loss_fn, tx, schedule, head=FULL), encoder_decoder=seq2seq
            )
            references[loss_name, scan, preset] = init, reference
        init, (ref_state, ref_history, _) = references[loss_name, scan, preset]
        mesh = sharding.make_mesh(dict(zip(sharding.MESH_AXES, shape)))
        if shape == (2, 2, 2) and microbatches == 1:  # the jitted sharded init, once
            graphdef, state, shardings = create_sharded_train_state(cfg, tx, 0, mesh)
            init_diff = _compare(state, init)
        else:
            graphdef, _, shardings = sharded_state_target(cfg, tx, mesh)
            state, init_diff = jax.device_put(init, shardings), None
        step = make_train_step(
            graphdef, loss_fn, tx, schedule, head=head, mesh=mesh, state_shardings=shardings,
            microbatches=microbatches,
        )  # fmt: skip
        out_state, history, out_shardings = _run(state, step, mesh, encoder_decoder=seq2seq)
        same_shardings = jax.tree.map(lambda a, b: a.is_equivalent_to(b, 4), out_shardings, shardings.params)
        max_diff, violations = _compare(out_state, ref_state, ATOL_ENCODER_DECODER if seq2seq else ATOL)
        metric_diff, metric_violations = _compare(history, ref_history, METRIC_ATOL)
        results.append(
            dict(
                mesh=shape,
                preset=preset,
                loss=loss_name,
                scan_layers=scan,
                microbatches=microbatches,
                vocab_chunk=head.vocab_chunk,
                response_budget=head.response_budget,
                losses=[h["loss"] for h in history],
                ref_losses=[h["loss"] for h in ref_history],
                metric_keys=sorted(history[0]),
                ref_metric_keys=sorted(ref_history[0]),
                state_max_abs_diff=max_diff,
                state_violations=violations,
                metric_max_abs_diff=metric_diff,
                metric_violations=metric_violations,
                params_moved=_compare(out_state.params, init.params)[0],
                init_violations=None if init_diff is None else init_diff[1],
                out_shardings_as_given=all(jax.tree.leaves(same_shardings)),
                w_gate_spec=str(shardings.params["decoder" if seq2seq else "layers"]["w_gate"].spec),
            )
        )
    return {"cases": results}


def _policy_batch(seed, b=8, t=128):
    """The sampler's layout: one example per row (mask 0 rows are empty), two rows per prompt."""
    batch = _batch(100 + seed, b, t)
    rows = np.arange(b)[:, None] * np.ones((1, t), np.int32)
    batch["example_ids"] = np.where(batch["loss_mask"] > 0, rows + 1, 0).astype(np.int32)
    batch["group_ids"] = np.where(batch["loss_mask"] > 0, rows // 2 + 1, 0).astype(np.int32)
    return batch


def adversarial_equivalence():
    """GAIL's step (policy, pi_ref, discriminator) on a (2, 2, 2) mesh with vocabulary chunks vs one
    device with full logits: 2 steps on one policy batch sampled before the first, as with
    online.sample_every = 2 (the second step's ratios pi / pi_sampling are not 1)."""
    import types

    from jirl.discriminator import Discriminator
    from jirl.train import adversarial

    train_cfg = _train_cfg()
    tx, schedule = make_optimizer(train_cfg)
    cfg = models.get_config("tiny", scan_layers=True)
    disc = Discriminator(cfg, tx, schedule, copies_policy=False)
    objective = losses.get("gail", kl=0.1, mle_weight=1.0, clip=0.2)

    def run_on(mesh, head):
        run = types.SimpleNamespace(
            model=cfg, tx=tx, schedule=schedule, mesh=mesh, rules=sharding.make_rules(None),
            objective=objective, head=head, discriminator=disc,
        )  # fmt: skip
        graphdef, disc_graphdef, _, shardings = adversarial.state_target(run)
        _, policy, _ = create_sharded_train_state(cfg, tx, 0, mesh)
        state = adversarial.initial_state(run, policy, shardings, 0)
        step = adversarial.make_adversarial_step(graphdef, disc_graphdef, run, shardings)
        sample_logp = jax.jit(adversarial.make_sample_logp(graphdef))
        history = []
        policy_batch = _policy_batch(0)
        policy_batch["sample_logp"] = np.asarray(sample_logp(jax.device_get(state.params), policy_batch))
        for i in range(2):
            state, metrics = step(state, sharding.shard_batch(_batch(i), mesh),
                                  sharding.shard_batch(policy_batch, mesh))  # fmt: skip
            history.append({k: float(v) for k, v in jax.device_get(metrics).items()})
        return vars(jax.device_get(state)), history

    ref_state, ref_history = run_on(
        sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1]), FULL
    )
    out_state, history = run_on(sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2}), CHUNKED)
    metric_diff, metric_violations = _compare(history, ref_history, METRIC_ATOL)
    parts = {}
    for name in ("params", "opt_state", "reference", "discriminator", "discriminator_opt_state"):
        parts[name] = _compare(out_state[name], ref_state[name])
    return dict(
        losses=[h["loss"] for h in history],
        ref_losses=[h["loss"] for h in ref_history],
        clip_fractions=[h["clip_fraction"] for h in history],
        metric_max_abs_diff=metric_diff,
        metric_violations=metric_violations,
        state_violations={name: v for name, (_, v) in parts.items()},
        state_max_abs_diff={name: d for name, (d, _) in parts.items()},
    )


def memory():
    """Bytes per device with fsdp=8, for a model whose every sharded dimension divides 8."""
    cfg = models.ModelConfig(
        vocab_size=256,
        embed_dim=64,
        num_layers=2,
        num_heads=8,
        num_kv_heads=4,
        head_dim=8,
        mlp_dim=128,
        max_len=64,
    )
    tx, _ = make_optimizer(_train_cfg())
    mesh = sharding.make_mesh({"data": 1, "fsdp": -1, "tensor": 1})
    with warnings.catch_warnings():
        # no dimension may fall back to replicated here
        warnings.filterwarnings("error", message="logical axis", category=UserWarning)
        _, state, _ = create_sharded_train_state(cfg, tx, 0, mesh)
    out = {}
    for name, tree in (("params", state.params), ("opt_state", state.opt_state)):
        big = [x for x in jax.tree.leaves(tree) if x.ndim > 0]  # scalar counts stay replicated
        per_device = sharding.bytes_per_device(big)
        out[name] = dict(
            total_bytes=sum(x.nbytes for x in big),
            per_device_bytes=sorted(per_device.values()),
            num_devices=len(per_device),
            replicated_scalar_bytes=sum(x.nbytes for x in jax.tree.leaves(tree) if x.ndim == 0),
        )
    out["num_params"] = cfg.num_params()
    return out


def nonfinite():
    """On a (2, 2, 2) mesh: a step whose batch holds a NaN leaves the sharded state as it was."""
    cfg = models.get_config("tiny")
    tx, schedule = make_optimizer(_train_cfg())
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    graphdef, state, shardings = create_sharded_train_state(cfg, tx, 0, mesh)
    objective = losses.get("iqlearn")
    step = make_train_step(graphdef, objective, tx, schedule, mesh=mesh, state_shardings=shardings)
    before = jax.device_get(state)
    poisoned = _batch(0)
    poisoned["loss_mask"][3, -1] = np.nan
    state, metrics = step(state, sharding.shard_batch(poisoned, mesh))
    skipped = jax.device_get(state)
    state, after_good = step(state, sharding.shard_batch(_batch(1), mesh))
    unchanged = jax.tree.map(np.array_equal, (before.params, before.opt_state.inner_state),
                             (skipped.params, skipped.opt_state.inner_state))  # fmt: skip
    return dict(
        unchanged=all(jax.tree.leaves(unchanged)),
        counts=[int(metrics["nonfinite_streak"]), int(metrics["nonfinite_steps"])],
        counts_after_good=[int(after_good["nonfinite_streak"]), int(after_good["nonfinite_steps"])],
        moved_after_good=_compare(jax.device_get(state).params, skipped.params)[0],
        step=int(skipped.step),
    )


if __name__ == "__main__":
    mode = sys.argv[1]
    modes = {
        "scan": lambda: equivalence(True),
        "unrolled": lambda: equivalence(False),
        "memory": memory,
        "nonfinite": nonfinite,
        "adversarial": adversarial_equivalence,
    }
    result = modes[mode]()
    result["device_count"] = jax.device_count()
    print(json.dumps(result))
