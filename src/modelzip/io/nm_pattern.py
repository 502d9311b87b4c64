"""N:M sparsity patterns stored as one combination index per group.

A mask in which every run of ``m`` consecutive entries keeps exactly ``k`` is stored as
the rank of each group's pattern among the C(m, k) possible ones, packed in
ceil(log2 C(m, k)) bits: 3 bits per 4 weights for 2:4 (0.75 bit/weight, against 1 for a
bitmask), 7 bits per 8 for 4:8.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np

from ..errors import FormatError
from ..ops.pack import pack, packed_nbytes, unpack

GROUP_SIZES = (4, 8, 16)


@cache
def _tables(m: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(pattern int -> rank or -1, rank -> pattern int) for m-bit patterns with k ones."""
    pats = np.arange(1 << m, dtype=np.int64)
    ones = np.zeros_like(pats)
    for b in range(m):
        ones += (pats >> b) & 1
    by_rank = pats[ones == k]
    rank = np.full(1 << m, -1, dtype=np.int64)
    rank[by_rank] = np.arange(by_rank.size)
    return rank, by_rank


def _bits(m: int, k: int) -> int:
    return max(1, math.ceil(math.log2(math.comb(m, k))))


def nm_encode(flat: np.ndarray) -> tuple[dict, bytes] | None:
    """The smallest N:M encoding of bool ``flat``, or None if it has no N:M structure."""
    best: tuple[dict, bytes] | None = None
    for m in GROUP_SIZES:
        if flat.size == 0 or flat.size % m:
            continue
        groups = flat.reshape(-1, m).astype(np.int64)
        counts = groups.sum(1)
        k = int(counts[0])
        if not 0 < k < m or np.any(counts != k):
            continue
        bits = _bits(m, k)
        if best is not None and packed_nbytes(groups.shape[0], bits) >= len(best[1]):
            continue
        ints = groups @ (1 << np.arange(m, dtype=np.int64))
        ranks = _tables(m, k)[0][ints]
        best = ({"layout": "nm", "n": k, "m": m, "bits": bits,
                 "kept": int(k * groups.shape[0])}, pack(ranks, bits))
    return best


def nm_decode(meta: dict, data: bytes, n: int) -> np.ndarray:
    """Bool mask of ``n`` entries from :func:`nm_encode`'s output; validates everything."""
    m, k, bits = meta.get("m"), meta.get("n"), meta.get("bits")
    if not (m in GROUP_SIZES and isinstance(k, int) and not isinstance(k, bool)
            and 0 < k < m and bits == _bits(m, k) and n % m == 0):
        raise FormatError("bad N:M pattern parameters")
    groups = n // m
    if len(data) != packed_nbytes(groups, bits):
        raise FormatError("N:M pattern stream has the wrong size")
    ranks = unpack(data, bits, groups)
    by_rank = _tables(m, k)[1]
    if ranks.size and (ranks.min() < 0 or ranks.max() >= by_rank.size):
        raise FormatError("N:M pattern index out of range")
    ints = by_rank[ranks.astype(np.int64)]
    return ((ints[:, None] >> np.arange(m)) & 1).astype(bool).reshape(-1)
