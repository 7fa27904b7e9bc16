"""Ahead-of-time planning: compile the train step for a TPU slice (or N fake CPU devices) on this machine
and report what each device would hold, before anyone pays for the slice.

Per device: parameter and optimizer-state bytes (from their shardings), and the compiled step's
arguments, outputs, temporaries (activations, gradients, workspace) and code, from XLA's
`memory_analysis()`; the total against the chip's HBM gives the fits / does-not-fit verdict.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from typing import Any

from jirl.errors import ConfigError

GIB = 1024**3
# HBM per chip, GiB (public TPU specifications).
HBM_GIB_PER_CHIP = {"v2": 16, "v3": 32, "v4": 32, "v5e": 16, "v5p": 95, "v6e": 32}
# Pod-slice names count chips for these generations, TensorCores (2 per chip) for the others.
COUNTS_CHIPS = ("v5e", "v6e")
ALIASES = {"v5litepod": "v5e", "v5lite": "v5e", "v6lite": "v6e"}
TOPOLOGY_HELP = (
    "a TPU generation and chip grid like v5e:4x4, v5p:2x2x4, v6e:8x8, or a slice name like v5e-16, "
    "v5p-32, v6e-64, v4-32"
)


@dataclasses.dataclass(frozen=True)
class Topology:
    generation: str  # v2 | v3 | v4 | v5e | v5p | v6e
    grid: str  # chips per dimension, e.g. "4x4"

    @property
    def chips(self) -> int:
        return math.prod(int(n) for n in self.grid.split("x"))

    @property
    def name(self) -> str:
        return f"{self.generation}:{self.grid}"

    @property
    def slice_name(self) -> str:
        """The accelerator-type name, e.g. v5litepod-16 or v5p-32 (TensorCores for v2-v4, v5p)."""
        if self.generation in COUNTS_CHIPS:
            return f"{'v5litepod' if self.generation == 'v5e' else self.generation}-{self.chips}"
        return f"{self.generation}-{2 * self.chips}"


def _grid(chips: int, dims: int) -> str:
    """A near-cubic grid of powers of two with `chips` chips, smallest dimensions first."""
    sizes = [1] * dims
    for i in range(int(math.log2(chips))):
        sizes[i % dims] *= 2
    return "x".join(str(s) for s in sorted(sizes))


def parse_topology(name: str) -> Topology:
    """`v5e:4x4` as given; slice names (`v5e-16`, `v5p-32`) become their chip grid."""
    text = name.strip().lower()
    if m := re.fullmatch(r"([a-z0-9]+)[:=]((?:\d+x)*\d+)", text):
        generation, grid = ALIASES.get(m[1], m[1]), m[2]
    elif m := re.fullmatch(r"([a-z0-9]+)-(\d+)", text):
        generation, count = ALIASES.get(m[1], m[1]), int(m[2])
        chips = count if generation in COUNTS_CHIPS else count // 2
        if chips < 1 or chips & (chips - 1):
            raise ConfigError(
                f"topology '{name}' has {chips} chips; slices have a power of two. Give {TOPOLOGY_HELP}."
            )
        grid = _grid(chips, 2 if generation in ("v2", "v3", "v5e", "v6e") else 3)
    else:
        raise ConfigError(f"unknown topology '{name}'; give {TOPOLOGY_HELP}.")
    if generation not in HBM_GIB_PER_CHIP:
        raise ConfigError(
            f"unknown TPU generation '{generation}' in topology '{name}'; "
            f"accepted: {sorted(HBM_GIB_PER_CHIP)}."
        )
    return Topology(generation, grid)


def tpu_devices(topology: Topology) -> tuple[list[Any], float]:
    """The devices of the slice (for compiling only) and the HBM of one device in bytes."""
    # No TPU is used, only its compiler: tell libtpu the slice so it does not look for hosts and chips.
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    os.environ.setdefault("TPU_ACCELERATOR_TYPE", topology.slice_name)
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # plans may compile side by side
    try:
        from jax.experimental import topologies

        desc = topologies.get_topology_desc(topology.name, "tpu")
    except Exception as e:  # noqa: BLE001 - libtpu missing, or the grid is not a slice shape
        message = " ".join(str(e).split())[:240]
        raise ConfigError(
            f"cannot compile for TPU topology '{topology.name}' ({message}); the TPU compiler comes with "
            'the tpu extra (pip install "jirl[tpu]") and the grid must be a real slice shape.'
        ) from None
    devices = list(desc.devices)
    per_device = HBM_GIB_PER_CHIP[topology.generation] * GIB * topology.chips / len(devices)
    return devices, per_device


def _bytes_per_device(tree: Any) -> int:
    """Bytes of the largest shard of each leaf (ShapeDtypeStructs carrying NamedShardings), summed."""
    import jax
    import numpy as np

    total = 0
    for leaf in jax.tree.leaves(tree):
        shape = leaf.sharding.shard_shape(leaf.shape)
        total += int(np.prod(shape, dtype=np.int64)) * np.dtype(leaf.dtype).itemsize
    return total


def plan(config: Any, devices: list[Any], hbm_bytes: float | None) -> dict[str, Any]:
    """Compiles `config`'s train step for `devices` and returns the per-device memory plan (bytes)."""
    import jax

    from jirl import experiment, models, sharding
    from jirl.train import adversarial
    from jirl.train import lora as lora_run
    from jirl.train.state import sharded_state_target
    from jirl.train.step import run_train_step

    run = experiment.build(config, devices=devices, tokenize=False)
    cfg_model, mesh, rules = run.model, run.mesh, run.rules
    batch_size, seq_len, microbatches = run.batch_size, int(config.task.seq_len), run.microbatches
    base = None
    if run.lora is not None:  # the adapters and their optimizer state; the frozen base as an input
        t = lora_run.targets(run)
        graphdef, target, shardings, base = t.graphdef, t.state, t.shardings, t.base
        step = run_train_step(run, graphdef, shardings, t.base_shardings)
    elif run.discriminator is None:
        graphdef, target, shardings = sharded_state_target(cfg_model, run.tx, mesh, rules)
        step = run_train_step(run, graphdef, shardings)
    else:  # adversarial: the policy, its start and the discriminator in one state
        graphdef, disc_graphdef, target, shardings = adversarial.state_target(run)
        step = adversarial.make_adversarial_step(graphdef, disc_graphdef, run, shardings)
    spec = jax.ShapeDtypeStruct((batch_size, seq_len), "int32", sharding=sharding.batch_sharding(mesh, rules))
    floats = jax.ShapeDtypeStruct((batch_size, seq_len), "float32", sharding=spec.sharding)
    batch = {k: spec for k in ("inputs", "targets", "segment_ids", "positions")}
    batch["loss_mask"] = floats
    if cfg_model.is_encoder_decoder:  # the prompt side: seq_len encoder tokens per row
        batch.update({k: spec for k in ("encoder_inputs", "encoder_segment_ids", "encoder_positions")})
    out = dict(
        devices=len(devices),
        device_kind=devices[0].device_kind,
        mesh=dict(mesh.shape),
        model=config.model.preset,
        num_params=cfg_model.num_params(),
        loss=config.loss.name + (" online" if run.online is not None else ""),
        vocab_chunk=run.head.vocab_chunk,
        batch=batch_size,
        seq_len=seq_len,
        microbatches=microbatches,
        remat=cfg_model.remat,
        params_bytes=_bytes_per_device(target.params),
        optimizer_bytes=_bytes_per_device(target.opt_state),
    )
    if run.lora is not None:  # params_bytes are the adapters' (the trained parameters)
        out.update(
            lora_rank=run.lora.rank,
            lora_targets=list(run.lora.targets),
            trainable_params=models.lora.num_adapter_params(cfg_model, run.lora),
            base_dtype=run.lora.base_dtype,
            base_bytes=_bytes_per_device(base),
        )
    if run.discriminator is not None:  # pi_ref, the discriminator and its optimizer
        extra = (target.reference, target.discriminator, target.discriminator_opt_state)
        out["discriminator_and_reference_bytes"] = _bytes_per_device(extra)
    try:
        policy = batch if run.online is not None else None  # online: a policy batch of the same shape
        if run.discriminator is not None:  # with the sampler's groups and log-probabilities
            policy = dict(batch, example_ids=spec, group_ids=spec, sample_logp=floats)
        memory = compile_step(step, target, batch, policy, base).memory_analysis()
    except jax.errors.JaxRuntimeError as e:  # the TPU compiler refuses a step whose buffers exceed HBM
        if "RESOURCE_EXHAUSTED" not in str(e):
            raise
        message = " ".join(str(e).split())
        return dict(out, hbm_bytes=int(hbm_bytes or 0), fits=False, compiler_refused=message)
    arguments, outputs = int(memory.argument_size_in_bytes), int(memory.output_size_in_bytes)
    aliased, temporaries = int(memory.alias_size_in_bytes), int(memory.temp_size_in_bytes)
    code = int(memory.generated_code_size_in_bytes)
    total = arguments + outputs - aliased + temporaries + code  # donated state is updated in place
    out.update(
        arguments_bytes=arguments,
        outputs_bytes=outputs,
        aliased_bytes=aliased,
        temporary_bytes=temporaries,
        code_bytes=code,
        total_bytes=total,
    )
    if hbm_bytes:
        out.update(hbm_bytes=int(hbm_bytes), fits=bool(total <= hbm_bytes))
    return out


