"""Seeded fuzzing: mutated .mzip files raise ModelzipError, never anything else or hang."""

from __future__ import annotations

import json
import random
import signal
import struct

import pytest
import torch

import modelzip as mz
from modelzip.cli import main as cli_main
from modelzip.io import fuzz
from modelzip.io import safetensors_io as stio
from modelzip.io.fuzz import MUTATIONS, mutate
from modelzip.ops import huffman


class _Hang(Exception):
    pass


def _alarm(signum, frame):
    raise _Hang()


@pytest.fixture(scope="module")
def valid_files(tmp_path_factory):
    """A pruned + clustered + Huffman-coded MLP and a quantized conv net."""
    d = tmp_path_factory.mktemp("fuzz")
    torch.manual_seed(0)
    a = mz.zoo.lenet300(in_features=64)
    mz.prune(a, mz.Magnitude(sparsity=0.9, scope="global"))
    mz.cluster(a, mz.Cluster(clusters=16))
    b = mz.zoo.lenet5(image_size=8)
    mz.prune(b, mz.Magnitude(sparsity=0.5))
    mz.quantize(b, mz.WeightOnly(bits=4, group_size=None))
    paths = [d / "a.mzip", d / "b.mzip"]
    mz.save(a, paths[0])
    mz.save(b, paths[1], half=True)
    return [p.read_bytes() for p in paths]


def test_mutations_raise_modelzip_error_only(valid_files, tmp_path):
    rng = random.Random(1234)
    seen = dict.fromkeys(MUTATIONS, 0)
    old = signal.signal(signal.SIGALRM, _alarm)
    try:
        for i in range(300):
            name, blob = mutate(valid_files[i % 2], rng)
            seen[name] += 1
            p = tmp_path / "m.mzip"
            p.write_bytes(blob)
            signal.alarm(20)
            try:
                mz.load(p)
            except mz.ModelzipError:
                pass
            except _Hang:
                pytest.fail(f"case {i} ({name}) hung")
            finally:
                signal.alarm(0)
    finally:
        signal.signal(signal.SIGALRM, old)
    assert all(v > 15 for v in seen.values())


# ----------------------------------------------- issue 13: every reproduced reader defect


def _edited(blob: bytes, edit) -> bytes:
    manifest, streams, meta = fuzz.open_v2(blob)
    edit(manifest, streams)
    return fuzz.close_v2(manifest, streams, meta)


def _refused(blob: bytes, match: str = "") -> mz.FormatError:
    with pytest.raises(mz.FormatError, match=match) as info:
        mz.loads(blob)
    return info.value


@pytest.fixture(scope="module")
def gpt_file():
    torch.manual_seed(0)
    c = mz.zoo.tiny_gpt(vocab_size=16, seq_len=8, d_model=16, n_layer=1, n_head=2)
    mz.quantize(c, mz.Int8())
    return mz.dumps(c)


@pytest.fixture(scope="module")
def packed_file():
    torch.manual_seed(0)
    b = mz.zoo.lenet5(image_size=8, channels=(4, 8), hidden=32)
    mz.quantize(b, mz.WeightOnly(bits=4, group_size=16, packed=True))
    return mz.dumps(b)


def test_zstd_frame_declaring_a_huge_size(valid_files):
    def edit(m, s):
        m["streams"][0][0] = "zstd"
        s[0] = fuzz.zstd_frame(1 << 40)
    _refused(_edited(valid_files[0], edit), "zstd")


def test_integers_over_4300_digits(valid_files):
    big = "9" * 5000
    manifest, streams, meta = fuzz.open_v2(valid_files[0])
    text = json.dumps(manifest).replace('"version": 2', f'"version": {big}', 1)
    _refused(fuzz.close_v2(manifest, streams, meta, text), "JSON")
    blob = valid_files[0]
    (n,) = struct.unpack("<Q", blob[:8])
    head = blob[8: 8 + n].replace(b'"data_offsets":[0,', b'"data_offsets":[' + big.encode()
                                  + b",", 1)
    _refused(struct.pack("<Q", len(head)) + head + blob[8 + n:], "JSON")


