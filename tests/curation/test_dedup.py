"""Near-duplicate search (exact and partitioned) and the keep rule, on seeded synthetic vectors."""

from __future__ import annotations

import numpy as np
import pytest

from mrbench.curation.dedup import (
    SimilarPairs, choose_representatives, dedup, exact_similar_pairs, keep_rank, partitioned_similar_pairs,
    similar_pairs,
)


def clustered(n: int, dim: int, seed: int, concepts: int = 20) -> np.ndarray:
    """Unit vectors around seeded concept directions (within-concept cosine about 0.3-0.7)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((concepts, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    w = rng.uniform(0.55, 0.85, (n, 1)).astype(np.float32)
    noise = rng.standard_normal((n, dim)).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    x = centres[rng.integers(0, concepts, n)] * w + noise * np.sqrt(1 - w**2)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def plant(x: np.ndarray, pairs: int, lo: float, hi: float, seed: int) -> np.ndarray:
    """Overwrite rows with copies of other rows at cosine drawn from [lo, hi]; returns the (a, b) pairs, a < b."""
    rng = np.random.default_rng(seed)
    rows = rng.choice(x.shape[0], 2 * pairs, replace=False)
    a, b = rows[:pairs], rows[pairs:]
    cos = rng.uniform(lo, hi, (pairs, 1))
    noise = rng.standard_normal((pairs, x.shape[1]))
    noise -= (noise * x[a]).sum(1, keepdims=True) * x[a]
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    x[b] = (x[a] * cos + noise * np.sqrt(1 - cos**2)).astype(np.float32)
    return np.sort(np.stack([a, b], 1), axis=1)


def brute_force(x: np.ndarray, t: float) -> set[tuple[int, int]]:
    s = x.astype(np.float64) @ x.astype(np.float64).T
    i, j = np.nonzero(np.triu(s >= t, 1))
    return set(zip(i.tolist(), j.tolist()))


def as_set(p: SimilarPairs) -> set[tuple[int, int]]:
    return set(zip(p.i.tolist(), p.j.tolist()))


def test_exact_range_search_equals_brute_force():
    x = clustered(1500, 64, seed=1)
    plant(x, 40, 0.9, 0.99, seed=2)
    got = exact_similar_pairs(x, 0.9)
    assert as_set(got) == brute_force(x, 0.9)
    assert len(got) >= 40
    assert np.all(got.i < got.j) and np.all(got.sim >= 0.9)
    # sorted by (i, j) and similarities are the float64 cosines
    assert np.all(np.diff(got.i * x.shape[0] + got.j) > 0)
    np.testing.assert_allclose(got.sim, (x[got.i].astype(np.float64) * x[got.j]).sum(1), atol=1e-6)


def test_partitioned_search_recalls_planted_pairs_and_only_true_pairs():
    x = clustered(30_000, 128, seed=3, concepts=60)
    planted = plant(x, 300, 0.9, 0.99, seed=4)
    got = partitioned_similar_pairs(x, 0.88, num_partitions=150, nprobe=4, seed=0)
    found = as_set(got)
    recall = np.mean([tuple(p) in found for p in planted.tolist()])
    assert recall >= 0.99
    # every reported pair is a true pair: similarity recomputed exactly and above the threshold
    np.testing.assert_allclose(got.sim, (x[got.i].astype(np.float64) * x[got.j]).sum(1), atol=1e-6)
    assert got.sim.min() >= 0.88
    # and it agrees with the exact search on a subset of its own vectors
    sub = np.ascontiguousarray(x[:8000])
    exact = as_set(exact_similar_pairs(sub, 0.88))
    part = as_set(partitioned_similar_pairs(sub, 0.88, num_partitions=60, nprobe=4, seed=0))
    assert part <= exact and len(part) >= 0.97 * len(exact) and len(exact) > 10


def test_pairs_just_above_the_threshold_survive_the_bf16_candidate_step():
    x = clustered(6000, 96, seed=5)
    planted = plant(x, 60, 0.9005, 0.902, seed=6)  # within 0.002 of the threshold
    found = as_set(partitioned_similar_pairs(x, 0.9, num_partitions=10, nprobe=10, seed=1, probe_margin=2.0))
    assert all(tuple(p) in found for p in planted.tolist())  # all cells probed: the bf16 margin must not lose any


def test_partitioned_search_is_deterministic_and_seeded():
    x = clustered(5000, 64, seed=7)
    plant(x, 50, 0.92, 0.99, seed=8)
    a = partitioned_similar_pairs(x, 0.9, num_partitions=40, seed=11)
    b = partitioned_similar_pairs(x, 0.9, num_partitions=40, seed=11)
    assert np.array_equal(a.i, b.i) and np.array_equal(a.j, b.j) and np.array_equal(a.sim, b.sim)
    with pytest.raises(ValueError, match="near-duplicates"):
        partitioned_similar_pairs(x, 0.01)


def test_similar_pairs_switches_to_partitioned_above_exact_max():
    x = clustered(3000, 32, seed=9)
    plant(x, 30, 0.95, 0.99, seed=10)
    exact = as_set(similar_pairs(x, 0.93, exact_max=10_000))
    part = as_set(partitioned_similar_pairs(x, 0.93, num_partitions=8, nprobe=8, probe_margin=2.0))  # every cell probed
    assert as_set(similar_pairs(x, 0.93, exact_max=100)) <= exact
    assert exact == part == brute_force(x, 0.93)


def test_keep_rule_resolution_then_id_and_no_chains():
    # a ~ b and b ~ c but a !~ c: keeping a drops b; c is then kept (its only near-duplicate was dropped).
    e = np.zeros((4, 3), np.float32)
    e[0] = [1, 0, 0]
    e[1] = [np.cos(0.3), np.sin(0.3), 0]
    e[2] = [np.cos(0.6), np.sin(0.6), 0]
    e[3] = [0, 0, 1]
    ids = ["a", "b", "c", "d"]
    res = dedup(e, ids, [100, 100, 100, 100], threshold=float(np.cos(0.35)))
    assert res.duplicate_of.tolist() == [-1, 0, -1, -1]
    assert res.similarity[1] == pytest.approx(np.cos(0.3), abs=1e-6) and np.isnan(res.similarity[0])
    # more pixels wins over a smaller id: b is kept, a and c point at it
    res = dedup(e, ids, [100, 400, 100, 100], threshold=float(np.cos(0.35)))
    assert res.duplicate_of.tolist() == [1, -1, 1, -1]
    # equal resolution: the smaller id is kept, whatever the input order
    twins = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0]], np.float32)
    for order in ([0, 1, 2], [1, 0, 2]):
        names = [["x1", "x2", "y"][k] for k in order]
        res = dedup(twins[order], names, None, threshold=0.99)
        kept = [n for n, d in zip(names, res.duplicate_of) if d < 0]
        assert kept == sorted(kept) and "x1" in kept and "x2" not in kept


def test_dropped_row_points_at_its_most_similar_kept_row():
    e = np.array([[1, 0, 0], [0.96, 0.28, 0], [0.99, 0.141, 0]], np.float32)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    rank = keep_rank([300, 200, 100], ["a", "b", "c"])
    pairs = exact_similar_pairs(e, 0.95)
    dup, sim = choose_representatives(pairs, rank)
    # b is dropped (a kept), c duplicates a (0.99) rather than b (b is not kept anyway)
    assert dup.tolist() == [-1, 0, 0]
    assert sim[2] == pytest.approx(float(e[0] @ e[2]), abs=1e-6)


def test_within_group_dedup_ignores_pairs_across_groups():
    e = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], np.float32)
    res = dedup(e, ["a", "b", "c", "d"], None, 0.99, groups=["g1", "g2", "g2", "g2"])
    assert res.duplicate_of.tolist() == [-1, -1, -1, 2]  # a and b are twins but in different groups
    with pytest.raises(ValueError, match="embeddings for"):
        dedup(e, ["a"], None, 0.9)


def test_model_and_threshold_config_errors_fail_before_any_work():
    from mrbench.config import ConfigError
    from mrbench.curation.config import CurateConfig, SourceConfig

    def cfg(**kw) -> CurateConfig:
        c = CurateConfig(sources=[SourceConfig(kind="folder", paths=["x"])])
        for key, value in kw.items():
            section, _, name = key.partition("__")
            setattr(getattr(c, section), name, value)
        return c

    cfg(embed__encoder="mobilenet_v2", embed__face_encoder="dlib").validate()
    with pytest.raises(ConfigError, match="did you mean 'mobilenet_v2'"):
        cfg(embed__encoder="mobilenet").validate()
    with pytest.raises(ConfigError, match="is a face encoder"):
        cfg(embed__encoder="dlib").validate()
    with pytest.raises(ConfigError, match="not a face encoder"):
        cfg(embed__face_encoder="mobilenet_v2").validate()
    with pytest.raises(ConfigError, match="dedup.threshold"):
        cfg(dedup__threshold=1.5).validate()
    with pytest.raises(ConfigError, match="near-duplicates"):
        cfg(dedup__threshold=0.01).validate()
