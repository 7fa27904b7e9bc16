"""One process of a 2-process CPU run (`worker PORT ID COUNT [online]`), or the 1-process reference
(`reference [online]`).

Started by tests/test_distributed.py. Both train the `tiny` model for 3 steps on the same global batch
of 4 rows (each worker feeds its own 2 rows) and print one JSON line: the losses and a parameter sum.
With `online`, the objective is online IQLearn: at every step each worker samples responses to the
prompts of its own rows (one global decode, `jirl.train.online.PolicySampler`) before the step.
"""

import json
import os
import sys
import types

os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from ml_collections import ConfigDict  # noqa: E402

from jirl import distributed, losses, models, sharding  # noqa: E402
from jirl.optimizer import make_optimizer  # noqa: E402
from jirl.train import online  # noqa: E402
from jirl.train.state import create_sharded_train_state  # noqa: E402
from jirl.train.step import make_train_step  # noqa: E402

BATCH, LENGTH, STEPS = 4, 32, 3


def global_batch() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    mask = np.zeros((BATCH, LENGTH), np.float32)
    mask[:, LENGTH // 2 :] = 1.0
    return {
        "inputs": rng.integers(3, 259, (BATCH, LENGTH)).astype(np.int32),
        "targets": rng.integers(3, 259, (BATCH, LENGTH)).astype(np.int32),
        "loss_mask": mask,
        "segment_ids": np.ones((BATCH, LENGTH), np.int32),
        "positions": np.tile(np.arange(LENGTH, dtype=np.int32), (BATCH, 1)),
    }


def main(argv: list[str]) -> None:
    is_online = argv[-1] == "online"
    if argv[0] == "worker":
        port, process_id, count = argv[1], int(argv[2]), int(argv[3])
        distributed.initialize(
            dict(
                enabled="true",
                coordinator_address=f"127.0.0.1:{port}",
                num_processes=count,
                process_id=process_id,
                timeout_s=120,
            )
        )
    mesh = sharding.make_mesh({"data": -1})
    train_cfg = ConfigDict(
        dict(learning_rate=1e-3, warmup_steps=1, steps=STEPS, end_lr_ratio=0.1, weight_decay=0.1,
             grad_clip=1.0, b1=0.9, b2=0.99)
    )  # fmt: skip
    tx, schedule = make_optimizer(train_cfg)
    cfg = models.get_config("tiny")
    graphdef, state, shardings = create_sharded_train_state(cfg, tx, 0, mesh)
    objective = losses.get("iqlearn", lam=0.1, gamma=0.99, alpha=0.1 if is_online else 0.0)
    step = make_train_step(graphdef, objective, tx, schedule, mesh=mesh, state_shardings=shardings)
    sampler = None
    if is_online:
        tokenizer = types.SimpleNamespace(eos_id=2, pad_id=0, vocab_size=cfg.vocab_size)
        sampler = online.PolicySampler(
            graphdef, tokenizer, every=1, max_new_tokens=8, temperature=1.0, seed=0, mesh=mesh
        )
    rows = BATCH // jax.process_count()
    local = {
        k: v[jax.process_index() * rows : (jax.process_index() + 1) * rows] for k, v in global_batch().items()
    }
    losses_seen, policy_tokens = [], []
    for i in range(STEPS):
        if sampler is None:
            state, metrics = step(state, sharding.shard_batch(local, mesh))
        else:
            policy, _ = sampler(state.params, local, i + 1)
            state, metrics = step(state, sharding.shard_batch(local, mesh), policy)
            policy_tokens.append(float(jax.device_get(metrics["policy_tokens"])))
        losses_seen.append(float(jax.device_get(metrics["loss"])))
    total = jax.jit(
        lambda p: sum(jnp.sum(jnp.abs(x)) for x in jax.tree.leaves(p)),
        out_shardings=sharding.replicated(mesh),
    )(state.params)
    print(
        json.dumps(
            dict(
                process=jax.process_index(),
                processes=jax.process_count(),
                devices=len(jax.devices()),
                losses=losses_seen,
                policy_tokens=policy_tokens,
                param_abs_sum=float(jax.device_get(total)),
            )
        )
    )


if __name__ == "__main__":
    main(sys.argv[1:])
