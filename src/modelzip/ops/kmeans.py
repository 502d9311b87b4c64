"""1-D k-means for weight sharing (Han et al. 2016, section 3): vectorised torch, on the
device the values are on (CPU or CUDA); numpy in, numpy out.

Because the data are scalars, the values are sorted once and each Lloyd step is a
``searchsorted`` of the centroid midpoints plus prefix sums. Linear initialisation
spreads the centroids evenly over [min, max], which the paper found best (it keeps the
rare large weights represented).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

INITS = ("linear", "kmeans++")


def init_centroids(x: np.ndarray, k: int, init: str = "linear", seed: int = 0) -> np.ndarray:
    """``k`` starting centroids for the values ``x`` (sorted ascending)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    if x.size == 0:
        return np.zeros(k)
    if init == "linear":
        return np.linspace(x.min(), x.max(), k)
    if init != "kmeans++":
        raise ValueError(f"unknown k-means init {init!r}; choose one of {INITS}")
    rng = np.random.default_rng(seed)
    sample = x if x.size <= 20000 else rng.choice(x, 20000, replace=False)
    cents = [sample[rng.integers(sample.size)]]
    d2 = (sample - cents[0]) ** 2
    for _ in range(1, k):
        total = d2.sum()
        nxt = sample[rng.integers(sample.size)] if total <= 0 else \
            sample[rng.choice(sample.size, p=d2 / total)]
        cents.append(nxt)
        d2 = np.minimum(d2, (sample - nxt) ** 2)
    return np.sort(np.asarray(cents))


def assign(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest of the sorted ``centroids`` for every value of ``x``."""
    mid = (centroids[1:] + centroids[:-1]) / 2
    return np.searchsorted(mid, np.asarray(x, dtype=np.float64), side="left").astype(np.int64)


def kmeans1d(x: np.ndarray | torch.Tensor, k: int, init: str = "linear", iters: int = 1000,
             seed: int = 0, tol: float = 1e-12) -> tuple[Any, Any]:
    """(centroids ascending, labels) of Lloyd's k-means on scalars, as numpy arrays for a
    numpy ``x`` or as tensors on ``x``'s device (CPU or CUDA) for a tensor.

    The values are sorted once; each Lloyd step then costs O(k log n): cluster
    boundaries by ``searchsorted`` of the midpoints, sums from a prefix sum (float64).
    Empty clusters keep their previous centroid; stops when no centroid moves by more
    than ``tol`` times the data range.
    """
    if k < 1:
        raise ValueError("k must be >= 1")
    as_numpy = not isinstance(x, torch.Tensor)
    t = (torch.from_numpy(np.asarray(x, dtype=np.float64).ravel()) if as_numpy
         else x.detach().reshape(-1).double())
    cents, labels = _lloyd(t, k, init, iters, seed, tol)
    return (cents.numpy(), labels.numpy()) if as_numpy else (cents, labels)


def _lloyd(x: torch.Tensor, k: int, init: str, iters: int, seed: int, tol: float
           ) -> tuple[torch.Tensor, torch.Tensor]:
    dev = x.device
    if x.numel() == 0:
        cents = torch.from_numpy(init_centroids(np.zeros(0), k, init, seed)).to(dev)
        return cents, torch.zeros(0, dtype=torch.int64, device=dev)
    # numpy's sort is ~10x torch's on CPU; on CUDA torch sorts on the device
    xs = torch.from_numpy(np.sort(x.numpy())) if dev.type == "cpu" else torch.sort(x).values
    if init == "linear":  # the only init that needs every value: min and max
        cents = torch.linspace(float(xs[0]), float(xs[-1]), k, dtype=torch.float64,
                               device=dev)
    else:
        cents = torch.from_numpy(init_centroids(xs.cpu().numpy(), k, init, seed)).to(dev)
    csum = torch.cat([xs.new_zeros(1), torch.cumsum(xs, 0)])
    scale = max(float(xs[-1] - xs[0]), 1e-30)
    ends = torch.tensor([xs.numel()], device=dev)
    for _ in range(iters):
        mid = (cents[1:] + cents[:-1]) / 2
        # same tie rule as assign(): a value equal to a midpoint goes to the lower cluster
        bounds = torch.cat([ends.new_zeros(1), torch.searchsorted(xs, mid, right=True), ends])
        counts = bounds[1:] - bounds[:-1]
        sums = csum[bounds[1:]] - csum[bounds[:-1]]
        new = torch.where(counts > 0, sums / counts.clamp(min=1), cents).sort().values
        moved = float((new - cents).abs().max())
        cents = new
        if moved <= tol * scale:
            break
    mid = (cents[1:] + cents[:-1]) / 2
    return cents, torch.searchsorted(mid, x, right=False)
