"""Clustering of L2-normalised embeddings: visual groups, face identities, and consistency outliers.

Rules (deterministic; no random restarts except the seeded k-means used for large sets):

* ``num_clusters`` given: Ward linkage on the unit vectors, cut into that many clusters. (On DreamBench with
  ``mobilenet_v2``, Ward beat average/complete linkage, k-means and spectral clustering; see
  ``tests/curation/test_cluster_real.py``.)
* ``threshold`` given: average linkage on cosine distance, cut where the mean similarity between two clusters
  falls below ``threshold`` (two clusters merge while their images are, on average, at least that similar).
  Used for face identities, where the threshold has a meaning (same person).
* neither: Ward linkage, cut at the number of clusters with the best mean silhouette (cosine).

Sets larger than ``max_direct`` are first reduced to ``max_direct`` seeded k-means centroids, clustered as above,
and each vector takes its centroid's cluster. Labels are renumbered by first appearance, so the same input gives
the same labels. For the number of clusters with the best silhouette, large sets score each candidate cut (a
bounded, geometric set of K) by the exact cosine silhouette of a seeded sample of the *vectors* against the whole
set, computed from per-cluster sums (linear in N); scoring the centroids themselves would ignore how many vectors
each one stands for (it collapsed to 2 clusters). Cost stays linear in N for a fixed ``max_direct``.

Small sets cut by a threshold (the face identities of a person group, a million of them at paper scale) use a
direct average-linkage loop rather than scipy's, whose per-call validation costs milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mrbench.log import get_logger
from mrbench.thresholds import resolve

log = get_logger(__name__)

MAX_DIRECT = 4000


def face_threshold(encoder: str, calibration: str | None = None) -> float:
    """The identity threshold of a face encoder (:func:`mrbench.thresholds.resolve`: a calibration file, else the
    operating point measured for it, else a documented fallback; ``insightface-tiny`` falls back to
    ``insightface``'s)."""
    return resolve(encoder, "identity", calibration).threshold


@dataclass(frozen=True)
class Clustering:
    """Cluster labels ``0..num_clusters-1`` (numbered by first appearance) and how they were obtained."""

    labels: np.ndarray
    num_clusters: int
    method: str
    silhouette: float | None = None


def _renumber(labels: np.ndarray) -> np.ndarray:
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.argsort(np.argsort(first))  # cluster seen first gets 0
    return rank[inverse].astype(np.int64)


def _silhouette(dist: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.metrics import silhouette_score

    if len(np.unique(labels)) < 2 or len(np.unique(labels)) >= labels.size:
        return -1.0
    return float(silhouette_score(dist, labels, metric="precomputed"))


def _candidate_ks(n: int) -> list[int]:
    """Every K up to 200, then a geometric grid (about 5% apart) up to n/2."""
    top = max(2, n // 2)
    ks = list(range(2, min(top, 200) + 1))
    k = 200.0
    while k < top:
        k *= 1.05
        ks.append(min(top, int(k)))
    return sorted(set(ks))


SMALL_LINKAGE = 48


def _average_linkage_cut(x: np.ndarray, threshold: float) -> np.ndarray:
    """Flat clusters of average linkage on cosine distance cut at ``1 - threshold``, for small sets.

    Average linkage is monotone, so cutting the tree at distance t is merging the closest pair of clusters
    (mean pairwise distance) while that distance is <= t. Same clusters as scipy's linkage + fcluster.
    """
    n = x.shape[0]
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-300)
    if n == 2:  # the common case (about two faces per group): one distance decides
        return np.array([0, 0 if 1.0 - float(unit[0] @ unit[1]) <= 1.0 - threshold else 1])
    total = 1.0 - unit @ unit.T  # sums of pairwise distances between clusters (singletons: the distances)
    size = np.ones(n)
    alive = np.ones(n, bool)
    labels = np.arange(n)
    cut = 1.0 - threshold
    while alive.sum() > 1:
        avg = total / np.outer(size, size)
        avg[~alive, :] = np.inf
        avg[:, ~alive] = np.inf
        np.fill_diagonal(avg, np.inf)
        a, b = np.unravel_index(int(np.argmin(avg)), avg.shape)
        if avg[a, b] > cut:
            break
        a, b = min(a, b), max(a, b)
        total[a, :] += total[b, :]
        total[:, a] += total[:, b]
        size[a] += size[b]
        alive[b] = False
        labels[labels == b] = a
    return labels


def _cluster_direct(emb: np.ndarray, num_clusters: int | None, threshold: float | None) -> Clustering:
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import pdist, squareform

    n = emb.shape[0]
    if n == 1:
        return Clustering(np.zeros(1, np.int64), 1, "single")
    x = emb.astype(np.float64)
    if threshold is not None and n <= SMALL_LINKAGE:
        out = _renumber(_average_linkage_cut(x, threshold))
        return Clustering(out, int(out.max()) + 1, f"average-linkage cosine >= {threshold}")
    if threshold is not None:
        tree = linkage(pdist(x, "cosine"), "average")
        labels = fcluster(tree, t=1.0 - threshold, criterion="distance")
        out = _renumber(labels)
        return Clustering(out, int(out.max()) + 1, f"average-linkage cosine >= {threshold}")
    tree = linkage(x, "ward")
    if num_clusters is not None:
        labels = fcluster(tree, t=min(num_clusters, n), criterion="maxclust")
        out = _renumber(labels)
        return Clustering(out, int(out.max()) + 1, f"ward k={num_clusters}")
    dist = np.clip(squareform(pdist(x, "cosine")), 0.0, 2.0)
    best: tuple[float, int, np.ndarray] | None = None
    for k in _candidate_ks(n):
        labels = fcluster(tree, t=k, criterion="maxclust")
        score = _silhouette(dist, labels)
        if best is None or score > best[0] + 1e-12:  # ties keep the smaller k
            best = (score, k, labels)
    assert best is not None
    out = _renumber(best[2])
    return Clustering(out, int(out.max()) + 1, f"ward, k={int(out.max()) + 1} by silhouette", best[0])


def cluster_embeddings(
    emb: np.ndarray,
    num_clusters: int | None = None,
    threshold: float | None = None,
    *,
    seed: int = 0,
    max_direct: int = MAX_DIRECT,
) -> Clustering:
    """Cluster L2-normalised embeddings (see the module docstring for the rules).

    Args:
        emb: (N, D) L2-normalised vectors.
        num_clusters: Number of clusters wanted.
        threshold: Cosine similarity for average-linkage cutting (exclusive with ``num_clusters``).
        seed: Seeds the k-means reduction of large sets.
        max_direct: Largest set clustered directly.

    Returns:
        A :class:`Clustering`.
    """
    if num_clusters is not None and threshold is not None:
        raise ValueError("give num_clusters or threshold, not both")
    if num_clusters is not None and num_clusters < 1:
        raise ValueError("num_clusters must be >= 1")
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    n = emb.shape[0]
    if n == 0:
        return Clustering(np.zeros(0, np.int64), 0, "empty")
    if n <= max_direct:
        return _cluster_direct(emb, num_clusters, threshold)
    from mrbench.curation.dedup import _spherical_kmeans

    rng = np.random.default_rng(seed)
    sample = emb[np.sort(rng.choice(n, min(n, max_direct * 20), replace=False))]
    centroids = _spherical_kmeans(sample, max_direct, seed, niter=10)
    nearest = np.concatenate([(emb[s : s + 8192] @ centroids.T).argmax(1) for s in range(0, n, 8192)])  # blocks: 8192 x 4000 floats
    used = np.unique(nearest)
    if num_clusters is None and threshold is None and used.size > 2:
        return _cluster_by_sampled_silhouette(emb, centroids, nearest, used, seed)
    inner = _cluster_direct(centroids[used], num_clusters, threshold)
    lookup = np.zeros(centroids.shape[0], np.int64)
    lookup[used] = inner.labels
    out = _renumber(lookup[nearest])
    return Clustering(out, int(out.max()) + 1, f"{inner.method} over {used.size} k-means centroids", inner.silhouette)


SILHOUETTE_SAMPLE = 1000
SILHOUETTE_STEP = 1.25


def _cluster_by_sampled_silhouette(
    emb: np.ndarray, centroids: np.ndarray, nearest: np.ndarray, used: np.ndarray, seed: int
) -> Clustering:
    """Large sets, K inferred: Ward on the k-means centroids, each candidate cut scored by the silhouette of a
    seeded sample of the vectors (cosine, exact against all N vectors through per-cluster sums)."""
    from scipy.cluster.hierarchy import fcluster, linkage

    n, m = emb.shape[0], used.size
    where = np.full(centroids.shape[0], -1, np.int64)
    where[used] = np.arange(m)
    cell = where[nearest]  # each vector's centroid, 0..m-1
    tree = linkage(centroids[used].astype(np.float64), "ward")
    # Per centroid: the sum of its vectors and their count (the clusters' sums are sums of these).
    sums = np.zeros((m, emb.shape[1]), np.float64)
    for s in range(0, n, 8192):
        np.add.at(sums, cell[s : s + 8192], emb[s : s + 8192].astype(np.float64))
    counts = np.bincount(cell, minlength=m).astype(np.float64)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, min(n, SILHOUETTE_SAMPLE), replace=False))
    xs = emb[sample].astype(np.float64)
    dots = np.ascontiguousarray((sums @ xs.T).astype(np.float32))  # (m, s): each centroid's sum . each sample
    self_dot = (xs * xs).sum(1)
    own_cell = cell[sample]
    rows = np.arange(sample.size)
    ks, k = [], 2.0
    while int(k) < m:
        ks.append(int(k))
        k = max(k + 1, k * SILHOUETTE_STEP)
    ks.append(m)
    best: tuple[float, int, np.ndarray] | None = None
    for k in sorted(set(ks)):
        lab_c = fcluster(tree, t=k, criterion="maxclust") - 1  # cluster of each centroid
        kk = int(lab_c.max()) + 1
        size = np.bincount(lab_c, weights=counts, minlength=kk)
        order = np.argsort(lab_c, kind="stable")
        starts = np.searchsorted(lab_c[order], np.arange(kk))
        to_cluster = np.add.reduceat(dots[order], starts, axis=0)  # (k, s): dot with each cluster's sum
        own = lab_c[own_cell]
        own_size = size[own]
        a = 1.0 - (to_cluster[own, rows] - self_dot) / np.maximum(own_size - 1, 1)
        to_cluster[own, rows] = -np.inf  # the own cluster is not a candidate for b
        # b: the smallest mean distance to another cluster = 1 - the largest mean dot.
        b = 1.0 - (to_cluster / size[:, None]).max(0)
        sil = np.where(own_size > 1, (b - a) / np.maximum(np.maximum(a, b), 1e-12), 0.0)
        score = float(sil.mean())
        if best is None or score > best[0] + 1e-12:  # ties keep the smaller k
            best = (score, kk, lab_c)
    assert best is not None
    out = _renumber(best[2][cell])
    return Clustering(out, int(out.max()) + 1,
                      f"ward over {m} k-means centroids, k={int(out.max()) + 1} by sampled silhouette", best[0])


