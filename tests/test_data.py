"""Datasets: digits split, IDX reader validation, look-up order, text windows."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

import modelzip as mz

from .conftest import data_root, needs_fashion


def _write_idx(path, arr: np.ndarray, gz: bool = True) -> None:
    code = {np.uint8: 0x08}[arr.dtype.type]
    raw = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


def _fake_mnist(folder, n_train=20, n_test=10, size=28):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz",
                   rng.integers(0, 256, (n, size, size), dtype=np.uint8))
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz",
                   rng.integers(0, 10, (n,), dtype=np.uint8))


def test_digits_split_is_fixed_and_disjoint():
    a, b = mz.data.digits(), mz.data.digits()
    xa = a.train.dataset.tensors[0]
    assert torch.equal(xa, b.train.dataset.tensors[0])
    assert len(a.train.dataset) + len(a.test.dataset) == 1797
    assert mz.data.info(a) == {"name": "digits", "num_classes": 10, "input_shape": [1, 8, 8]}


def test_idx_reader_reads_what_was_written(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "a.gz", arr)
    _write_idx(tmp_path / "b", arr, gz=False)
    assert np.array_equal(mz.data.read_idx(tmp_path / "a.gz"), arr)
    assert np.array_equal(mz.data.read_idx(tmp_path / "b"), arr)


@pytest.mark.parametrize("damage", ["magic", "truncate", "extra", "gzip", "dims"])
def test_idx_reader_rejects_damaged_files(tmp_path, damage):
    arr = np.zeros((2, 3, 4), dtype=np.uint8)
    raw = bytes([0, 0, 8, 3]) + struct.pack(">3I", 2, 3, 4) + arr.tobytes()
    if damage == "magic":
        raw = b"\x01" + raw[1:]
    elif damage == "truncate":
        raw = raw[:-5]
    elif damage == "extra":
        raw = raw + b"\x00"
    elif damage == "dims":
        raw = raw[:3] + b"\x00" + raw[4:]
    data = gzip.compress(raw)
    if damage == "gzip":
        data = data[:-8]
    (tmp_path / "f.gz").write_bytes(data)
    with pytest.raises(mz.DataError):
        mz.data.read_idx(tmp_path / "f.gz")


def test_fashion_lookup_order_and_loading(tmp_path, monkeypatch):
    _fake_mnist(tmp_path / "env" / "fashion-mnist")
    _fake_mnist(tmp_path / "root" / "fashion-mnist", n_train=7)
    monkeypatch.setenv("MODELZIP_DATA", str(tmp_path / "env"))
    assert len(mz.data.fashion_mnist().train.dataset) == 20
    split = mz.data.fashion_mnist(root=tmp_path / "root")
    assert len(split.train.dataset) == 7
    x, y = next(iter(split.train))
    assert x.shape[1:] == (1, 28, 28) and y.dtype == torch.long


def test_missing_dataset_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELZIP_DATA", str(tmp_path))
    monkeypatch.setattr(mz.data.datasets, "SYSTEM_ROOT", tmp_path / "none")
    with pytest.raises(mz.DataError, match="not found"):
        mz.data.mnist()


def test_corrupted_dataset_file_is_a_data_error(tmp_path):
    folder = tmp_path / "mnist"
    _fake_mnist(folder)
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8bnot gzip")
    with pytest.raises(mz.DataError):
        mz.data.mnist(root=tmp_path)


def test_text_windows_are_shifted_targets(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("abcdefghij" * 100)
    split = mz.data.text(p, seq_len=16, batch_size=4)
    x, y = next(iter(split.train))
    assert x.shape == (4, 16) and torch.equal(x[:, 1:], y[:, :-1])
    assert mz.data.info(split)["vocab"] == "abcdefghij"


@needs_fashion
def test_real_fashion_mnist_counts():
    split = mz.data.fashion_mnist(root=data_root(), test_limit=100)
    assert len(split.train.dataset) == 60000 and len(split.test.dataset) == 100
