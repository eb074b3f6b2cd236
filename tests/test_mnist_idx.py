"""The real-MNIST task on small IDX files written by the test."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from firepbt.errors import ConfigError
from firepbt.tasks.mnist import FILES, MNISTTrainable, load_mnist, read_idx


def write_idx(path, array, code=0x08, gz=False):
    header = bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">i", d) for d in array.shape)
    data = header + array.astype(">u1" if code == 0x08 else array.dtype).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


def fake_mnist(folder, n_train=600, n_test=100, gz=False):
    rng = np.random.default_rng(0)
    folder.mkdir(exist_ok=True)
    labels = rng.integers(0, 10, n_train + n_test)
    images = np.zeros((n_train + n_test, 28, 28), dtype=np.uint8)
    for i, lab in enumerate(labels):  # a learnable pattern: a bright bar whose row is the label
        images[i, 2 + 2 * lab: 4 + 2 * lab, 4:24] = 255
    images = np.clip(images + rng.integers(0, 40, images.shape), 0, 255).astype(np.uint8)
    write_idx(folder / FILES["train_images"], images[:n_train], gz=gz)
    write_idx(folder / FILES["train_labels"], labels[:n_train].astype(np.uint8), gz=gz)
    write_idx(folder / FILES["test_images"], images[n_train:], gz=gz)
    write_idx(folder / FILES["test_labels"], labels[n_train:].astype(np.uint8), gz=gz)
    return images, labels


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trip(tmp_path, gz):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = write_idx(tmp_path / "x-idx3-ubyte", arr, gz=gz)
    np.testing.assert_array_equal(read_idx(path), arr)
    ints = np.array([1, -2, 300], dtype=">i4")
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "i", ints, code=0x0C)), ints)


def test_read_idx_errors(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01")
    with pytest.raises(ConfigError, match="IDX magic"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">i", 10) + b"\x00" * 3)
    with pytest.raises(ConfigError, match="10 bytes of data for shape"):
        read_idx(tmp_path / "short")
    (tmp_path / "code").write_bytes(bytes([0, 0, 0x42, 1]) + struct.pack(">i", 1) + b"\x00")
    with pytest.raises(ConfigError, match="type code"):
        read_idx(tmp_path / "code")


def test_missing_file_is_named(tmp_path):
    fake_mnist(tmp_path / "m")
    (tmp_path / "m" / FILES["test_labels"]).unlink()
    with pytest.raises(ConfigError, match="t10k-labels-idx1-ubyte"):
        load_mnist(tmp_path / "m")
    with pytest.raises(ConfigError, match="data_dir must be a folder with the four MNIST"):
        load_mnist(tmp_path / "nowhere")


def test_cli_refuses_incomplete_folder_before_writing(tmp_path, capsys):
    from firepbt.cli import main

    fake_mnist(tmp_path / "m")
    (tmp_path / "m" / FILES["train_images"]).unlink()
    code = main(["run", "mnist", "--data-dir", str(tmp_path / "m"), "--store",
                 str(tmp_path / "s"), "--no-progress"])
    assert code == 2 and "train-images-idx3-ubyte" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_mnist_task_trains_on_gzipped_files(tmp_path):
    fake_mnist(tmp_path / "m", gz=True)
    data = load_mnist(tmp_path / "m")
    assert data.x_train.shape == (500, 1, 28, 28) and data.x_val.shape == (100, 1, 28, 28)
    assert float(data.x_train.max()) <= 1.0
    t = MNISTTrainable(0, data_dir=str(tmp_path / "m"))
    before = t.evaluate()
    t.train({"lambda": 0.2}, 60)
    # the label is written into the image as a bar: 60 steps learn it far above chance
    assert t.evaluate() > max(0.5, before)
    assert 0.0 <= t.test() <= 1.0


def test_fire_runs_and_resumes_on_the_mnist_task(tmp_path):
    from firepbt.api import resume, run
    from firepbt.config import ExperimentConfig

    fake_mnist(tmp_path / "m", n_train=400, n_test=50)
    cfg = ExperimentConfig(task="mnist", method="fire", workers=12, steps=30, ready_interval=10,
                           eval_interval=5, task_options={"data_dir": str(tmp_path / "m")})
    full = run(cfg, tmp_path / "full")
    run(cfg, tmp_path / "part", max_rounds=1)
    resumed = resume(tmp_path / "part")
    assert full.finished and resumed.finished
    assert (full.best_worker, full.best_value, full.best_test) == (
        resumed.best_worker, resumed.best_value, resumed.best_test)
