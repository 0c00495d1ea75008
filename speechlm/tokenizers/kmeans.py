"""Deterministic k-means in torch: k-means++ seeding, Lloyd iterations, chunked distances.

Dimension legend:
    N  points (frames)     D  feature width     K  clusters     C  rows per distance chunk

Distances are computed ``C`` rows at a time as ``|x|^2 - 2 x.c + |c|^2``, so the largest temporary is a
[C, K] matrix (C = 8192, K = 1000: 32 MB) whatever N is; 200k x 384 frames fit in the 300 MB of the
features themselves. Randomness comes only from a ``torch.Generator`` seeded by the caller, so the same
seed and data give bit-identical centroids. A cluster that loses all its points takes the point that is
currently worst served (largest distance to its centroid), the usual fix (e.g. scikit-learn's
``_relocate_empty_clusters``), which is deterministic too.
"""

from __future__ import annotations

import logging
import time

import torch

__all__ = ["assign", "distortion", "fit", "kmeans_pp"]

logger = logging.getLogger(__name__)

CHUNK = 8192  # rows per distance block: [8192, 1000] fp32 = 32 MB
INIT_SAMPLE_PER_K = 16  # k-means++ seeds from min(N, max(10k, 16 K)) points: each seed is one pass over them


def _as_points(x: torch.Tensor) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.ndim != 2:
        raise ValueError(f"k-means expects points [N, D], got shape {tuple(x.shape)}")
    return x.float().contiguous()


def _nearest(x: torch.Tensor, centroids: torch.Tensor, chunk: int = CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """Index [N] of each point's nearest centroid and the squared distance [N] to it."""
    half_c_sq = 0.5 * (centroids * centroids).sum(1)  # [K]
    idx = torch.empty(x.shape[0], dtype=torch.long)
    dist = torch.empty(x.shape[0])
    for s in range(0, x.shape[0], chunk):
        xc = x[s : s + chunk]  # [C, D]
        # |x-c|^2 = |x|^2 + 2 (|c|^2/2 - x.c): the argmin needs only the bracket, one fused matmul-add
        d = torch.addmm(half_c_sq, xc, centroids.T, alpha=-1.0)  # [C, K]
        best, arg = d.min(1)  # [C], [C]
        idx[s : s + chunk] = arg
        dist[s : s + chunk] = ((xc * xc).sum(1) + 2.0 * best).clamp_min(0.0)  # rounding can go slightly negative
    return idx, dist


def assign(x: torch.Tensor, centroids: torch.Tensor, chunk: int = CHUNK) -> torch.Tensor:
    """Nearest centroid of each point: x [N, D], centroids [K, D] -> int64 [N]."""
    x = _as_points(x)
    return _nearest(x, torch.as_tensor(centroids).float(), chunk)[0]


def distortion(x: torch.Tensor, centroids: torch.Tensor, chunk: int = CHUNK) -> float:
    """Mean squared distance of the points to their nearest centroid (the k-means objective per point)."""
    x = _as_points(x)
    return float(_nearest(x, torch.as_tensor(centroids).float(), chunk)[1].double().mean())


def kmeans_pp(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): each next centroid is a point drawn with probability
    proportional to its squared distance to the centroids chosen so far. x [N, D] -> [K, D]."""
    n = x.shape[0]
    x_sq = (x * x).sum(1)  # [N]

    def sq_dist(i: int) -> torch.Tensor:  # [N] squared distances to point i, as one matrix-vector product
        return (x_sq - 2.0 * (x @ x[i]) + x_sq[i]).clamp_min(0.0)

    centroids = torch.empty(k, x.shape[1])
    first = int(torch.randint(n, (1,), generator=generator))
    centroids[0] = x[first]
    closest = sq_dist(first)  # [N] squared distance to the nearest chosen centroid
    for j in range(1, k):
        total = float(closest.double().sum())
        if total <= 0.0:  # every point coincides with a chosen centroid: any point will do
            pick = int(torch.randint(n, (1,), generator=generator))
        else:
            pick = int(torch.multinomial(closest.double() / total, 1, generator=generator))
        centroids[j] = x[pick]
        closest = torch.minimum(closest, sq_dist(pick))
    return centroids


def fit(x: torch.Tensor, k: int, seed: int = 0, iters: int = 50, chunk: int = CHUNK, tol: float = 0.0,
        progress: bool = False) -> torch.Tensor:
    """k-means++ then Lloyd iterations: x [N, D] -> centroids [K, D] (float32).

    Stops early when no point changes cluster (or the relative improvement of the objective falls below
    ``tol``). Raises ValueError when ``k`` exceeds the number of points; the message says both numbers.
    """
    x = _as_points(x)
    n = x.shape[0]
    if k < 1:
        raise ValueError(f"k-means: K must be >= 1, got {k}")
    if k > n:
        raise ValueError(f"k-means: K={k} is larger than the number of frames ({n}); use a smaller K or more audio")
    gen = torch.Generator().manual_seed(int(seed))
    t0 = time.time()
    m = min(n, max(10_000, INIT_SAMPLE_PER_K * k))
    init_points = x if m == n else x[torch.randperm(n, generator=gen)[:m]]
    centroids = kmeans_pp(init_points, k, gen)  # [K, D]
    prev_idx = None
    prev_obj = float("inf")
    for it in range(iters):
        idx, dist = _nearest(x, centroids, chunk)  # [N], [N]
        obj = float(dist.double().mean())
        if prev_idx is not None and (torch.equal(idx, prev_idx) or (tol > 0 and prev_obj - obj <= tol * prev_obj)):
            break
        sums = torch.zeros(k, x.shape[1], dtype=torch.float64)  # [K, D]: fp32 sums per chunk, accumulated in fp64
        for s in range(0, n, chunk):
            sums += torch.zeros(k, x.shape[1]).index_add_(0, idx[s : s + chunk], x[s : s + chunk])
        counts = torch.bincount(idx, minlength=k)  # [K]
        empty = torch.nonzero(counts == 0).flatten()
        new = (sums / counts.clamp_min(1)[:, None]).float()  # [K, D]
        if empty.numel():
            # Give each empty cluster one of the worst-served points (distinct ones, farthest first).
            worst = torch.argsort(dist, descending=True, stable=True)[: empty.numel()]
            new[empty] = x[worst]
        centroids = new
        prev_idx, prev_obj = idx, obj
        if progress:
            logger.info("k-means it %d: distortion %.4f (%d empty refilled), %.1f s", it + 1, obj, empty.numel(), time.time() - t0)
    return centroids.contiguous()
