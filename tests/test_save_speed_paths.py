"""Issue 16 item 6: the entropy modes ("auto" / "best" / "fast"), the streaming writer and
the memory-mapped reader: same bytes as before for small models, deterministic and
bit-exact fast path, every reader bound still enforced on a mapped file."""

from __future__ import annotations

import hashlib
import mmap
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import modelzip as mz
from modelzip.io import reader, writer
from modelzip.io import safetensors_io as stio
from modelzip.io.streams import pack_symbols, unpack_symbols
from modelzip.ops.pack import pack, unpack


def _det(m: torch.nn.Module) -> torch.nn.Module:
    """Weights from a formula (no RNG), so that the bytes below are pinned."""
    with torch.no_grad():
        for i, (_, p) in enumerate(sorted(m.state_dict().items())):
            if p.dtype.is_floating_point:
                x = torch.arange(p.numel(), dtype=torch.float64).mul(0.7071 + i).sin() * 0.3
                p.copy_(x.reshape(p.shape).float())
    return m


def _lenet() -> torch.nn.Module:
    m = _det(mz.zoo.lenet300(in_features=16, hidden=(32, 16)))
    mz.prune(m, mz.Magnitude(sparsity=0.8))
    mz.cluster(m, mz.Cluster(clusters=8))
    return m


def _gpt() -> torch.nn.Module:
    m = _det(mz.zoo.tiny_gpt(d_model=32, n_layer=2, n_head=2, seq_len=16))
    mz.quantize(m, mz.WeightOnly(bits=4, group_size=16))
    return m


def _mixed() -> torch.nn.Module:
    """fp32, 4-bit packed codes, pruned + clustered codes with masks, int8: every stream
    kind, big enough for zstd to apply."""
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, 128),
                            torch.nn.ReLU(), torch.nn.Linear(128, 64))
    mz.quantize(m, mz.WeightOnly(bits=4, group_size=64, targets=["re:^0$"]))
    mz.prune(m, mz.Magnitude(sparsity=0.7, targets=["re:^2$"]))
    mz.cluster(m, mz.Cluster(clusters=16, targets=["re:^2$"]))
    return m


# SHA-256 of the bytes written before issue 16 (exhaustive search, whole file in memory):
# "auto" on a small model and "best" at any size must keep them
PINNED = {
    ("lenet", "auto"): "21c31a06b5b54d5cab6a1589ecbeea15a2afac3d60d0206c5206ce80593a6726",
    ("lenet", "none"): "17cc1c4b597c265fc66a9eaaf776dc88f98c2076a4bf546c34bd46b775c7da66",
    ("lenet", "huffman"): "584c0fa1951e4f190916587f870061419c5b69ceaccc59276deb724066212fd2",
    ("gpt", "auto"): "458e1db24fb5c43306767dfd1dbf6ef7bf4eb26724fa8eed8d4f5edfb3e03fc8",
    ("gpt", "huffman"): "5329c4a7594a6538df50e2a22ba83371d836a836585339d04c9207c3abcc4d85",
}


@pytest.mark.parametrize("name", ["lenet", "gpt"])
def test_small_models_keep_their_bytes(name, tmp_path):
    m = _lenet() if name == "lenet" else _gpt()
    for (model, mode), digest in PINNED.items():
        if model == name:
            assert hashlib.sha256(mz.dumps(m, entropy=mode)).hexdigest() == digest, mode
    auto = mz.dumps(m)
    assert mz.dumps(m, entropy="best") == auto  # small: "auto" is the exhaustive search
    mz.save(m, tmp_path / "m.mzip")  # the streaming writer gives the same bytes
    assert (tmp_path / "m.mzip").read_bytes() == auto


def test_auto_takes_the_fast_path_above_the_threshold(monkeypatch, tmp_path):
    m = _mixed()
    fast = mz.dumps(m, entropy="fast")
    assert writer.tensor_bytes(m.state_dict()) <= writer.AUTO_EXHAUSTIVE_BYTES
    assert mz.dumps(m) == mz.dumps(m, entropy="best") != fast
    monkeypatch.setattr(writer, "AUTO_EXHAUSTIVE_BYTES", 1000)
    assert mz.dumps(m) == fast == mz.dumps(m, entropy="fast")  # deterministic
    assert mz.save(m, tmp_path / "a.mzip") == len(fast)
    assert (tmp_path / "a.mzip").read_bytes() == fast
    rows = mz.read_manifest(tmp_path / "a.mzip")["streams"]
    assert {r[0] for r in rows} <= {"raw", "zstd"} and "zstd" in {r[0] for r in rows}


