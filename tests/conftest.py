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
