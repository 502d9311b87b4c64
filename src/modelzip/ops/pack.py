"""Packing of integer codes of 1..32 bits into bytes, and back, exactly.

Codes are unsigned in ``[0, 2**bits)``; signed codes are offset by ``2**(bits-1)`` first.
Bit order: little-endian within each code, codes laid out back to back (LSB-first bytes).
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import FormatError


def packed_nbytes(n: int, bits: int) -> int:
    return (n * bits + 7) // 8


def to_unsigned(codes: np.ndarray, bits: int, signed: bool) -> np.ndarray:
    """Map signed codes into ``[0, 2**bits)`` (uint64) and check their range."""
    c = np.asarray(codes).astype(np.int64).ravel()
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if c.size and (c.min() < lo or c.max() > hi):
        raise ValueError(f"codes outside the {bits}-bit {'signed' if signed else 'unsigned'} range")
    return (c - lo).astype(np.uint64)


def pack(codes: np.ndarray, bits: int, signed: bool = False) -> bytes:
    """Pack integer ``codes`` at ``bits`` bits each into a byte string."""
    if not 1 <= bits <= 32:
        raise ValueError(f"bits must be in 1..32, got {bits}")
    u = to_unsigned(codes, bits, signed)
    if bits == 8:
        return u.astype(np.uint8).tobytes()
    if bits == 16:
        return u.astype("<u2").tobytes()
    if bits == 32:
        return u.astype("<u4").tobytes()
    if bits == 4:
        if u.size % 2:
            u = np.concatenate([u, np.zeros(1, np.uint64)])
        pairs = u.reshape(-1, 2).astype(np.uint8)
        return (pairs[:, 0] | (pairs[:, 1] << 4)).tobytes()
    shifts = np.arange(bits, dtype=np.uint64)
    bitmat = ((u[:, None] >> shifts) & np.uint64(1)).astype(np.uint8)
    return np.packbits(bitmat.ravel(), bitorder="little").tobytes()


def unpack(data: bytes | np.ndarray, bits: int, n: int, signed: bool = False) -> np.ndarray:
    """Inverse of :func:`pack`: ``n`` codes as int64. Raises FormatError on a short buffer."""
    if not 1 <= bits <= 32:
        raise FormatError(f"bits must be in 1..32, got {bits}")
    buf = np.frombuffer(bytes(data), dtype=np.uint8) if not isinstance(data, np.ndarray) else data
    need = packed_nbytes(n, bits)
    if buf.size != need:
        raise FormatError(f"packed stream has {buf.size} bytes, expected {need}")
    if bits == 8:
        u = buf.astype(np.int64)
    elif bits == 16:
        u = buf.view("<u2").astype(np.int64)
    elif bits == 32:
        u = buf.view("<u4").astype(np.int64)
    elif bits == 4:
        u = np.stack([buf & 0x0F, buf >> 4], axis=1).ravel()[:n].astype(np.int64)
    else:
        bitmat = np.unpackbits(buf, bitorder="little")[: n * bits].reshape(n, bits)
        weights = (1 << np.arange(bits, dtype=np.int64))
        u = bitmat.astype(np.int64) @ weights
    u = u[:n]
    return u - (1 << (bits - 1)) if signed else u


def bits_needed(codes: np.ndarray, signed: bool) -> int:
    """Smallest width that holds every code (at least 1)."""
    c = np.asarray(codes).astype(np.int64)
    if c.size == 0:
        return 1
    if signed:
        m = max(int(-c.min()) - 1 if c.min() < 0 else 0, int(c.max()))
        return max(1, int(m).bit_length() + 1)
    return max(1, int(c.max()).bit_length())


def pack_rows(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack unsigned codes ``[rows, cols]`` (< 2**bits, bits in 1/2/4/8) into uint8
    ``[rows, ceil(cols*bits/8)]``, LSB first: the in-memory layout of packed layers."""
    if bits not in (1, 2, 4, 8):
        raise ValueError(f"row packing needs bits in 1, 2, 4, 8, got {bits}")
    per = 8 // bits
    rows, cols = codes.shape
    pad = (-cols) % per
    c = torch.nn.functional.pad(codes.to(torch.uint8), (0, pad)).reshape(rows, -1, per)
    out = torch.zeros(rows, c.shape[1], dtype=torch.uint8)
    for i in range(per):
        out |= c[:, :, i] << (i * bits)
    return out


def unpack_rows(packed: torch.Tensor, bits: int, cols: int) -> torch.Tensor:
    """Inverse of :func:`pack_rows`: uint8 codes ``[rows, cols]``."""
    per = 8 // bits
    mask = (1 << bits) - 1
    shifts = torch.arange(0, 8, bits, dtype=torch.uint8, device=packed.device)
    parts = (packed.unsqueeze(-1) >> shifts) & mask
    return parts.reshape(packed.shape[0], -1)[:, :cols] if per > 1 else packed[:, :cols]
