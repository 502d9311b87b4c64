"""Canonical Huffman: round trips on edge cases, optimality, and strict decoding."""

from __future__ import annotations

import numpy as np
import pytest

from modelzip.errors import FormatError
from modelzip.io.streams import coder, coders
from modelzip.ops import huffman


def _roundtrip(x, alphabet):
    data = huffman.encode(x)
    y = huffman.decode(data, len(x), alphabet)
    assert np.array_equal(y, x)
    return data


@pytest.mark.parametrize("x,alphabet", [
    (np.zeros(0, np.int64), 2),                      # empty layer
    (np.array([7]), 8),                              # one symbol
    (np.full(1000, 3), 4),                           # all symbols equal
    (np.array([0, 1]), 2),
    (np.arange(1 << 16), 1 << 16),                   # 2^16 distinct symbols
    (np.random.default_rng(0).geometric(0.2, 50000) % 32, 32),
    (np.random.default_rng(1).integers(0, 256, 9000), 256),
])
def test_roundtrip_edge_cases(x, alphabet):
    data = _roundtrip(np.asarray(x, dtype=np.int64), alphabet)
    if x.size and np.all(x == x[0]):
        assert len(data) == 5  # no bits at all for a constant stream


def test_chunk_sizes_roundtrip():
    x = np.random.default_rng(2).geometric(0.3, 10007) % 16
    for chunk in (1, 2, 7, 1000, 10007, 20000):
        data = huffman.encode(x, chunk=chunk)
        assert np.array_equal(huffman.decode(data, x.size, 16), x)


def test_lengths_are_optimal_and_complete():
    counts = np.array([45, 13, 12, 16, 9, 5])  # CLRS example: cost 224
    lengths = huffman.huffman_lengths(counts)
    assert int((counts * lengths).sum()) == 224
    assert sum(2.0 ** -lengths) == 1.0


def test_length_limit(monkeypatch):
    counts = np.array([2 ** i for i in range(40)])  # depth 39 without a limit
    lengths = huffman.huffman_lengths(counts, max_len=12)
    assert lengths.max() <= 12 and sum(2.0 ** -lengths) == 1.0
    monkeypatch.setattr(huffman, "MAX_LEN", 8)
    x = np.repeat(np.arange(14), [2 ** i for i in range(14)][::-1])  # natural depth 13
    data = huffman.encode(x)
    assert data[0] == 8
    assert np.array_equal(huffman.decode(data, x.size, 16), x)


def test_canonical_codes_are_prefix_free():
    lengths = huffman.huffman_lengths(np.array([5, 1, 1, 2, 9, 3, 0, 4]))
    codes = huffman.canonical_codes(lengths)
    words = [format(int(codes[s]), f"0{lengths[s]}b") for s in range(8) if lengths[s]]
    assert not any(a != b and b.startswith(a) for a in words for b in words)


def test_compresses_skewed_data_near_entropy():
    p = np.array([0.5, 0.25, 0.125, 0.0625, 0.0625])
    x = np.random.default_rng(3).choice(5, 40000, p=p)
    data = huffman.encode(x)
    assert len(data) * 8 / x.size < 1.9  # entropy 1.875 bits, fixed width needs 3


@pytest.mark.parametrize("bad", [
    lambda d: d[:3], lambda d: d[:-1], lambda d: d + b"\x00",
    lambda d: bytes([0]) + d[1:], lambda d: bytes([25]) + d[1:],
    lambda d: d[:5] + b"\xff\xff\xff\xff" + d[9:],
])
def test_decoder_rejects_malformed(bad):
    x = np.random.default_rng(4).geometric(0.3, 5000) % 16
    data = huffman.encode(x)
    with pytest.raises(FormatError):
        huffman.decode(bad(data), x.size, 16)


def test_decoder_rejects_wrong_count_and_alphabet():
    x = np.random.default_rng(5).integers(0, 16, 3000)
    data = huffman.encode(x)
    for count, alphabet in ((x.size + 5000, 16), (x.size, 8), (0, 16)):
        with pytest.raises(FormatError):
            huffman.decode(data, count, alphabet)


@pytest.mark.parametrize("name", [c for c in coders()])
def test_every_coder_roundtrips_and_validates(name):
    rng = np.random.default_rng(6)
    for bits in (1, 5, 8, 12):
        x = rng.integers(0, 1 << bits, 777)
        data = coder(name).encode(x, bits)
        if data is None:
            continue
        assert np.array_equal(np.asarray(coder(name).decode(data, x.size, bits)), x)
        with pytest.raises(FormatError):
            coder(name).decode(data[: len(data) // 2], x.size, bits)
