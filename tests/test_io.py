"""The .mzip container: round trips, coders, compact manifest, strict and atomic I/O."""

from __future__ import annotations

import json
import os

import pytest
import torch
from torch import nn

import modelzip as mz
from modelzip.cli import main as cli_main
from modelzip.errors import WriteError
from modelzip.io import safetensors_io as stio
from modelzip.io.inspect import layer_table, stream_symbols
from modelzip.io.mzip import read_contents


def _compressed(k=16):
    torch.manual_seed(0)
    m = mz.zoo.lenet300(in_features=64)
    mz.prune(m, mz.Magnitude(sparsity=0.9))
    mz.cluster(m, mz.Cluster(clusters=k))
    return m


def test_huffman_beats_fixed_width_and_loads_exactly(tmp_path):
    m = _compressed()
    raw = mz.save(m, tmp_path / "raw.mzip", entropy="none")
    huff = mz.save(m, tmp_path / "h.mzip", entropy="huffman")
    assert huff < raw
    c = read_contents(tmp_path / "h.mzip")
    assert {row[0] for row in c.manifest["streams"]} <= {"raw", "huffman"}
    assert "huffman" in {row[0] for row in c.manifest["streams"]}
    x = torch.randn(3, 1, 8, 8)
    for name in ("raw.mzip", "h.mzip"):
        assert torch.equal(mz.load(tmp_path / name)(x), m(x))


def test_manifest_is_compressed_and_valid(tmp_path):
    p = tmp_path / "m.mzip"
    mz.save(_compressed(), p, info={"note": "x"})
    arrays, meta = stio.loads(p.read_bytes())
    assert set(arrays) == {"manifest", "data"} and meta["version"] == "2"
    man = mz.read_manifest(p)
    assert len(arrays["manifest"]) < len(json.dumps(man)) / 2
    assert man["info"] == {"note": "x"} and man["version"] == 2


def test_inspect_table(tmp_path, capsys):
    m = _compressed(k=32)
    p = tmp_path / "m.mzip"
    mz.save(m, p, entropy="huffman")
    rows, totals = layer_table(read_contents(p))
    assert [r["layer"] for r in rows] == ["1.weight", "3.weight", "5.weight"]
    assert all(abs(r["weight_bits"] - 5) < 0.2 for r in rows)
    assert totals["weight_bits_huffman"] <= 5.0 + 1e-9
    assert abs(totals["kept"] - 0.1) < 0.01
    assert totals["file_bytes"] == p.stat().st_size
    assert cli_main(["inspect", str(p), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["total"]["ratio"] > 1
    kinds = {s["role"] for s in stream_symbols(read_contents(p))}
    assert kinds == {"index", "values"}


def test_reads_version_1_files(tmp_path):
    # a version-1 file as written by modelzip 0.1: manifest JSON in the metadata
    m = mz.zoo.lenet300(in_features=64)
    sd = {k: v for k, v in m.state_dict().items()}
    import zlib
    streams, tensors = {}, []
    for i, (k, v) in enumerate(sd.items()):
        raw = v.numpy().tobytes()
        streams[f"s{i}"] = raw
        tensors.append({"key": k, "dtype": "float32", "shape": list(v.shape), "param": True,
                        "codec": "dense", "store": "float32",
                        "data": {"id": f"s{i}", "kind": "values", "coder": "raw",
                                 "raw_len": len(raw), "len": len(raw),
                                 "crc32": zlib.crc32(raw)}})
    man = {"format": "modelzip", "version": 1, "arch": m._mz_arch, "tensors": tensors,
           "info": {}, "modules": {}, "reparam": {}, "extra": {}, "attrs": {}}
    p = tmp_path / "v1.mzip"
    p.write_bytes(stio.dumps(streams, {"modelzip": json.dumps(man)}))
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(mz.load(p)(x), m(x))


def test_foreign_corrupt_and_missing_files(tmp_path):
    bad = tmp_path / "foreign.mzip"
    bad.write_bytes(stio.dumps({"w": b"1234"}, {"other": "x"}))
    with pytest.raises(mz.FormatError):
        mz.load(bad)
    bad.write_bytes(b"not a safetensors file at all")
    with pytest.raises(mz.FormatError):
        mz.load(bad)
    with pytest.raises(mz.FormatError):
        mz.load(tmp_path / "nope.mzip")
    p = tmp_path / "ok.mzip"
    mz.save(_compressed(), p)
    blob = bytearray(p.read_bytes())
    blob[-3] ^= 0xFF  # inside the last stream: its CRC32 must catch it
    p.write_bytes(bytes(blob))
    with pytest.raises(mz.FormatError, match="checksum"):
        mz.load(p)


def test_wrong_model_raises(tmp_path):
    p = tmp_path / "m.mzip"
    mz.save(_compressed(), p)
    with pytest.raises(mz.ModelzipError):
        mz.load(p, model=mz.zoo.lenet5(image_size=8))


def test_atomic_write_leaves_no_temp_files(tmp_path):
    p = tmp_path / "m.mzip"
    mz.save(_compressed(), p)
    first = p.read_bytes()

    class Bad(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(2))
            self.register_buffer("c", torch.zeros(2, dtype=torch.complex64))

    with pytest.raises(mz.ModelzipError):
        mz.save(Bad(), p)
    assert p.read_bytes() == first
    assert os.listdir(tmp_path) == ["m.mzip"]
    with pytest.raises(WriteError):
        mz.save(_compressed(), tmp_path / "missing-dir" / "m.mzip")


def test_int64_buffers_and_empty_tensors(tmp_path):
    m = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    m[1].num_batches_tracked += 12345
    m.register_buffer("empty", torch.zeros(0))
    p = tmp_path / "bn.mzip"
    mz.save(m, p)
    fresh = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    fresh.register_buffer("empty", torch.ones(0))
    mz.load(p, model=fresh)
    assert int(fresh[1].num_batches_tracked) == 12345
    assert torch.equal(fresh[0].weight, m[0].weight)


@pytest.mark.parametrize("entropy", ["none", "huffman", "lzma", "auto"])
def test_every_entropy_choice_roundtrips(tmp_path, entropy):
    m = _compressed(k=8)
    mz.save(m, tmp_path / "m.mzip", entropy=entropy)
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(mz.load(tmp_path / "m.mzip")(x), m(x))


def test_unknown_entropy_name():
    with pytest.raises(mz.FormatError):
        mz.save(_compressed(), "/tmp/never.mzip", entropy="gzip9000")