def test_v1_dict_dtype(valid_files):
    arrays, meta = stio.loads(fuzz.to_v1(valid_files[0]))
    manifest = json.loads(meta["modelzip"])
    manifest["tensors"][0]["dtype"] = {"a": 1}
    _refused(stio.dumps(arrays, {"modelzip": json.dumps(manifest)}), "dtype")


def test_layer_specs_are_bounded(packed_file, gpt_file):
    def zero_group(m, s):
        next(iter(m["modules"].values()))["spec"]["group_size"] = 0
    _refused(_edited(packed_file, zero_group))

    def huge(m, s):
        next(iter(m["modules"].values()))["spec"]["in_features"] = 1 << 26
    _refused(_edited(gpt_file, huge), "does not match")


def test_single_symbol_stream_declaring_33m_elements(valid_files):
    def edit(m, s):
        e = next(e for e in m["tensors"] if e.get("codec") == "dense")  # fp32 bias
        e["shape"] = [33_554_432]
        m["streams"][e["data"]][0], m["streams"][e["data"]][2] = "huffman", 4 * 33_554_432
        s[e["data"]] = struct.pack("<BI", 0, 1)
    _refused(_edited(valid_files[0], edit), "declares")


def test_architecture_records_are_bounded(valid_files):
    def zoo(m, s):
        m["arch"]["kwargs"].update(in_features=65536, hidden=[8192, 8192])
    _refused(_edited(valid_files[0], zoo), "does not match")
    sp = mz.nas.space("mlp", input_shape=[1, 4, 4], num_classes=3)
    d = mz.nas.build(sp, {"depth": 1, "width_0": 16, "activation": "relu"})

    def nas(m, s):
        m["arch"]["space"]["choices"]["depth"] = [1, 2, 1 << 31]
    _refused(_edited(mz.dumps(d), nas), "choices")


def test_huffman_lane_longer_than_the_writer_makes():
    m = mz.zoo.lenet300(in_features=256, hidden=(256, 8))
    mz.quantize(m, mz.WeightOnly(bits=4, group_size=None))
    blob = mz.dumps(m, entropy="huffman")

    def edit(man, s):
        i = max(range(len(s)), key=lambda k: man["streams"][k][2] if man["streams"][k][1]
                <= 16 else 0)
        name, bits, count = man["streams"][i][:3]
        from modelzip.io.streams import coder
        sym = coder(name).decode(s[i], count, bits)
        man["streams"][i][0] = "huffman"
        s[i] = huffman.encode(sym, chunk=min(count, huffman.MAX_CHUNK))
    _refused(_edited(blob, edit), "lanes")


def test_edited_extra_attrs_and_dtypes_fail_at_load(gpt_file, valid_files):
    def heads(m, s):
        m["extra"]["blocks.0.attn"] = [4, 8]
    _refused(_edited(gpt_file, heads), "fails on a")

    def attrs(m, s):
        fqn = next(iter(m["attrs"]))
        m["attrs"][fqn]["in_features"] += 1
    _refused(_edited(valid_files[0], attrs))

    for key in ("weight_codes", "weight_codebook", "bias", "weight_mask"):
        for dt in ("float32", "float16", "int8", "int64", "bool"):
            def dtype(m, s, key=key, dt=dt):
                next(e for e in m["tensors"] if e["key"].endswith(key))["dtype"] = dt
            try:  # refused at load, or a model that runs: never a failure in forward
                model = mz.loads(_edited(valid_files[0], dtype))
            except mz.FormatError:
                continue
            with torch.no_grad():
                model(torch.zeros(1, 64))


def test_inspect_reports_what_load_rejects(valid_files, tmp_path, capsys):
    def edit(m, s):
        m["tensors"][0]["codec"] = {"x": 1}
    p = tmp_path / "bad.mzip"
    p.write_bytes(_edited(valid_files[0], edit))
    with pytest.raises(mz.FormatError):
        mz.load(p)
    assert cli_main(["inspect", str(p)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "error" in err


def test_targeted_families_raise_modelzip_error_only(valid_files, gpt_file):
    rng = random.Random(99)
    families = ("semantic", "big_int", "zstd_size", "huge_stream", "long_lane", "v1")
    for i in range(120):
        blob = (valid_files[0], valid_files[1], gpt_file)[i % 3]
        _, mutated = mutate(blob, rng, families)
        try:
            mz.loads(mutated)
        except mz.ModelzipError:
            pass
