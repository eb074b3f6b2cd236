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


# `make test` runs the suite on two processes (pytest-xdist, --dist loadgroup): each test file
# stays on one process (its module fixtures run once), and the files that start Ray share one
# process, so two Ray instances never start side by side (they would share ports and the
# machine's two cores).
_RAY_FILES = {"test_ray.py", "test_ray_cluster.py", "test_cli.py", "test_gpu.py",
              "test_simulated_cuda.py"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        name = item.path.name
        item.add_marker(pytest.mark.xdist_group("ray" if name in _RAY_FILES else name))
