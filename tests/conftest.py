from __future__ import annotations

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    # MNIST-1D generation is cached per machine; tests share one cache folder per session.
    cache = os.environ.get("FIREPBT_CACHE")
    if cache is None:
        monkeypatch.setenv("FIREPBT_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    yield


# `make test` runs the suite in two parts. First everything but the Ray cluster tests on two
# processes (pytest-xdist, --dist loadgroup): each test file stays on one process (its module
# fixtures run once), and the files that start a Ray instance share one process, so two never
# start side by side. Then the Ray executor and cluster tests (marked `serial`) alone: they
# kill nodes and actors and wait seconds for Ray to replace them, which a second process
# training next to them on a 2-core machine can push past their deadlines.
_SERIAL_FILES = {"test_ray.py", "test_ray_cluster.py"}
_RAY_FILES = {"test_cli.py", "test_gpu.py", "test_simulated_cuda.py"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        name = item.path.name
        if name in _SERIAL_FILES:
            item.add_marker(pytest.mark.serial)
        item.add_marker(pytest.mark.xdist_group("ray" if name in _RAY_FILES else name))
