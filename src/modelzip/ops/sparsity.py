"""Pure sparsity-mask rules on 2-D score matrices (rows = outputs, columns = inputs).

``True`` in a mask means *kept*. Used by magnitude N:M, Wanda and SparseGPT.
"""

from __future__ import annotations

import torch


def rowwise_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep the largest scores of each row; exactly ``round(sparsity * cols)`` pruned per row."""
    scores = scores.reshape(scores.shape[0], -1)
    k = int(round(sparsity * scores.shape[1]))
    mask = torch.ones_like(scores, dtype=torch.bool)
    if k > 0:
        idx = torch.topk(scores, k, dim=1, largest=False).indices
        mask.scatter_(1, idx, False)
    return mask


def nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """N:M mask: in every group of ``m`` consecutive inputs of a row keep the ``n`` largest.

    A row whose length is not a multiple of ``m`` is treated as padded with zeros to the
    next multiple (as sparse kernels do), so its last, short group keeps min(n, length).
    """
    rows, cols = scores.shape
    pad = (-cols) % m
    if pad:
        scores = torch.cat([scores.float(), scores.new_full((rows, pad), float("-inf"))], 1)
    groups = scores.reshape(rows, -1, m)
    idx = torch.topk(groups, n, dim=2).indices
    mask = torch.zeros_like(groups, dtype=torch.bool)
    mask.scatter_(2, idx, True)
    return mask.reshape(rows, -1)[:, :cols]


def wanda_scores(weight: torch.Tensor, input_norm: torch.Tensor) -> torch.Tensor:
    """Wanda importance |W_ij| * ||X_j||_2 (Sun et al. 2023) for a (out, in) weight."""
    return weight.detach().abs().float() * input_norm.float().reshape(1, -1)
