"""AWQ (Lin et al. 2024): activation-aware weight quantization.

Salient input channels (large mean |x|) are protected by scaling them up before
quantization: W' = W diag(s), x' = x / s, with s = mean|x|^alpha and alpha found by grid
search on the layer's output error; then the clipping ratio of every group is searched
on the same objective. The output error of a weight error dW over the calibration inputs
is tr(dW H dW^T) with H = 2/n X^T X, so the Hessian gathered by calibration suffices.
"""

from __future__ import annotations

import torch

from .quant import QSpec, fake_quantize, hessian_blocks, search_clip


def output_error(dw: torch.Tensor, h: torch.Tensor) -> float:
    """tr(dW H dW^T): the summed squared output error of weight error ``dw``."""
    return float(((dw @ h) * dw).sum())


def search_scales(w: torch.Tensor, x_abs_mean: torch.Tensor, h: torch.Tensor, spec: QSpec,
                  *, grid: int = 20) -> torch.Tensor:
    """Per-input-channel scales ``s`` (``[cols]``) minimising the output error of
    ``Q(W diag(s)) diag(s)^-1``; alpha = 0 (s = 1, plain RTN) is always a candidate."""
    w = w.detach().float()
    hf = h.float()
    x = x_abs_mean.float().clamp(min=1e-4)
    best_err, best = None, torch.ones_like(x)
    for i in range(grid):
        alpha = i / grid
        s = x.pow(alpha)
        s = s / (s.max() * s.min()).sqrt()
        err = output_error(fake_quantize(w * s, spec) / s - w, hf)
        if best_err is None or err < best_err:
            best_err, best = err, s
    return best


def awq(w: torch.Tensor, x_abs_mean: torch.Tensor, h: torch.Tensor, spec: QSpec, *,
        grid: int = 20, clip: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(scaled weight ``W diag(s)``, its clip ratio per group) and ``s`` are what the
    caller quantizes; returns ``(s, clip_ratio)`` with clip_ratio ``[rows, groups]``."""
    s = search_scales(w, x_abs_mean, h, spec, grid=grid)
    if not clip or spec.group_size == -1:
        return s, torch.ones(1, device=w.device)
    ws = w.detach().float() * s
    hs = h.float() / torch.outer(s, s)
    blocks = hessian_blocks(hs, spec.group_size, w.shape[1])
    return s, search_clip(ws, spec, hessian_blocks=blocks)
