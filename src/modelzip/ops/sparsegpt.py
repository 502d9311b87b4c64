"""SparseGPT (Frantar & Alistarh 2023): one-shot pruning with OBS weight reconstruction.

For a layer y = W x with input Hessian H = 2/n X^T X, columns are processed left to right
in blocks. Within a block the mask is chosen by the OBS saliency w^2 / [H^-1]_jj^2 (per
block for unstructured sparsity, per group of m columns for N:M), each pruned weight's
error is spread over the not-yet-processed columns of its row through the Cholesky factor
of H^-1, and the block's accumulated error is applied lazily to the remaining columns.
"""

from __future__ import annotations

import torch

from .hessian import inverse_cholesky_upper


def sparsegpt(weight: torch.Tensor, hessian: torch.Tensor, sparsity: float = 0.5, *,
              n: int | None = None, m: int | None = None, blocksize: int = 128,
              percdamp: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """(new weight, keep mask) for a (rows, cols) ``weight`` and its (cols, cols) Hessian.

    With ``n``/``m`` set, every group of ``m`` consecutive columns keeps ``n`` weights per
    row (``sparsity`` is then ignored).
    """
    w = weight.detach().clone().double()
    h = hessian.detach().clone().double()
    rows, cols = w.shape
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    hinv = inverse_cholesky_upper(h, percdamp)
    pruned = torch.zeros_like(w, dtype=torch.bool)
    if m is not None and blocksize % m:
        blocksize = max(m, blocksize - blocksize % m)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        _block(w, hinv, pruned, i1, i2, sparsity, n, m)
    return w.to(weight.dtype), ~pruned


def _block(w: torch.Tensor, hinv: torch.Tensor, pruned: torch.Tensor, i1: int, i2: int,
           sparsity: float, n: int | None, m: int | None) -> None:
    """Prune columns i1:i2 of ``w`` in place, then push their error to the columns after."""
    w1 = w[:, i1:i2].clone()
    h1 = hinv[i1:i2, i1:i2]
    err = torch.zeros_like(w1)
    d = torch.diag(h1)
    mask1 = torch.zeros_like(w1, dtype=torch.bool)
    if n is None:
        sal = w1**2 / d.reshape(1, -1) ** 2
        k = int(sal.numel() * sparsity)
        if k > 0:
            idx = torch.topk(sal.ravel(), k, largest=False).indices
            mask1.view(-1)[idx] = True
    for i in range(i2 - i1):
        if n is not None and i % m == 0:
            sal = w1[:, i:i + m] ** 2 / d[i:i + m].reshape(1, -1) ** 2
            k = sal.shape[1] - n  # a short last group (zero-padded) keeps min(n, length)
            if k > 0:
                idx = torch.topk(sal, k, dim=1, largest=False).indices
                mask1.scatter_(1, i + idx, True)
        col = w1[:, i]
        q = torch.where(mask1[:, i], torch.zeros_like(col), col)
        e = (col - q) / h1[i, i]
        w1[:, i:] -= e.unsqueeze(1) @ h1[i, i:].unsqueeze(0)
        w1[:, i] = q
        err[:, i] = e
    w[:, i1:i2] = w1
    pruned[:, i1:i2] = mask1
    w[:, i2:] -= err @ hinv[i1:i2, i2:]
