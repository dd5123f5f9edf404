"""Clustering rules on seeded synthetic embeddings: K given, threshold, K inferred, large sets, outliers."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from mrbench.curation.cluster import (
    cluster_embeddings, consistency_outliers, consistency_scores, dominant_cluster, face_threshold,
)


def blobs(sizes: list[int], dim: int = 32, spread: float = 0.25, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((len(sizes), dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x, y = [], []
    for k, n in enumerate(sizes):
        pts = centres[k] + spread * rng.standard_normal((n, dim)) / np.sqrt(dim)
        x.append(pts)
        y += [k] * n
    x = np.concatenate(x)
    order = rng.permutation(len(y))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True))[order].astype(np.float32)
    return x, np.array(y)[order]


def test_k_given_recovers_separated_groups_and_labels_follow_first_appearance():
    x, y = blobs([12, 8, 15, 5, 10], seed=1)
    c = cluster_embeddings(x, num_clusters=5)
    assert c.num_clusters == 5 and adjusted_rand_score(y, c.labels) == pytest.approx(1.0)
    first = [int(c.labels[np.flatnonzero(c.labels == k)[0]]) for k in range(5)]
    assert c.labels[0] == 0 and sorted(first) == list(range(5))
    assert [int(l) for l in dict.fromkeys(c.labels.tolist())] == list(range(5))  # numbered by first appearance


def test_k_inferred_by_silhouette():
    x, y = blobs([10, 10, 10, 10, 10, 10, 10], seed=2)
    c = cluster_embeddings(x)
    assert c.num_clusters == 7 and adjusted_rand_score(y, c.labels) == pytest.approx(1.0)
    assert c.silhouette is not None and c.silhouette > 0.5


def test_threshold_cut_is_average_similarity():
    # two tight identities whose cross similarity is ~0.6, plus one stray at ~0.3 from both
    a = np.array([1.0, 0.0, 0.0])
    b = np.array([0.6, 0.8, 0.0])
    stray = np.array([0.3, 0.1, 0.95])
    rng = np.random.default_rng(3)
    x = np.stack([a + 0.02 * rng.standard_normal(3) for _ in range(4)] + [b + 0.02 * rng.standard_normal(3) for _ in range(3)] + [stray])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    assert cluster_embeddings(x, threshold=0.9).labels.tolist() == [0, 0, 0, 0, 1, 1, 1, 2]
    assert cluster_embeddings(x, threshold=0.5).labels.tolist() == [0] * 7 + [1]
    assert dominant_cluster(cluster_embeddings(x, threshold=0.9).labels) == 0
    with pytest.raises(ValueError, match="not both"):
        cluster_embeddings(x, num_clusters=2, threshold=0.5)


def test_large_sets_go_through_seeded_kmeans_and_stay_deterministic():
    x, y = blobs([300, 200, 250, 150], dim=16, spread=0.3, seed=4)
    a = cluster_embeddings(x, num_clusters=4, max_direct=60, seed=5)
    b = cluster_embeddings(x, num_clusters=4, max_direct=60, seed=5)
    assert "k-means" in a.method and np.array_equal(a.labels, b.labels)
    assert adjusted_rand_score(y, a.labels) > 0.95


def test_consistency_outliers_flag_the_foreign_member_only():
    x, _ = blobs([9], dim=32, spread=0.5, seed=6)
    rng = np.random.default_rng(7)
    foreign = rng.standard_normal(32).astype(np.float32)
    group = np.concatenate([x, (foreign / np.linalg.norm(foreign))[None]])
    scores = consistency_scores(group)
    assert scores[-1] < 0.5 < scores[:-1].min()
    assert consistency_outliers(group, min_similarity=0.5).tolist() == [False] * 9 + [True]
    # the MAD rule alone (no floor) also finds it; with both rules off nothing is flagged
    assert consistency_outliers(group, -1.0, mad_factor=3.0).tolist() == [False] * 9 + [True]
    assert not consistency_outliers(group, -1.0, mad_factor=0.0).any()


def test_face_thresholds_per_encoder():
    assert face_threshold("dlib") == 0.926  # measured: mrbench.thresholds.CALIBRATED
    assert face_threshold("insightface-tiny") == face_threshold("insightface") == 0.40  # documented fallback
    assert 0 < face_threshold("somebody-elses-face-model") < 1
