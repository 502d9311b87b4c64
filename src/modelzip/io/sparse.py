"""Sparsity-pattern codecs: bitmask, and relative indices with filler symbols.

Relative indices (Han et al. 2016): each kept position is stored as the gap from the last
one in ``b`` bits. Symbol ``2**b - 1`` is a filler: "skip 2**b - 1 positions, keep none",
so any gap fits. The width ``b`` is chosen per layer to minimise the stream.
"""

from __future__ import annotations

import numpy as np

from ..errors import FormatError
from ..ops.pack import pack, packed_nbytes, unpack
from .nm_pattern import nm_decode, nm_encode


def bitmask_encode(mask: np.ndarray) -> bytes:
    return np.packbits(mask.astype(bool).ravel(), bitorder="little").tobytes()


def bitmask_decode(data: bytes, n: int) -> np.ndarray:
    buf = np.frombuffer(data, dtype=np.uint8)
    if buf.size != (n + 7) // 8:
        raise FormatError(f"bitmask has {buf.size} bytes, expected {(n + 7) // 8}")
    return np.unpackbits(buf, bitorder="little")[:n].astype(bool)


def relidx_symbols(positions: np.ndarray, bits: int) -> np.ndarray:
    """Gap symbols (with fillers) for sorted kept ``positions`` at width ``bits``."""
    filler = (1 << bits) - 1
    gaps = np.diff(np.concatenate([[-1], positions.astype(np.int64)])) - 1
    nfill = gaps // filler
    rem = gaps - nfill * filler
    counts = nfill + 1
    out = np.full(int(counts.sum()), filler, dtype=np.int64)
    ends = np.cumsum(counts) - 1
    out[ends] = rem
    return out


def relidx_count(positions: np.ndarray, bits: int) -> int:
    filler = (1 << bits) - 1
    gaps = np.diff(np.concatenate([[-1], positions.astype(np.int64)])) - 1
    return int((gaps // filler).sum()) + positions.size


def relidx_decode_symbols(symbols: np.ndarray, bits: int, n: int) -> np.ndarray:
    """Kept positions from gap symbols; validates that they stay inside ``n``."""
    filler = (1 << bits) - 1
    sym = symbols.astype(np.int64)
    is_fill = sym == filler
    advance = np.where(is_fill, filler, sym + 1)
    pos = np.cumsum(advance) - 1
    kept = pos[~is_fill]
    if kept.size and (kept[-1] >= n or kept[0] < 0):
        raise FormatError("relative index stream points past the end of the tensor")
    return kept


def best_relidx_bits(positions: np.ndarray) -> tuple[int, int]:
    """(bits, stream bytes) minimising the relative-index stream."""
    best = (8, packed_nbytes(relidx_count(positions, 8), 8))
    for b in range(1, 17):
        size = packed_nbytes(relidx_count(positions, b), b)
        if size < best[1]:
            best = (b, size)
    return best


def encode_pattern(mask: np.ndarray) -> tuple[dict, bytes]:
    """The smaller of bitmask and relative indices for a bool ``mask``."""
    flat = mask.astype(bool).ravel()
    positions = np.flatnonzero(flat)
    bm = bitmask_encode(flat)
    bits, size = best_relidx_bits(positions)
    nm = nm_encode(flat)  # N:M structure: one combination index per group
    if nm is not None and len(nm[1]) < min(size, len(bm)):
        return nm
    if size < len(bm):
        syms = relidx_symbols(positions, bits)
        return {"layout": "relidx", "bits": bits, "symbols": int(syms.size),
                "kept": int(positions.size)}, pack(syms, bits)
    return {"layout": "bitmask", "kept": int(positions.size)}, bm


def decode_pattern(meta: dict, data: bytes | np.ndarray, n: int) -> np.ndarray:
    """Bool mask of ``n`` entries from :func:`encode_pattern`'s output.

    For the relative-index layout ``data`` may also be the already unpacked symbols
    (the .mzip reader hands them over straight from the entropy decoder).
    """
    layout = meta.get("layout")
    if layout == "bitmask":
        mask = bitmask_decode(data, n)
    elif layout == "relidx":
        bits, count = meta.get("bits"), meta.get("symbols")
        if not isinstance(bits, int) or not 1 <= bits <= 16 or not isinstance(count, int) \
                or count < 0 or count > 2 * n + 16:
            raise FormatError("bad relative-index parameters")
        syms = data if isinstance(data, np.ndarray) else unpack(data, bits, count)
        if syms.size != count or (syms.size and int(syms.max()) >= 1 << bits):
            raise FormatError("relative-index symbols do not match their parameters")
        kept = relidx_decode_symbols(syms, bits, n)
        if kept.size > 1 and np.any(np.diff(kept) <= 0):
            raise FormatError("relative indices are not increasing")
        mask = np.zeros(n, dtype=bool)
        mask[kept] = True
    elif layout == "nm":
        mask = nm_decode(meta, data, n)
    else:
        raise FormatError(f"unknown sparsity layout {layout!r}")
    if int(np.count_nonzero(mask)) != meta.get("kept"):
        raise FormatError("sparsity pattern does not match its recorded count")
    return mask
