"""Shared fixtures: the tiny arith dataset built once per test session into a temporary folder.

Also the environment of every test process (pytest, xdist's workers, the `jirl` and other
subprocesses the tests start, which all inherit it), set up once by the first process to load this
file (pytest itself, or xdist's controller): the CPU backend, fast compilation and one compilation
cache for the whole run.
"""

import os
import shutil
import subprocess
import sys
import tempfile

import pytest

# The CPU backend only: with the `tpu` extra installed, JAX would otherwise also probe for TPU chips
# on every start.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# Compile fast: the tests' models are tiny, so compiling them costs far more than running them.
# XLA's slow optimisation passes are off (its backend at -O0, LLVM's expensive passes skipped), and
# XLA:CPU emits its fusions the older way (its MLIR fusion emitters take about twice as long to
# compile a train step). Together they about halve a short training run. The numerics stay what the
# tests check: bitwise comparisons compare programs built the same way, the rest hold to a
# tolerance. Benchmarks and real runs keep XLA's defaults.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
FAST_COMPILE_FLAG = "--xla_cpu_use_fusion_emitters=false"


def _xla_accepts(flag: str) -> bool:
    """Whether this jaxlib's XLA knows `flag` (an unknown flag in XLA_FLAGS aborts every process)."""
    env = dict(os.environ, XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} {flag}")
    probe = [sys.executable, "-c", "import jax; jax.numpy.zeros(1).block_until_ready()"]
    return subprocess.run(probe, env=env, capture_output=True, timeout=300).returncode == 0


# One on-disk XLA compilation cache for the whole run: the first process to compile a computation
# writes it, and every later test, worker and subprocess with the same computation loads it instead
# of compiling again. The first process makes the folder and removes it at the end. A size bound
# turns on JAX's file lock, so that two workers never read an entry the other is half-way through.
_FIRST_PROCESS = "JIRL_TESTS_XLA_CACHE" not in os.environ
if _FIRST_PROCESS:
    os.environ["JIRL_TESTS_XLA_CACHE"] = tempfile.mkdtemp(prefix="jirl-tests-xla-cache-")
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.environ["JIRL_TESTS_XLA_CACHE"])
    os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(8 << 30))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
    if FAST_COMPILE_FLAG not in os.environ.get("XLA_FLAGS", "") and _xla_accepts(FAST_COMPILE_FLAG):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE_FLAG}".strip()


def pytest_unconfigure(config):
    if _FIRST_PROCESS:
        shutil.rmtree(os.environ.pop("JIRL_TESTS_XLA_CACHE"), ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
    from jirl import data

    path = str(tmp_path_factory.mktemp("data"))
    data.get_task("arith").prepare(path, "tiny")
    return path
