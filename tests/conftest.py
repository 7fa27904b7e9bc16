"""Shared fixtures: the tiny arith dataset built once per test session into a temporary folder."""

import os

import pytest

# The CPU backend only, here and in the subprocesses tests start (which inherit the environment):
# with the `tpu` extra installed, JAX would otherwise also probe for TPU chips on every start.
os.environ.setdefault("JAX_PLATFORMS", "cpu")


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
    from jirl import data

    path = str(tmp_path_factory.mktemp("data"))
    data.get_task("arith").prepare(path, "tiny")
    return path
