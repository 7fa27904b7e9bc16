"""Shared fixtures: the tiny arith dataset built once per test session into a temporary folder."""

import os
import shutil
import tempfile

import pytest

# The CPU backend only, here and in the subprocesses tests start (which inherit the environment):
# with the `tpu` extra installed, JAX would otherwise also probe for TPU chips on every start.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# One on-disk XLA compilation cache for the whole run: the first process to compile a computation
# writes it, and every later test, xdist worker and `jirl` subprocess with the same computation loads
# it instead of compiling again (most of a tiny model's run is compilation). The process that loads
# this file first (pytest, or xdist's controller, whose environment the workers inherit) makes the
# folder and removes it at the end. A size bound turns on JAX's file lock, so that two workers never
# read an entry the other is half-way through writing.
_OWN_XLA_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWN_XLA_CACHE:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="jirl-tests-xla-cache-")
    os.environ["JAX_COMPILATION_CACHE_MAX_SIZE"] = str(8 << 30)
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.2"


def pytest_unconfigure(config):
    if _OWN_XLA_CACHE:
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
    from jirl import data

    path = str(tmp_path_factory.mktemp("data"))
    data.get_task("arith").prepare(path, "tiny")
    return path
