"""Affine quantization math: q = clamp(round(x / s) + z, qmin, qmax); x' = (q - z) * s.

Granularity: per tensor (``axis=None``), per output channel (``axis=0``) or per group of
``group_size`` consecutive inputs within each output channel. Weights of any rank are seen
as ``[out, -1]``. Symmetric mode uses zero point 0 and codes in ``[-(2^(b-1)-1), 2^(b-1)-1]``
(restricted range, so that the scale is exact for both signs).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class QSpec:
    """How a tensor is quantized."""

    bits: int = 8
    symmetric: bool = True
    group_size: int | None = None  # None: per output channel; -1: per tensor

    @property
    def qmin(self) -> int:
        return -((1 << (self.bits - 1)) - 1) if self.symmetric else 0

    @property
    def qmax(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.symmetric else (1 << self.bits) - 1


def qrange(bits: int, symmetric: bool) -> tuple[int, int]:
    s = QSpec(bits, symmetric)
    return s.qmin, s.qmax


def grouped(w: torch.Tensor, group_size: int | None) -> torch.Tensor:
    """View weight ``w`` as ``[rows, groups, g]`` for the given granularity."""
    w2 = w.reshape(w.shape[0], -1) if w.dim() > 1 else w.reshape(1, -1)
    if group_size is None:
        return w2.unsqueeze(1)
    if group_size == -1:
        return w2.reshape(1, 1, -1)
    cols = w2.shape[1]
    g = min(group_size, cols)
    if cols % g:
        raise ValueError(f"{cols} columns not divisible by group size {g}")
    return w2.reshape(w2.shape[0], cols // g, g)


def qparams(w: torch.Tensor, spec: QSpec, clip_ratio: torch.Tensor | float = 1.0
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point per group: shapes ``[rows, groups]``."""
    g = grouped(w.detach().float(), spec.group_size)
    if spec.symmetric:
        amax = g.abs().amax(dim=-1) * clip_ratio
        scale = amax / spec.qmax
        zero = torch.zeros_like(scale)
    else:
        lo = g.amin(dim=-1).clamp(max=0) * clip_ratio
        hi = g.amax(dim=-1).clamp(min=0) * clip_ratio
        scale = (hi - lo) / (spec.qmax - spec.qmin)
        zero = torch.round(spec.qmin - lo / torch.where(scale > 0, scale, torch.ones_like(scale)))
        zero = zero.clamp(spec.qmin, spec.qmax)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return scale, zero


def quantize(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, spec: QSpec
             ) -> torch.Tensor:
    """Integer codes (int32) with ``w``'s shape."""
    g = grouped(w.detach().float(), spec.group_size)
    q = torch.round(g / scale.unsqueeze(-1)) + zero.unsqueeze(-1)
    return q.clamp(spec.qmin, spec.qmax).to(torch.int32).reshape(w.shape)


def dequantize(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor,
               group_size: int | None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Float tensor with ``codes``' shape."""
    g = grouped(codes, group_size).to(dtype)
    return ((g - zero.unsqueeze(-1).to(dtype)) * scale.unsqueeze(-1).to(dtype)).reshape(codes.shape)


def fake_quantize(w: torch.Tensor, spec: QSpec) -> torch.Tensor:
    """Quantize then dequantize (for error measurement and search)."""
    scale, zero = qparams(w, spec)
    return dequantize(quantize(w, scale, zero, spec), scale, zero, spec.group_size, w.dtype)
