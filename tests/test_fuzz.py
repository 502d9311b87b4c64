"""Seeded fuzzing: mutated .mzip files raise ModelzipError, never anything else or hang."""

from __future__ import annotations

import random
import signal

import pytest
import torch

import modelzip as mz
from modelzip.io.fuzz import MUTATIONS, mutate


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
    assert all(v > 50 for v in seen.values())
