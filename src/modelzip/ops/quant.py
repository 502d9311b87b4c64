"""Affine quantization math: q = clamp(round(x / s) + z, qmin, qmax); x' = (q - z) * s.

Granularity: per tensor (``group_size=-1``), per output channel (``None``) or per group of
``group_size`` consecutive inputs within each output channel. Weights of any rank are seen
as ``[out, -1]``; when the width is not a multiple of the group size the last group is
shorter (padded with zeros internally, which never changes a range that contains 0).

Symmetric mode uses zero point 0 and codes in ``[-(2^(b-1)-1), 2^(b-1)-1]`` (restricted
range, exact for both signs): 2 bits is therefore *ternary* {-1, 0, +1} x scale.
Symmetric 1 bit is *binary* (XNOR-Net, Rastegari et al. 2016): codes {0, 1} stand for
{-1, +1} and the scale of a group is mean |w|, the L2-optimal scale for sign(w).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

ROUNDING = ("nearest", "floor", "stochastic")


@dataclass(frozen=True)
class QSpec:
    """How a tensor is quantized."""

    bits: int = 8
    symmetric: bool = True
    group_size: int | None = None  # None: per output channel; -1: per tensor

    @property
    def binary(self) -> bool:
        return self.bits == 1 and self.symmetric

    @property
    def qmin(self) -> int:
        if self.binary:
            return 0
        return -((1 << (self.bits - 1)) - 1) if self.symmetric else 0

    @property
    def qmax(self) -> int:
        if self.binary:
            return 1
        return (1 << (self.bits - 1)) - 1 if self.symmetric else (1 << self.bits) - 1

    @property
    def signed(self) -> bool:
        """Whether the codes are stored signed (for packing)."""
        return self.symmetric and not self.binary


def qrange(bits: int, symmetric: bool) -> tuple[int, int]:
    s = QSpec(bits, symmetric)
    return s.qmin, s.qmax


def _as_rows(w: torch.Tensor) -> torch.Tensor:
    return w.reshape(w.shape[0], -1) if w.dim() > 1 else w.reshape(1, -1)


def grouped(w: torch.Tensor, group_size: int | None) -> torch.Tensor:
    """View weight ``w`` as ``[rows, groups, g]``; a short last group is zero-padded."""
    w2 = _as_rows(w)
    if group_size is None:
        return w2.unsqueeze(1)
    if group_size == -1:
        return w2.reshape(1, 1, -1)
    cols = w2.shape[1]
    g = min(group_size, cols)
    pad = (-cols) % g
    if pad:
        w2 = torch.nn.functional.pad(w2, (0, pad))
    return w2.reshape(w2.shape[0], (cols + pad) // g, g)


def ungroup(g: torch.Tensor, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """Inverse of :func:`grouped`: drop the padding and restore ``shape``."""
    n = 1
    for s in shape:
        n *= s
    rows = shape[0] if len(shape) > 1 and g.shape[0] != 1 else g.shape[0]
    return g.reshape(rows, -1)[:, : n // rows].reshape(shape)


def group_counts(w: torch.Tensor, group_size: int | None) -> torch.Tensor:
    """Number of real (unpadded) entries per group: ``[1, groups]``."""
    ones = torch.ones(1, _as_rows(w).shape[1] if group_size != -1 else w.numel(),
                      device=w.device)
    return grouped(ones, group_size if group_size != -1 else None).sum(-1)


def qparams(w: torch.Tensor, spec: QSpec, clip_ratio: torch.Tensor | float = 1.0
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point per group: shapes ``[rows, groups]``.

    ``clip_ratio`` (scalar or ``[rows, groups]``) shrinks the range: values beyond it
    saturate (see :func:`search_clip`).
    """
    g = grouped(w.detach().float(), spec.group_size)
    if spec.binary:
        scale = g.abs().sum(-1) / group_counts(w, spec.group_size) * clip_ratio
        zero = torch.zeros_like(scale)
    elif spec.symmetric:
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


