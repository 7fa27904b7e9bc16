"""Shared fixtures: the tiny arith dataset built once per test session into a temporary folder."""

import pytest


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
    from jirl import data

    path = str(tmp_path_factory.mktemp("data"))
    data.get_task("arith").prepare(path, "tiny")
    return path