def dominant_cluster(labels: np.ndarray) -> int:
    """The largest cluster (ties: the smaller label)."""
    counts = np.bincount(labels)
    return int(np.argmax(counts))


def consistency_scores(emb: np.ndarray) -> np.ndarray:
    """Each member's cosine similarity to the mean direction of the *other* members (leave-one-out)."""
    n = emb.shape[0]
    if n < 2:
        return np.ones(n, np.float32)
    x = emb.astype(np.float64)
    total = x.sum(0)
    rest = total[None, :] - x
    rest /= np.maximum(np.linalg.norm(rest, axis=1, keepdims=True), 1e-12)
    return (x * rest).sum(1).astype(np.float32)


def consistency_outliers(emb: np.ndarray, min_similarity: float, mad_factor: float = 3.0, min_size: int = 4) -> np.ndarray:
    """Members that do not look like the rest of their group.

    A member is an outlier when its similarity to the mean of the others is below ``min_similarity``, or (groups
    of at least ``min_size``, ``mad_factor`` > 0) below ``median - mad_factor * 1.4826 * MAD`` of the group's scores.
    On DreamBench (``mobilenet_v2``, multicrop), ``min_similarity=0.7`` alone caught 87 of 90 foreign images planted
    one per subject group, and flagged none of the 474 genuine members (3 seeds).

    Returns:
        Boolean mask of outliers.
    """
    return score_outliers(consistency_scores(emb), min_similarity, mad_factor, min_size)


def score_outliers(scores: np.ndarray, min_similarity: float, mad_factor: float = 3.0, min_size: int = 4) -> np.ndarray:
    """:func:`consistency_outliers` on already computed :func:`consistency_scores` (callers that report them)."""
    out = scores < min_similarity
    if mad_factor > 0 and scores.shape[0] >= min_size:
        med = float(np.median(scores))
        mad = float(np.median(np.abs(scores - med))) * 1.4826
        out |= scores < med - mad_factor * max(mad, 1e-3)
    return out