def round_values(x: torch.Tensor, rounding: str = "nearest",
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Round to integers: nearest (ties to even), floor, or stochastic (unbiased)."""
    if rounding == "nearest":
        return torch.round(x)
    if rounding == "floor":
        return torch.floor(x)
    if rounding == "stochastic":
        return torch.floor(x + torch.rand(x.shape, generator=generator, dtype=x.dtype))
    raise ValueError(f"rounding must be one of {ROUNDING}, got {rounding!r}")


def quantize(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, spec: QSpec, *,
             rounding: str = "nearest", generator: torch.Generator | None = None
             ) -> torch.Tensor:
    """Integer codes (int32) with ``w``'s shape."""
    g = grouped(w.detach().float(), spec.group_size)
    if spec.binary:
        q = (g >= 0).to(torch.int32)
    else:
        q = round_values(g / scale.unsqueeze(-1), rounding, generator) + zero.unsqueeze(-1)
        q = q.clamp(spec.qmin, spec.qmax).to(torch.int32)
    return ungroup(q, w.shape)


def dequantize(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor,
               group_size: int | None, dtype: torch.dtype = torch.float32, *,
               binary: bool = False) -> torch.Tensor:
    """Float tensor with ``codes``' shape (``binary``: codes {0,1} mean {-1,+1})."""
    g = grouped(codes, group_size).to(dtype)
    if binary:
        g = 2 * g - 1
    else:
        g = g - zero.unsqueeze(-1).to(dtype)
    return ungroup(g * scale.unsqueeze(-1).to(dtype), codes.shape)


def fake_quantize(w: torch.Tensor, spec: QSpec, clip_ratio: torch.Tensor | float = 1.0
                  ) -> torch.Tensor:
    """Quantize then dequantize (for error measurement and search)."""
    scale, zero = qparams(w, spec, clip_ratio)
    return dequantize(quantize(w, scale, zero, spec), scale, zero, spec.group_size, w.dtype,
                      binary=spec.binary)


def group_error(w: torch.Tensor, spec: QSpec, clip_ratio: torch.Tensor | float = 1.0,
                hessian_blocks: torch.Tensor | None = None) -> torch.Tensor:
    """Quantization error per group ``[rows, groups]``: squared error, or the output error
    ``dW_g H_gg dW_g^T`` when the diagonal Hessian blocks ``[groups, g, g]`` are given."""
    d = grouped(fake_quantize(w, spec, clip_ratio) - w.float(), spec.group_size)
    if hessian_blocks is None:
        return (d * d).sum(-1)
    return torch.einsum("rgi,gij,rgj->rg", d, hessian_blocks.to(d.dtype), d)


def search_clip(w: torch.Tensor, spec: QSpec, *, grid: int = 20, min_ratio: float = 0.5,
                hessian_blocks: torch.Tensor | None = None) -> torch.Tensor:
    """The clip ratio per group ``[rows, groups]`` that minimises the quantization error
    (MSE of the weights, or the output error under ``hessian_blocks``)."""
    best_err = best = None
    for r in torch.linspace(1.0, min_ratio, grid).tolist():
        err = group_error(w, spec, r, hessian_blocks)
        if best is None:
            best_err, best = err, torch.full_like(err, r)
        else:
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best = torch.where(better, torch.full_like(best, r), best)
    return best


def hessian_blocks(h: torch.Tensor, group_size: int | None, cols: int) -> torch.Tensor:
    """Diagonal blocks ``[groups, g, g]`` of an input Hessian for :func:`group_error`."""
    g = cols if group_size in (None, -1) else min(group_size, cols)
    pad = (-cols) % g
    hp = torch.nn.functional.pad(h.float(), (0, pad, 0, pad))
    n = (cols + pad) // g
    return torch.stack([hp[i * g:(i + 1) * g, i * g:(i + 1) * g] for i in range(n)])


def mse_threshold(x: torch.Tensor, bits: int, *, grid: int = 50, min_ratio: float = 0.2
                  ) -> float:
    """Symmetric clipping threshold T for ``x`` minimising the MSE of ``bits``-bit
    quantization of ``clamp(x, -T, T)`` (used by ``Clip(method="mse")``)."""
    spec = QSpec(bits, True, -1)
    amax = float(x.abs().max())
    if amax == 0:
        return 0.0
    ratio = search_clip(x.reshape(1, -1), spec, grid=grid, min_ratio=min_ratio)
    return amax * float(ratio.reshape(-1)[0])
