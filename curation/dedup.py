"""Near-duplicate detection on L2-normalised embeddings with faiss, and the keep-one-per-cluster rule.

Two ways to find every pair with cosine similarity >= ``threshold``:

* **exact** (small sets, up to ``exact_max`` vectors): one faiss ``IndexFlatIP`` range search over all vectors.
* **partitioned** (large sets, SemDeDup style): seeded spherical k-means on a sample cuts the vectors into
  ``num_partitions`` cells; each vector lives in its nearest cell and is also compared with the vectors of its
  ``nprobe - 1`` next-nearest cells, so pairs near a cell border are still found. Memory stays at the input plus
  one cell's block at a time (no copy of the whole matrix).

Both return candidate pairs whose similarity is then recomputed per pair in float64 and compared with the
threshold, so the decision for a pair never depends on BLAS blocking or thread count.

Which image of a near-duplicate cluster is kept (documented rule): images are ranked by **resolution**
(width x height, larger first), **then id** (smaller first). Going down that ranking, an image is kept unless it is
similar (>= threshold) to an image already kept; it then points at the kept image it is most similar to
(``duplicate_of``). The kept set therefore holds no pair above the threshold, and the result is deterministic.

The pipeline and ``mrbench dedup`` use the image encoder's near-duplicate threshold (:mod:`mrbench.thresholds`: a
calibration file, else the operating point measured for the encoder, else an uncalibrated fallback).
``DEFAULT_THRESHOLD`` is ``mobilenet_v2``'s, the function default here; its curve on DreamBench photos with planted
near-duplicates is re-measured by ``tests/curation/test_dedup_real.py`` and ``bench/dedup_curve.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mrbench.curation.config import CurateConfig
from mrbench.curation.inputs import calibration_identity
from mrbench.log import get_logger
from mrbench.layout import RunLayout
from mrbench.shards import write_parquet_atomic
from mrbench.stage import Step
from mrbench.stats import Stats
from mrbench.thresholds import for_setting, resolve

log = get_logger(__name__)

DEFAULT_THRESHOLD = resolve("mobilenet_v2", "near_duplicate").threshold
# Pairs are searched slightly below the threshold and then decided on a float64 recomputation.
_SEARCH_MARGIN = 1e-4
# The partitioned search computes candidates in bfloat16 (error < 0.01 on unit vectors) this far below it.
_BF16_MARGIN = 0.015
EXACT_MAX = 50_000
# Sets up to this size are searched by one numpy product instead of a faiss index (see exact_similar_pairs).
SMALL_MAX = 1024


@dataclass(frozen=True)
class SimilarPairs:
    """Pairs ``(i[k], j[k])`` with ``i < j`` and cosine similarity ``sim[k]`` >= the threshold, sorted by (i, j)."""

    i: np.ndarray
    j: np.ndarray
    sim: np.ndarray

    def __len__(self) -> int:
        return int(self.i.shape[0])

    @classmethod
    def empty(cls) -> "SimilarPairs":
        return cls(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32))


@dataclass(frozen=True)
class DedupResult:
    """Per input row: ``duplicate_of`` is the index of the kept row it duplicates (-1 when kept) and
    ``similarity`` the cosine similarity to it (NaN when kept)."""

    duplicate_of: np.ndarray
    similarity: np.ndarray
    pairs: SimilarPairs

    @property
    def keep(self) -> np.ndarray:
        return self.duplicate_of < 0


def _as_matrix(emb: np.ndarray) -> np.ndarray:
    """A C-contiguous float32 (N, D) view of ``emb``; no copy when it already is one (memory-mapped files stay so)."""
    if not isinstance(emb, np.ndarray):
        emb = np.asarray(emb)
    if emb.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D array, got shape {emb.shape}")
    if emb.dtype != np.float32 or not emb.flags.c_contiguous:
        emb = np.ascontiguousarray(emb, dtype=np.float32)
    return emb


def _finish(emb: np.ndarray, i: np.ndarray, j: np.ndarray, threshold: float) -> SimilarPairs:
    """Unique (i < j) pairs, similarity recomputed in float64, kept when >= threshold; sorted by (i, j)."""
    if i.size == 0:
        return SimilarPairs.empty()
    lo = np.minimum(i, j).astype(np.int64)
    hi = np.maximum(i, j).astype(np.int64)
    keep = lo != hi
    key = np.unique(lo[keep] * emb.shape[0] + hi[keep])  # sorted, so pairs come out ordered by (i, j)
    lo, hi = key // emb.shape[0], key % emb.shape[0]
    sim = np.empty(lo.size, np.float64)
    step = 1 << 16
    for s in range(0, lo.size, step):
        a = emb[lo[s : s + step]].astype(np.float64)
        b = emb[hi[s : s + step]].astype(np.float64)
        sim[s : s + step] = np.einsum("ij,ij->i", a, b)
    ok = sim >= threshold
    return SimilarPairs(lo[ok], hi[ok], sim[ok].astype(np.float32))


def exact_similar_pairs(emb: np.ndarray, threshold: float) -> SimilarPairs:
    """Every pair with cosine similarity >= ``threshold``, by one exact faiss inner-product range search.

    Args:
        emb: (N, D) L2-normalised vectors.
        threshold: Cosine similarity threshold.

    Returns:
        The pairs, ``i < j``.
    """
    emb = _as_matrix(emb)
    n = emb.shape[0]
    if n < 2:
        return SimilarPairs.empty()
    if n <= SMALL_MAX:
        # Small sets (the per-group searches of the grouping step, a million of them at paper scale): one float32
        # product is far cheaper than building a faiss index and its OpenMP range search. Candidates are decided
        # by the same float64 recomputation, so the pairs are the same.
        gram = emb @ emb.T
        i, j = np.nonzero(np.triu(gram >= np.float32(float(threshold) - _SEARCH_MARGIN), 1))
        return _finish(emb, i.astype(np.int64), j.astype(np.int64), threshold)
    import faiss

    index = faiss.IndexFlatIP(emb.shape[1])
    index.add(emb)
    lims, _, labels = index.range_search(emb, float(threshold) - _SEARCH_MARGIN)
    queries = np.repeat(np.arange(emb.shape[0], dtype=np.int64), np.diff(lims).astype(np.int64))
    return _finish(emb, queries, labels.astype(np.int64), threshold)


def _spherical_kmeans(x: np.ndarray, k: int, seed: int, niter: int) -> np.ndarray:
    """(k, D) unit centroids of ``x`` by faiss spherical k-means, seeded."""
    import faiss

    if x.shape[0] <= k:  # too few points to cluster: each point is its own centroid
        return np.ascontiguousarray(x, dtype=np.float32)
    km = faiss.Kmeans(x.shape[1], k, niter=niter, seed=int(seed) % (2**31), spherical=True,
                      max_points_per_centroid=1 << 20, min_points_per_centroid=1, verbose=False)
    km.train(np.ascontiguousarray(x, dtype=np.float32))
    return km.centroids


def _bf16(x: np.ndarray, rows: int | None = None):  # noqa: ANN202 - a torch tensor; torch is imported lazily
    """float32 -> bfloat16 by truncating the low 16 bits (several times faster than torch's rounding cast),
    zero-padded to ``rows`` rows."""
    import torch

    bits = np.zeros((rows or x.shape[0], x.shape[1]), np.uint16)
    bits[: x.shape[0]] = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32) >> 16
    return torch.from_numpy(bits).view(torch.bfloat16)


def _padded(n: int, step: int = 128) -> int:
    """Round a matrix side up to a multiple of ``step``: oneDNN keeps compiled kernels per distinct matrix shape,
    so arbitrary shapes (one per cell) would pile up hundreds of MB; rounded ones stay a few dozen shapes."""
    return max(step, -(-n // step) * step)


@dataclass(frozen=True)
class Partition:
    """Each vector's ``nprobe`` nearest k-means cells (nearest first) and its cosine to their centroids."""

    cells: np.ndarray  # (N, nprobe) int32
    sims: np.ndarray  # (N, nprobe) float32
    num_cells: int


def partition(
    emb: np.ndarray, k: int, nprobe: int, seed: int, niter: int = 8, sample_per_cell: int = 24, block: int = 1 << 14
) -> Partition:
    """Seeded spherical k-means cells (trained on a seeded sample) and each vector's ``nprobe`` nearest cells.

    Similarities to the centroids are computed in bfloat16 (about 3x faster than float32 on CPUs with bf16
    units); an assignment only has to be consistent, not exact. Ties resolve to the smaller cell id.
    """
    import torch

    n, _ = emb.shape
    rng = np.random.default_rng(seed)
    sample = emb[np.sort(rng.choice(n, min(n, k * sample_per_cell), replace=False))]
    centroids = _spherical_kmeans(sample, k, seed, niter)
    cent_t = _bf16(centroids).T.contiguous()
    nprobe = min(nprobe, centroids.shape[0])
    cells = np.empty((n, nprobe), np.int32)
    sims = np.empty((n, nprobe), np.float32)
    for s in range(0, n, block):
        m = min(block, n - s)
        val, idx = torch.topk(_bf16(emb[s : s + m], _padded(m, block)) @ cent_t, nprobe, dim=1, sorted=True)
        cells[s : s + m], sims[s : s + m] = idx[:m].numpy(), val[:m].float().numpy()
    return Partition(cells, sims, centroids.shape[0])


def partitioned_similar_pairs(
    emb: np.ndarray,
    threshold: float,
    num_partitions: int | None = None,
    nprobe: int = 4,
    seed: int = 0,
    probe_margin: float = 0.05,
) -> SimilarPairs:
    """Pairs with cosine similarity >= ``threshold``, searched within and across neighbouring k-means cells.

    SemDeDup-style: seeded spherical k-means cuts the vectors into cells. Each vector belongs to its nearest
    cell and is compared, in full dimension, with every vector of that cell and of those of its next
    ``nprobe - 1`` nearest cells whose centroid is within ``probe_margin`` cosine of the nearest one (a
    near-duplicate lands across a border only when the vector is close to that border). A pair is found when
    either vector probes the other's cell. Recall on planted pairs is measured by ``bench/dedup.py``.

    Candidate similarities are computed in bfloat16 (error below 0.01 for unit vectors: inputs truncated to 8
    mantissa bits, float32 accumulation, bf16 output), searched ``_BF16_MARGIN`` below the threshold, then
    every candidate is recomputed in float64; the bf16 step therefore costs no recall and decides nothing.

    Args:
        emb: (N, D) L2-normalised vectors (not copied: memory is the input plus one cell block at a time).
        threshold: Cosine similarity threshold.
        num_partitions: Number of k-means cells; default ``sqrt(N)``.
        nprobe: Most cells compared per vector (its own and the next nearest).
        seed: Seeds the k-means sample and initialisation.
        probe_margin: A further cell is probed only when its centroid's cosine to the vector is within this
            margin of the nearest centroid's.

    Returns:
        The pairs, ``i < j``.
    """
    import torch

    if threshold <= 2 * _BF16_MARGIN:
        raise ValueError(f"the partitioned search is for near-duplicates; threshold {threshold} is too low")
    emb = _as_matrix(emb)
    n = emb.shape[0]
    if n < 2:
        return SimilarPairs.empty()
    k = num_partitions or max(1, int(round(math.sqrt(n))))
    k = max(1, min(k, n // 4 or 1))
    part = partition(emb, k, nprobe, seed)
    k = part.num_cells
    home = part.cells[:, 0]
    order = np.argsort(home, kind="stable")
    starts = np.searchsorted(home[order], np.arange(k + 1))
    extra = part.cells.shape[1] > 1
    if extra:
        use = part.sims[:, :1] - part.sims[:, 1:] <= probe_margin
        probe_row, probe_col = np.nonzero(use)
        probe_cell = part.cells[probe_row, probe_col + 1]
        by_cell = np.argsort(probe_cell, kind="stable")
        probe_rows = probe_row[by_cell].astype(np.int64)
        probe_starts = np.searchsorted(probe_cell[by_cell], np.arange(k + 1))
        del use, probe_row, probe_col, probe_cell, by_cell
    del part, home
    # Thresholds are applied to the raw bf16 bits viewed as int16: for non-negative values the order of the bit
    # patterns is the order of the values, and negative values (sign bit set) compare below any positive cut.
    cut_bits = np.int16(np.float32(float(threshold) - _BF16_MARGIN).view(np.uint32) >> 16)  # truncation rounds down
    found_i: list[np.ndarray] = [np.empty(0, np.int64)]
    found_j: list[np.ndarray] = [np.empty(0, np.int64)]
    no_probes = np.empty(0, np.int64)
    for c in range(k):
        members = order[starts[c] : starts[c + 1]]
        if members.size == 0:
            continue
        # One product per cell: its members and the vectors probing it, against its members. Found pairs may
        # repeat (a, b) / (b, a); _finish keeps each once.
        queries = np.concatenate([members, probe_rows[probe_starts[c] : probe_starts[c + 1]] if extra else no_probes])
        base_t = _bf16(emb[members], _padded(members.size)).T.contiguous()
        for lo in range(0, queries.size, 4096):
            q = queries[lo : lo + 4096]
            sims = (_bf16(emb[q], _padded(q.size)) @ base_t).view(torch.int16).numpy()
            diag = np.arange(lo, min(lo + q.size, members.size))
            sims[diag - lo, diag] = 0  # self-similarity is not a pair (and would make every member row a hit)
            hit = np.flatnonzero(sims[: q.size, : members.size].max(1) >= cut_bits)  # rare: scan rows first
            if hit.size:
                a, b = np.nonzero(sims[hit, : members.size] >= cut_bits)
                found_i.append(q[hit[a]])
                found_j.append(members[b])
    return _finish(emb, np.concatenate(found_i), np.concatenate(found_j), threshold)


def similar_pairs(
    emb: np.ndarray,
    threshold: float = DEFAULT_THRESHOLD,
    *,
    exact_max: int = EXACT_MAX,
    num_partitions: int | None = None,
    nprobe: int = 4,
    seed: int = 0,
) -> SimilarPairs:
    """Every pair above ``threshold``: exact range search up to ``exact_max`` vectors, partitioned beyond.

    Args:
        emb: (N, D) L2-normalised vectors.
        threshold: Cosine similarity threshold.
        exact_max: Largest N searched exactly.
        num_partitions: k-means cells for the partitioned search (default ``sqrt(N)``).
        nprobe: Cells each vector is compared against in the partitioned search.
        seed: Seeds the partitioning.

    Returns:
        The pairs, ``i < j``.
    """
    emb = _as_matrix(emb)
    if emb.shape[0] <= exact_max:
        return exact_similar_pairs(emb, threshold)
    return partitioned_similar_pairs(emb, threshold, num_partitions, nprobe, seed)


def keep_rank(resolution: Sequence[int] | np.ndarray, ids: Sequence[str]) -> np.ndarray:
    """Rank of each row under the keep rule: larger resolution first, then smaller id. 0 is the best."""
    res = np.asarray(resolution, dtype=np.int64)
    order = sorted(range(len(ids)), key=lambda k: (-int(res[k]), ids[k]))
    rank = np.empty(len(ids), np.int64)
    rank[order] = np.arange(len(ids))
    return rank


def choose_representatives(pairs: SimilarPairs, rank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Greedy keep rule over near-duplicate pairs, best rank first (see the module docstring).

    Args:
        pairs: Similar pairs over ``len(rank)`` rows.
        rank: Keep priority of each row (lower is better; a permutation of ``range(N)``).

    Returns:
        ``duplicate_of`` (index of the kept row a dropped row duplicates, -1 when kept) and ``similarity``
        (cosine to it, NaN when kept).
    """
    n = rank.shape[0]
    dup = np.full(n, -1, np.int64)
    sim_out = np.full(n, np.nan, np.float32)
    if len(pairs) == 0:
        return dup, sim_out
    # Direct each pair from the better-ranked row to the worse one: only better rows can absorb a row.
    better = np.where(rank[pairs.i] < rank[pairs.j], pairs.i, pairs.j)
    worse = np.where(rank[pairs.i] < rank[pairs.j], pairs.j, pairs.i)
    by_worse = np.lexsort((rank[better], -pairs.sim.astype(np.float64), rank[worse]))
    better, worse, sims = better[by_worse], worse[by_worse], pairs.sim[by_worse]
    # Rows are decided in rank order; for each row its candidates come most-similar first (ties: better rank).
    bounds = np.flatnonzero(np.diff(worse)) + 1
    for seg_b, seg_w, seg_s in zip(np.split(better, bounds), np.split(worse, bounds), np.split(sims, bounds)):
        row = int(seg_w[0])
        for b, s in zip(seg_b.tolist(), seg_s.tolist()):
            if dup[b] < 0:  # b is kept (it was decided earlier, being better ranked)
                dup[row] = b
                sim_out[row] = s
                break
    return dup, sim_out


def dedup(
    emb: np.ndarray,
    ids: Sequence[str],
    resolution: Sequence[int] | np.ndarray | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    *,
    groups: Sequence[str] | None = None,
    exact_max: int = EXACT_MAX,
    num_partitions: int | None = None,
    nprobe: int = 3,
    seed: int = 0,
) -> DedupResult:
    """Near-duplicate removal: find similar pairs, keep one image per cluster by the documented rule.

    Args:
        emb: (N, D) L2-normalised embeddings, one row per id.
        ids: Row ids (the keep rule's tie-break).
        resolution: Pixels per row (width x height); all equal when None.
        threshold: Cosine similarity at or above which two images are near-duplicates.
        groups: When given, only rows with the same group label are compared (within-group dedup).
        exact_max: Largest set searched exactly (per group when ``groups`` is given).
        num_partitions: k-means cells for large sets.
        nprobe: Cells compared per vector for large sets.
        seed: Seeds the partitioning of large sets.

    Returns:
        A :class:`DedupResult` aligned with ``ids``.
    """
    emb = _as_matrix(emb)
    if emb.shape[0] != len(ids):
        raise ValueError(f"{emb.shape[0]} embeddings for {len(ids)} ids")
    res = np.zeros(len(ids), np.int64) if resolution is None else np.asarray(resolution, np.int64)
    rank = keep_rank(res, list(ids))
    if groups is None:
        pairs = similar_pairs(emb, threshold, exact_max=exact_max, num_partitions=num_partitions, nprobe=nprobe, seed=seed)
    else:
        labels = np.asarray(list(groups), dtype=object)
        parts: list[SimilarPairs] = []
        for g in sorted(set(labels.tolist())):
            rows = np.flatnonzero(labels == g)
            if rows.size < 2:
                continue
            p = similar_pairs(emb[rows], threshold, exact_max=exact_max, num_partitions=num_partitions, nprobe=nprobe, seed=seed)
            parts.append(SimilarPairs(rows[p.i], rows[p.j], p.sim))
        pairs = _merge(parts)
    dup, sim = choose_representatives(pairs, rank)
    return DedupResult(dup, sim, pairs)


def _merge(parts: list[SimilarPairs]) -> SimilarPairs:
    if not parts:
        return SimilarPairs.empty()
    i = np.concatenate([p.i for p in parts])
    j = np.concatenate([p.j for p in parts])
    s = np.concatenate([p.sim for p in parts])
    order = np.lexsort((j, i))
    return SimilarPairs(i[order], j[order], s[order])


DUPLICATE_SCHEMA = pa.schema([("id", pa.string()), ("duplicate_of", pa.string()), ("similarity", pa.float32())])


def dedup_step(config: CurateConfig, run_dir: Path) -> Stats:
    """Global step: near-duplicates among the indexed images -> ``dedup/duplicates.parquet`` (one row per drop).

    Reads ``index/`` (memory-mapped), keeps one image per near-duplicate cluster by the module's rule, and writes
    the dropped ids with the kept image they duplicate and the similarity; the grouping step drops them with reason
    ``near_duplicate``. Skipped when complete.
    """
    from mrbench.curation.index import FeatureIndex

    index = FeatureIndex.load(run_dir)
    has = np.flatnonzero(index.row >= 0)
    threshold = for_setting(config, "dedup.threshold").threshold  # type: ignore[union-attr]
    ids = [index.ids[k] for k in has]
    # Normally every indexed image has a vector: search the memory-mapped matrix itself rather than a copy.
    vectors = index.vectors if has.size == index.vectors.shape[0] == len(index.ids) else index.image_vectors(has)
    result = dedup(
        vectors, ids, index.resolution[has], threshold,
        exact_max=config.dedup.exact_max, nprobe=config.dedup.nprobe, seed=config.seed,
    )
    dropped = np.flatnonzero(~result.keep)
    table = pa.table(
        {"id": [ids[k] for k in dropped], "duplicate_of": [ids[result.duplicate_of[k]] for k in dropped],
         "similarity": result.similarity[dropped]},
        schema=DUPLICATE_SCHEMA,
    ).sort_by("id")
    write_parquet_atomic(table, RunLayout(run_dir).duplicates)
    stats = Stats()
    stats.inc("dedup/images", len(ids))
    stats.inc("dedup/pairs", len(result.pairs))
    stats.inc("dedup/dropped/near_duplicate", int(dropped.size))
    return stats


def read_duplicates(run_dir: Path) -> dict[str, tuple[str, str]]:
    """Id -> (``near_duplicate``, detail) from ``dedup/duplicates.parquet`` (empty when dedup did not run)."""
    path = RunLayout(run_dir).duplicates
    if not path.exists():
        return {}
    return {
        r["id"]: ("near_duplicate", f"cosine {r['similarity']:.4f} to {r['duplicate_of']}")
        for r in pq.read_table(path).to_pylist()
    }


def dedup_enabled(config: CurateConfig) -> bool:
    """Near-duplicate removal needs image embeddings."""
    return bool(config.embed.encoder and config.dedup.enabled)


DEDUP_STEP = Step("dedup", dedup_step, after="index", reads=("index",), enabled=dedup_enabled,
                  drops=(("dedup", ("near_duplicate",)),), settings=("seed", "dedup", "embed.encoder", "calibration"), inputs=calibration_identity)
