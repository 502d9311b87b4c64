"""Fast dequantization of packed integer codes into a reusable float buffer.

Packed layers keep ``codes`` as uint8 ``[rows, cols * slot / 8]`` in a *group-blocked*
layout: within each quantization group of ``g`` columns, byte ``k`` holds the codes of
columns ``k, k + g/per, k + 2g/per, ...`` (``per = 8 / slot`` codes per byte, lowest bits
first). Unpacking is then ``per`` contiguous copies per group instead of strided writes.

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
    matmul reads its weight before the next layer dequantizes). Buffers made inside
    ``torch.inference_mode()`` are inference tensors, unusable outside it: kept apart."""
    bufs = _LOCAL.__dict__.setdefault("bufs", {})
    key = (dtype, str(device), torch.is_inference_mode_enabled())
    buf = bufs.get(key)
    if buf is None or buf.numel() < numel:
        buf = torch.empty(numel, dtype=dtype, device=device)
        bufs[key] = buf
    return buf[:numel]


def release_scratch() -> None:
    """Free this thread's scratch buffers (they are re-created on demand)."""
    _LOCAL.__dict__.pop("bufs", None)


def blockable(cols: int, slot: int, group: int) -> bool:
    """Whether ``cols`` columns in groups of ``group`` fit the blocked layout."""
    per = 8 // slot
    return group > 0 and cols % group == 0 and group % per == 0


def pack_blocked(u: torch.Tensor, slot: int, group: int) -> torch.Tensor:
    """uint8 codes ``[rows, cols]`` (< 2**slot) -> blocked packed ``[rows, cols/per]``."""
    per = 8 // slot
    rows, cols = u.shape
    v = u.to(torch.uint8).reshape(rows, cols // group, per, group // per)
    out = v[:, :, 0, :].clone()
    for i in range(1, per):
        out |= v[:, :, i, :] << (i * slot)
    return out.reshape(rows, cols // per)


def unpack_blocked(codes: torch.Tensor, slot: int, group: int) -> torch.Tensor:
    """Inverse of :func:`pack_blocked`: uint8 ``[rows, cols]``."""
    per = 8 // slot
    rows = codes.shape[0]
    c = codes.reshape(rows, -1, group // per)
    mask = (1 << slot) - 1
    parts = [(c >> (i * slot)) & mask for i in range(per)]
    return torch.stack(parts, dim=2).reshape(rows, -1)


def scaled_codes(codes: torch.Tensor, slot: int, group: int, scale: torch.Tensor,
                 out: torch.Tensor, shift: torch.Tensor | None = None) -> torch.Tensor:
    """``(code - shift) * scale`` as floats ``[rows, cols]`` written into flat buffer
    ``out``; ``scale``, ``shift``: ``[rows or 1, cols / group]``.

    Without ``shift`` the caller subtracts the zero point (``shift * scale`` per group) on
    the activation side, which costs one small matmul instead of another pass over the
    weight (fine in fp32; in bf16 the two large terms cancel, so there pass ``shift``)."""
    per = 8 // slot
    rows = codes.shape[0]
    c = codes.reshape(rows, -1, group // per)
    groups = c.shape[1]
    full = out[: rows * groups * group].view(rows, groups, per, group // per)
    if per == 1:
        full[:, :, 0, :].copy_(c)
    else:
        mask = (1 << slot) - 1
        for i in range(per):
            part = c if i == 0 else torch.bitwise_right_shift(c, i * slot)
            full[:, :, i, :].copy_(part if i == per - 1 else torch.bitwise_and(part, mask))
    if shift is not None:
        full.sub_(shift.to(out.dtype).reshape(shift.shape[0], groups, 1, 1))
    full.mul_(scale.to(out.dtype).reshape(scale.shape[0], groups, 1, 1))
    return full.view(rows, groups * group)
