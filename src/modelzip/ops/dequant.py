"""Fast dequantization of row-packed integer codes into a reusable float buffer.

Packed layers keep ``codes`` as uint8 ``[rows, ceil(cols * bits / 8)]`` (LSB first, see
:func:`modelzip.ops.pack.pack_rows`) and call :func:`dequant_rows` before each matmul.
The float weight is written into a per-thread scratch buffer that is reused by every
layer, so that inference allocates (and page-faults) no new weight-sized tensor per call.
"""

from __future__ import annotations

import threading

import torch

_LOCAL = threading.local()


def scratch(numel: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A 1-D buffer of at least ``numel`` elements, shared by this thread's packed layers.

    Callers must consume the buffer before the next call (true for inference: each
    matmul reads its weight before the next layer dequantizes)."""
    bufs = _LOCAL.__dict__.setdefault("bufs", {})
    key = (dtype, str(device))
    buf = bufs.get(key)
    if buf is None or buf.numel() < numel:
        buf = torch.empty(numel, dtype=dtype, device=device)
        bufs[key] = buf
    return buf[:numel]


def release_scratch() -> None:
    """Free this thread's scratch buffers (they are re-created on demand)."""
    _LOCAL.__dict__.pop("bufs", None)


def unpack_into(codes: torch.Tensor, bits: int, out: torch.Tensor) -> None:
    """Write the unsigned codes of ``codes`` (uint8 ``[rows, nbytes]``) as floats into
    ``out`` (``[rows, nbytes * 8 // bits]``, any float dtype)."""
    per = 8 // bits
    if per == 1:
        out.copy_(codes)
        return
    o3 = out.view(codes.shape[0], codes.shape[1], per)
    mask = (1 << bits) - 1
    for i in range(per):
        part = codes if i == 0 else torch.bitwise_right_shift(codes, i * bits)
        if i < per - 1:
            part = torch.bitwise_and(part, mask)
        o3[:, :, i].copy_(part)


def dequant_rows(codes: torch.Tensor, bits: int, cols: int, scale: torch.Tensor,
                 shift: torch.Tensor | None, group_size: int | None, binary: bool,
                 out: torch.Tensor) -> torch.Tensor:
    """Float weight ``[rows, cols]`` = (code - shift) * scale, written into ``out``.

    ``scale`` / ``shift``: ``[rows or 1, groups]`` (shift = offset + zero point, None
    for binary codes, which mean -1/+1). ``out`` is a flat buffer of at least
    ``rows * nbytes * 8 // bits`` elements. Returns a ``[rows, cols]`` view of it.
    """
    rows, width = codes.shape[0], codes.shape[1] * (8 // bits)
    full = out[: rows * width].view(rows, width)
    unpack_into(codes, bits, full)
    w = full[:, :cols] if width != cols else full
    s = scale.to(out.dtype)
    if group_size not in (None, -1) and s.shape[1] > 1:
        g = w.view(rows, -1, group_size)  # callers guarantee cols % group_size == 0
        if binary:
            g.mul_(2).sub_(1)
        else:
            g.sub_(shift.to(out.dtype).unsqueeze(-1))
        g.mul_(s.unsqueeze(-1))
        return w
    if binary:
        w.mul_(2).sub_(1)
    else:
        w.sub_(shift.to(out.dtype))
    return w.mul_(s)
