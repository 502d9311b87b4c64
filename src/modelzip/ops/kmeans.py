"""1-D k-means for weight sharing (Han et al. 2016, section 3): pure numpy, vectorised.

Because the data are scalars, the values are sorted once and each Lloyd step is a
``searchsorted`` of the centroid midpoints plus prefix sums. Linear initialisation
spreads the centroids evenly over [min, max], which the paper found best (it keeps the
rare large weights represented).
"""

from __future__ import annotations

import numpy as np

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


def kmeans1d(x: np.ndarray, k: int, init: str = "linear", iters: int = 1000,
             seed: int = 0, tol: float = 1e-12) -> tuple[np.ndarray, np.ndarray]:
    """(centroids ascending, labels) of Lloyd's k-means on scalars.

    The values are sorted once; each Lloyd step then costs O(k log n): cluster
    boundaries by ``searchsorted`` of the midpoints, sums from a prefix sum. Empty
    clusters keep their previous centroid; stops when no centroid moves by more than
    ``tol`` times the data range.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    if k < 1:
        raise ValueError("k must be >= 1")
    cents = init_centroids(x, k, init, seed)
    if x.size == 0:
        return cents, np.zeros(0, dtype=np.int64)
    xs = np.sort(x)
    csum = np.concatenate([[0.0], np.cumsum(xs)])
    scale = max(float(xs[-1] - xs[0]), 1e-30)
    for _ in range(iters):
        mid = (cents[1:] + cents[:-1]) / 2
        # same tie rule as assign(): a value equal to a midpoint goes to the lower cluster
        bounds = np.concatenate([[0], np.searchsorted(xs, mid, side="right"), [xs.size]])
        counts = np.diff(bounds)
        sums = csum[bounds[1:]] - csum[bounds[:-1]]
        new = np.where(counts > 0, sums / np.maximum(counts, 1), cents)
        new.sort()
        moved = float(np.abs(new - cents).max())
        cents = new
        if moved <= tol * scale:
            break
    return cents, assign(x, cents)
