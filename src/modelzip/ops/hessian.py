"""Second-order statistics of layer inputs, as used by OBS-family solvers (GPTQ, SparseGPT).

For a linear layer y = W x over calibration inputs X (n x d), the layer-wise squared-error
objective has Hessian H = 2/n * X^T X. Solvers need H^-1 (via a damped Cholesky factor).
"""

from __future__ import annotations

import torch


def add_batch(h: torch.Tensor, count: int, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Fold inputs ``x`` (..., d) into the running mean Hessian ``h`` (d x d) of ``count``."""
    x = x.reshape(-1, x.shape[-1]).double()
    n = x.shape[0]
    total = count + n
    h.mul_(count / total).add_(x.T @ x, alpha=2.0 / total)
    return h, total


def damp(h: torch.Tensor, percdamp: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """(damped copy of H, boolean 'dead input' mask) : zero-variance inputs get H_ii = 1."""
    h = h.clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    lam = percdamp * torch.mean(torch.diag(h))
    h.diagonal().add_(lam)
    return h, dead


def inverse_cholesky_upper(h: torch.Tensor, percdamp: float = 0.01) -> torch.Tensor:
    """Upper Cholesky factor U of H^-1 (H^-1 = U^T U), with damping retried if needed."""
    for attempt in range(6):
        hd, _ = damp(h, percdamp * (10**attempt))
        try:  # each step frees the previous matrix: d x d buffers dominate memory here
            hd = torch.linalg.cholesky(hd)
            hd = torch.cholesky_inverse(hd)
            return torch.linalg.cholesky(hd, upper=True)
        except RuntimeError:
            continue
    raise RuntimeError("Hessian is not positive definite even with heavy damping")