def compile_step(step: Any, state: Any, batch: Any, policy: Any = None, base: Any = None) -> Any:
    """The train step compiled for abstract (sharded) state, expert batch, (online) policy batch and
    (LoRA) frozen base."""
    if base is None:
        return step.lower(state, batch, policy).compile()
    return step.lower(state, batch, policy, base=base).compile()


def human(num_bytes: float) -> str:
    """Bytes as GiB (or MiB below one GiB), right-aligned."""
    if abs(num_bytes) >= GIB:
        return f"{num_bytes / GIB:8.2f} GiB"
    return f"{num_bytes / 1024**2:8.2f} MiB"


def format_plan(result: dict[str, Any], title: str) -> str:
    """The plan as a small table per device and a verdict line."""
    chunk = result.get("vocab_chunk", 0)
    lines = [
        f"{title}: {result['devices']} x {result['device_kind']}, mesh {result['mesh']}",
        f"model {result['model']} ({result['num_params'] / 1e9:.3f}B params), {result['loss']}, "
        f"batch {result['batch']} x {result['seq_len']}, microbatches {result['microbatches']}, "
        f"remat {result['remat']}, {f'vocabulary chunks of {chunk}' if chunk else 'full logits'}",
    ]
    base = result.get("base_bytes", 0)
    if "lora_rank" in result:
        lines.append(
            f"LoRA rank {result['lora_rank']} on {','.join(result['lora_targets'])}: "
            f"{result['trainable_params']:,} trainable parameters, base in {result['base_dtype']}"
        )
    lines += [
        "per device:",
        f"  {'adapters' if 'lora_rank' in result else 'parameters':<19} {human(result['params_bytes'])}",
        f"  optimizer state     {human(result['optimizer_bytes'])}",
    ]
    if "lora_rank" in result:
        lines.append(f"  frozen base         {human(base)}")
    if "compiler_refused" in result:
        lines.append(f"  -> does NOT fit: the compiler refused the step ({result['compiler_refused']})")
        return "\n".join(lines)
    other = (
        result["total_bytes"]
        - result["params_bytes"]
        - result["optimizer_bytes"]
        - base
        - result["temporary_bytes"]
    )
    lines += [
        f"  activations/temps   {human(result['temporary_bytes'])}",
        f"  batch, code, other  {human(other)}",
        f"  total               {human(result['total_bytes'])}",
    ]
    if "hbm_bytes" in result:
        verdict = "fits" if result["fits"] else "does NOT fit"
        share = result["total_bytes"] / result["hbm_bytes"]
        lines.append(f"  HBM                 {human(result['hbm_bytes'])}  -> {verdict} ({share:.0%} of HBM)")
    return "\n".join(lines)
