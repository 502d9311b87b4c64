"""Activation range observers for static quantization (pure tensor code).

:class:`RangeStats` accumulates, over calibration batches, the exact per-channel min /
max / abs-max of a layer's input and a bounded random sample of its rows. The range
``(lo, hi)`` for the int8 codes is then chosen by one of:

* ``minmax`` - the observed extremes;
* ``percentile`` - the p-th percentile of |x| (and of x on each side);
* ``mse`` - the clipping ratio that minimises the squared quantization error;
* ``entropy`` - the threshold minimising the KL divergence between the histogram of
  |x| and its quantized version (the TensorRT calibrator, Migacz 2017).
"""

from __future__ import annotations

import torch

OBSERVERS = ("minmax", "percentile", "mse", "entropy")


class RangeStats:
    """Running statistics of a layer input seen as rows ``[n, channels]``."""

    def __init__(self, channels: int, max_rows: int = 4096, seed: int = 0):
        self.lo = torch.full((channels,), float("inf"))
        self.hi = torch.full((channels,), float("-inf"))
        self.max_rows = max_rows
        self.sample = torch.empty(0, channels)
        self.gen = torch.Generator().manual_seed(seed)
        self.count = 0

    def add(self, rows: torch.Tensor) -> None:
        rows = rows.detach().float().reshape(-1, self.lo.numel())
        if self.lo.device != rows.device:  # statistics live where the inputs are
            self.lo, self.hi = self.lo.to(rows.device), self.hi.to(rows.device)
            self.sample = self.sample.to(rows.device)
        self.lo = torch.minimum(self.lo, rows.amin(0))
        self.hi = torch.maximum(self.hi, rows.amax(0))
        self.count += rows.shape[0]
        keep = min(rows.shape[0], max(self.max_rows // 8, 1))
        idx = torch.randperm(rows.shape[0], generator=self.gen)[:keep]
        pool = torch.cat([self.sample, rows[idx]])
        if pool.shape[0] > self.max_rows:
            pool = pool[torch.randperm(pool.shape[0], generator=self.gen)[: self.max_rows]]
        self.sample = pool

    @property
    def abs_max(self) -> torch.Tensor:
        """max |x| per channel (SmoothQuant's activation statistic)."""
        return torch.maximum(self.lo.abs(), self.hi.abs())


def affine_qparams(lo: float, hi: float, bits: int = 8) -> tuple[float, int]:
    """(scale, zero point) of signed ``bits``-bit codes covering [lo, hi] (0 included)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    qmin, qmax = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    scale = (hi - lo) / (qmax - qmin) if hi > lo else 1.0
    zero = int(round(qmin - lo / scale))
    return scale, max(qmin, min(qmax, zero))


def _fake(x: torch.Tensor, lo: float, hi: float, bits: int) -> torch.Tensor:
    scale, zero = affine_qparams(lo, hi, bits)
    qmin, qmax = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return ((torch.round(x / scale) + zero).clamp(qmin, qmax) - zero) * scale


def percentile_range(x: torch.Tensor, pct: float = 99.99) -> tuple[float, float]:
    flat = x.reshape(-1).float()
    q = torch.tensor([1 - pct / 100, pct / 100])
    lo, hi = torch.quantile(flat[: 1 << 24], q).tolist()
    return lo, hi


def mse_range(x: torch.Tensor, lo: float, hi: float, bits: int = 8, grid: int = 40
              ) -> tuple[float, float]:
    """Shrink [lo, hi] by the ratio with the smallest quantization MSE on sample ``x``."""
    best, best_err = (lo, hi), None
    for r in torch.linspace(1.0, 0.3, grid).tolist():
        err = float(((_fake(x, lo * r, hi * r, bits) - x) ** 2).mean())
        if best_err is None or err < best_err:
            best, best_err = (lo * r, hi * r), err
    return best


def entropy_threshold(x: torch.Tensor, bits: int = 8, bins: int = 2048) -> float:
    """TensorRT's KL calibration: the |x| threshold whose quantized histogram diverges
    least from the reference histogram (outliers folded into the last kept bin)."""
    a = x.abs().reshape(-1).float()
    amax = float(a.max())
    if amax == 0:
        return 0.0
    hist = torch.histc(a, bins=bins, min=0, max=amax).double()
    levels = 1 << (bits - 1)
    best_i, best_kl = bins, None
    for i in range(levels, bins + 1, max(1, (bins - levels) // 128)):
        p = hist[:i].clone()
        p[-1] += hist[i:].sum()
        q = _requantize(hist[:i], levels)
        kl = _kl(p, q)
        if best_kl is None or kl < best_kl:
            best_i, best_kl = i, kl
    return amax * best_i / bins


def _requantize(h: torch.Tensor, levels: int) -> torch.Tensor:
    """Merge ``h`` into ``levels`` bins then spread each back over its nonzero bins."""
    n = h.numel()
    edges = torch.linspace(0, n, levels + 1).round().long()
    q = torch.zeros_like(h)
    for j in range(levels):
        a, b = int(edges[j]), int(edges[j + 1])
        seg = h[a:b]
        nz = seg > 0
        if nz.any():
            q[a:b][nz] = seg.sum() / nz.sum()
    return q


def _kl(p: torch.Tensor, q: torch.Tensor) -> float:
    p = p / p.sum().clamp(min=1e-12)
    q = q / q.sum().clamp(min=1e-12)
    m = p > 0
    return float((p[m] * (p[m] / q[m].clamp(min=1e-12)).log()).sum())


def choose_range(stats: RangeStats, observer: str, *, bits: int = 8, pct: float = 99.99,
                 channel_scale: torch.Tensor | None = None) -> tuple[float, float]:
    """(lo, hi) of a layer input by ``observer``; ``channel_scale`` multiplies each
    channel first (SmoothQuant's x / s), exactly for min/max and on the sample."""
    cs = torch.ones_like(stats.lo) if channel_scale is None else channel_scale
    lo = float((stats.lo * cs).min())
    hi = float((stats.hi * cs).max())
    x = stats.sample * cs
    if observer == "minmax" or x.numel() == 0:
        return lo, hi
    if observer == "percentile":
        return percentile_range(x, pct)
    if observer == "mse":
        return mse_range(x, lo, hi, bits)
    if observer == "entropy":
        t = entropy_threshold(x, bits)
        return (max(lo, -t), min(hi, t))
    raise ValueError(f"observer must be one of {OBSERVERS}, got {observer!r}")


def smooth_scales(act_abs_max: torch.Tensor, weight: torch.Tensor, alpha: float
                  ) -> torch.Tensor:
    """SmoothQuant's per-input-channel s_j = max|X_j|^a / max|W_:,j|^(1-a)."""
    wmax = weight.detach().float().abs().amax(0).clamp(min=1e-5)
    s = act_abs_max.float().clamp(min=1e-5).pow(alpha) / wmax.pow(1 - alpha)
    return s.clamp(min=1e-5)
