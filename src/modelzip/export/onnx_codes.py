"""Integer weight codes in the layouts ONNX Runtime's kernels read (pure tensor math).

modelzip stores weight-only codes per group of inputs as ``w = (u - zero) * scale`` with
signed symmetric codes (zero 0), unsigned asymmetric codes, or binary {0, 1} = {-1, +1}.
ONNX Runtime's MatMulNBits / GatherBlockQuantized read unsigned 2-, 4- or 8-bit codes in
blocks of a power-of-two size >= 16, with zero point 2^(bits-1) unless given. Codes of
other widths go into the next container exactly (3 bits -> 4, 1 bit -> 2, 5-7 -> 8).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Codes:
    """Weight-only codes of a 2-D weight ``[N, K]`` as modelzip holds them."""

    codes: torch.Tensor          # [N, K] int (signed when symmetric, unsigned otherwise)
    scale: torch.Tensor          # [rows, groups] float (rows 1: per tensor)
    zero: torch.Tensor | None    # [rows, groups] int when asymmetric
    group: int | None            # None: per channel, -1: per tensor, else inputs per group
    bits: int
    symmetric: bool
    binary: bool


@dataclass
class Blocked:
    """Codes laid out for ORT: unsigned ``u`` [N, K], scales/zeros per block [N, nb]."""

    u: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor | None
    block: int
    bits: int


def container_bits(bits: int) -> int:
    return 2 if bits <= 2 else 4 if bits <= 4 else 8


def _pow2_divisor(n: int, cap: int = 256) -> int:
    b = 1
    while n % (b * 2) == 0 and b * 2 <= cap:
        b *= 2
    return b


def choose_block(k: int, group: int | None, need_divides: bool = False) -> int | None:
    """A power-of-two block (>= 16) whose boundaries keep each block in one group, or None.

    With one group per row any block works (the row's scale repeats); ``need_divides``
    also asks the block to divide ``k`` (GatherBlockQuantized)."""
    if group in (None, -1) or group >= k:
        block = _pow2_divisor(k, 128) if need_divides else (128 if k >= 128 else 16)
        while not need_divides and block < k and block < 128:
            block *= 2
    else:
        block = _pow2_divisor(group)
        if need_divides and k % block:
            return None
    return block if block >= 16 else None


def blocked(c: Codes, block: int) -> Blocked:
    """Re-express ``c`` in ``block``-sized blocks of unsigned container codes."""
    n, k = c.codes.shape
    cb = container_bits(c.bits)
    nb = -(-k // block)
    one_group = c.group in (None, -1) or c.group >= k
    scale = c.scale.expand(n, -1) if c.scale.shape[0] == 1 else c.scale
    zero = None if c.zero is None else (c.zero.expand(n, -1) if c.zero.shape[0] == 1
                                        else c.zero)
    if one_group:
        reps_idx = torch.zeros(nb, dtype=torch.long)
    else:
        reps_idx = torch.arange(nb) * block // c.group
    scales = scale[:, reps_idx].float()
    codes = c.codes.to(torch.int32)
    if c.binary:
        u, zeros = 2 * codes - 1 + (1 << (cb - 1)), None
    elif c.symmetric:
        u, zeros = codes + (1 << (cb - 1)), None
    else:
        u, zeros = codes, zero[:, reps_idx].to(torch.int32)
    return Blocked(u, scales, zeros, block, cb)


def dequantized(b: Blocked) -> torch.Tensor:
    """The float weight [N, K] that ORT computes from ``b`` (for the self-check)."""
    n, k = b.u.shape
    idx = torch.arange(k) // b.block
    zero = (1 << (b.bits - 1)) if b.zeros is None else b.zeros[:, idx]
    return (b.u - zero).float() * b.scales[:, idx]


def pack_last(u: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack unsigned codes along the last axis, low-order bits first (uint8)."""
    per = 8 // bits
    pad = (-u.shape[-1]) % per
    if pad:
        u = torch.nn.functional.pad(u, (0, pad))
    u = u.to(torch.int32).reshape(*u.shape[:-1], -1, per)
    shifts = torch.arange(0, 8, bits, dtype=torch.int32)
    return (u << shifts).sum(-1).to(torch.uint8)


def matmul_nbits_tensors(b: Blocked) -> tuple[torch.Tensor, torch.Tensor,
                                              torch.Tensor | None]:
    """(B [N, nb, block*bits/8] uint8, scales [N*nb], zero points packed per row or None)."""
    n, k = b.u.shape
    nb = b.scales.shape[1]
    u = b.u
    if nb * b.block > k:
        fill = (1 << (b.bits - 1)) if b.zeros is None else b.zeros[:, -1:]
        u = torch.cat([u, torch.zeros(n, nb * b.block - k, dtype=u.dtype) + fill], 1)
    packed = pack_last(u.reshape(n, nb, b.block), b.bits)
    zeros = None if b.zeros is None else pack_last(b.zeros, b.bits).reshape(-1)
    return packed.contiguous(), b.scales.reshape(-1).contiguous(), zeros


def gather_tensors(b: Blocked) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(data [V, D*bits/8] uint8, scales [V, D/block], zero points packed or None)."""
    zeros = None if b.zeros is None else pack_last(b.zeros, b.bits)
    return pack_last(b.u, b.bits).contiguous(), b.scales.contiguous(), zeros
