"""Joining JAX's distributed runtime: one process per host, all of them running the same `jirl train`.

`distributed.enabled`: "auto" (the default) joins when the run is one worker of a multi-host TPU
slice or a coordinator address is given; "true" always joins (on TPU pods and SLURM clusters JAX
finds the coordinator, process count and id itself); "false" never does. For other GPU clusters,
give `distributed.coordinator_address` (HOST:PORT of process 0), `distributed.num_processes` and
`distributed.process_id`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import jax

from jirl.errors import ConfigError

ENABLED_VALUES = {"auto": None, "true": True, "on": True, "1": True, "false": False, "off": False, "0": False}


def _enabled(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    key = str(value).strip().lower()
    if key not in ENABLED_VALUES:
        raise ConfigError(f"distributed.enabled={value!r} is not accepted; use auto, true or false.")
    return ENABLED_VALUES[key]


def on_multihost_tpu() -> bool:
    """True on a worker of a TPU slice with more than one host (the TPU runtime names them all)."""
    return len([h for h in os.environ.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]) > 1


def wants_initialize(cfg: Mapping[str, Any] | None) -> bool:
    """Whether this run should call `jax.distributed.initialize` (see the module docstring)."""
    cfg = cfg or {}
    enabled = _enabled(cfg.get("enabled", "auto"))
    if enabled is not None:
        return enabled
    return bool(cfg.get("coordinator_address")) or on_multihost_tpu()


def initialize(cfg: Mapping[str, Any] | None) -> bool:
    """Joins the distributed runtime when `cfg` (the `distributed` block) asks for it; True if it did.

    Must run before anything touches a JAX device. The timeout is generous (default 10 minutes):
    on a cluster, hosts start minutes apart.
    """
    cfg = cfg or {}
    if not wants_initialize(cfg):
        return False
    num_processes = int(cfg.get("num_processes") or 0)
    process_id = int(cfg.get("process_id", -1))
    if num_processes and not 0 <= process_id < num_processes:
        raise ConfigError(
            f"distributed.process_id={process_id} must be in [0, {num_processes}) "
            f"for distributed.num_processes={num_processes}."
        )
    kwargs: dict[str, Any] = dict(initialization_timeout=int(cfg.get("timeout_s") or 600))
    if cfg.get("coordinator_address"):
        kwargs["coordinator_address"] = cfg["coordinator_address"]
    if num_processes:
        kwargs.update(num_processes=num_processes, process_id=process_id)
    # Collectives between CPU processes (tests, CPU clusters); TPU and GPU backends ignore it.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**kwargs)
    return True