def test_fast_path_round_trip_is_bit_exact(tmp_path):
    m = _mixed()
    p = tmp_path / "f.mzip"
    mz.save(m, p, entropy="fast")
    back = mz.load(p, model=torch.nn.Sequential(
        torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, 128), torch.nn.ReLU(),
        torch.nn.Linear(128, 64)))
    a, b = m.state_dict(), back.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)
    x = torch.randn(3, 256)
    with torch.no_grad():
        assert torch.equal(m(x), back(x))


def test_load_maps_the_file_and_never_reads_it_whole(tmp_path, monkeypatch):
    m = _mixed()
    p = tmp_path / "m.mzip"
    mz.save(m, p, entropy="fast")
    assert p.stat().st_size >= reader.MAP_MIN_BYTES
    view = reader.map_file(p)
    assert isinstance(view.obj, mmap.mmap) and bytes(view) == p.read_bytes()
    del view

    def refuse(*a, **k):
        raise AssertionError("the file was read whole")
    monkeypatch.setattr(Path, "read_bytes", refuse)
    contents = reader.read_contents(p)
    assert all(isinstance(s, memoryview) for _, s in contents.streams)
    del contents
    back = mz.load(p, model=_mixed())
    x = torch.randn(2, 256)
    with torch.no_grad():
        assert torch.equal(m(x), back(x))
    maps = Path("/proc/self/maps")
    if maps.exists():  # Linux: once loaded, no mapping of the file is left behind
        assert str(p) not in maps.read_text()


def test_bounds_hold_on_a_mapped_file(tmp_path):
    m = _mixed()
    p = tmp_path / "m.mzip"
    mz.save(m, p, entropy="fast")
    good = p.read_bytes()
    cases = {"truncated": good[: len(good) // 2], "empty": b"", "garbage": os.urandom(1 << 17),
             "huge header": (1 << 40).to_bytes(8, "little") + good[8:]}
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0xFF  # inside a stream: its CRC no longer matches
    cases["flipped byte"] = bytes(flipped)
    for blob in cases.values():
        p.write_bytes(blob)
        with pytest.raises(mz.FormatError):
            mz.load(p, model=_mixed())
        with pytest.raises(mz.FormatError):
            mz.loads(blob, model=_mixed())
    with pytest.raises(mz.FormatError, match="no such file"):
        mz.load(tmp_path / "missing.mzip")


def test_streaming_save_failure_leaves_the_old_file(tmp_path):
    p = tmp_path / "m.mzip"
    mz.save(_lenet(), p)
    old = p.read_bytes()
    bad = _mixed()
    bad.register_buffer("z", torch.zeros(3, dtype=torch.complex64))  # after the layers
    with pytest.raises(mz.ModelzipError, match="cannot store"):
        mz.save(bad, p, entropy="fast")
    assert p.read_bytes() == old
    assert [n for n in os.listdir(tmp_path) if n.endswith(stio.TMP_SUFFIX)] == []


def test_streams_reach_the_file_one_by_one(tmp_path, monkeypatch):
    sizes: list[int] = []
    real = stio.write_all

    def spy(fd, data):
        sizes.append(len(data))
        real(fd, data)
    monkeypatch.setattr(stio, "write_all", spy)
    m = _mixed()
    n = mz.save(m, tmp_path / "m.mzip", entropy="fast")
    rows = mz.read_manifest(tmp_path / "m.mzip")["streams"]
    assert len(sizes) == len(rows) + 2  # every stream, then the manifest and the header
    assert max(sizes) < n / 2


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 8, 12, 16, 20, 32])
def test_packing_fast_paths_match_ops_pack(bits):
    rng = np.random.default_rng(bits)
    for n in (0, 1, 3, 7, 8, 9, 1001):
        s = rng.integers(0, 1 << bits, n, dtype=np.uint64)
        data = pack_symbols(s, bits)
        assert data == pack(s.astype(np.int64), bits)
        assert np.array_equal(unpack_symbols(data, n, bits).astype(np.int64),
                              unpack(data, bits, n))
        if n:
            with pytest.raises(mz.FormatError):
                unpack_symbols(data + b"\0", n, bits)


def test_unknown_mode_is_refused():
    with pytest.raises(mz.ModelzipError):
        mz.dumps(_lenet(), entropy="fastest")
