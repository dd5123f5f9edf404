"""Benchmark: near-duplicate search on 1,000,000 x 512 normalised float32 vectors with planted pairs.

The vectors imitate image embeddings: each belongs to one of ``--concepts`` seeded concept directions (pairs
inside a concept have cosine about 0.3 to 0.7, like photos of one kind of thing); ``--pairs`` rows are replaced
by near-duplicates of other rows, at cosine similarity drawn uniformly from [0.92, 0.995] (threshold 0.9).

Prints: recall of the planted pairs, pairs found, wall time, peak RSS, and the ratio to an exact faiss range
search (``IndexFlatIP.range_search``) measured on a 100k subset in the same run (same vectors, same threshold),
plus the exact search's time extrapolated to the full set (it grows with N^2).

Run: ``python bench/dedup.py`` (``--n 200000`` for a quick look). Targets on a 2-core machine: recall >= 0.99,
wall time <= 60 s, peak RSS <= 3 GB.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import numpy as np

from mrbench.curation.dedup import exact_similar_pairs, partitioned_similar_pairs


def make_vectors(n: int, dim: int, concepts: int, num_pairs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Clustered unit vectors with ``num_pairs`` planted near-duplicate pairs; returns (vectors, pairs (P, 2))."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((concepts, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = np.empty((n, dim), np.float32)
    step = 8192
    for s in range(0, n, step):  # in chunks: no float64 or full-size temporaries (peak memory is the point)
        m = min(step, n - s)
        c = rng.integers(0, concepts, m)
        weight = rng.uniform(0.55, 0.85, m).astype(np.float32)[:, None]  # how typical of its concept
        noise = rng.standard_normal((m, dim), dtype=np.float32)
        noise /= np.linalg.norm(noise, axis=1, keepdims=True)
        block = centres[c] * weight + noise * np.sqrt(1 - weight**2)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        x[s : s + m] = block
    # Planted pairs: row b becomes a perturbed copy of row a with cosine exactly `target`.
    rows = rng.choice(n, 2 * num_pairs, replace=False)
    a, b = rows[:num_pairs], rows[num_pairs:]
    target = rng.uniform(0.92, 0.995, num_pairs).astype(np.float32)[:, None]
    noise = rng.standard_normal((num_pairs, dim), dtype=np.float32)
    noise -= (noise * x[a]).sum(1, keepdims=True) * x[a]  # orthogonal to the original
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    x[b] = x[a] * target + noise * np.sqrt(1 - target**2)
    return x, np.sort(np.stack([a, b], 1), axis=1)


def recall_of(found_i: np.ndarray, found_j: np.ndarray, planted: np.ndarray, n: int) -> float:
    found = set((found_i.astype(np.int64) * n + found_j).tolist())
    keys = planted[:, 0].astype(np.int64) * n + planted[:, 1]
    return float(np.mean([k in found for k in keys.tolist()]))


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # ru_maxrss is KiB on Linux


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--concepts", type=int, default=2000)
    ap.add_argument("--pairs", type=int, default=10_000)
    ap.add_argument("--threshold", type=float, default=0.9)
    ap.add_argument("--nprobe", type=int, default=4)
    ap.add_argument("--partitions", type=int, default=0, help="k-means cells (default sqrt(N))")
    ap.add_argument("--subset", type=int, default=100_000, help="size of the exact-search comparison (0: skip)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    x, planted = make_vectors(args.n, args.dim, args.concepts, args.pairs, args.seed)
    t_gen = time.perf_counter() - t0
    print(f"data: {args.n:,} x {args.dim} float32 ({x.nbytes / 1e9:.2f} GB), {len(planted):,} planted pairs, "
          f"generated in {t_gen:.1f} s")

    t0 = time.perf_counter()
    pairs = partitioned_similar_pairs(x, args.threshold, args.partitions or None, args.nprobe, args.seed)
    t_full = time.perf_counter() - t0
    recall = recall_of(pairs.i, pairs.j, planted, args.n)
    rss = peak_rss_gb()
    print(f"partitioned search (nprobe={args.nprobe}): {len(pairs):,} pairs >= {args.threshold}, "
          f"planted-pair recall {recall:.4f}, wall {t_full:.1f} s, peak RSS {rss:.2f} GB")

    ok = recall >= 0.99 and t_full <= 60 and rss <= 3.0
    if args.subset:
        m = min(args.subset, args.n)
        # The comparison needs only the first m rows: shrink the array in place (no copy), so the comparison does
        # not add to the peak memory of the main measurement.
        x.resize((m, args.dim), refcheck=False)
        sub = x
        in_sub = planted[planted[:, 1] < m]
        t0 = time.perf_counter()
        ours = partitioned_similar_pairs(sub, args.threshold, None, args.nprobe, args.seed)
        t_ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        exact = exact_similar_pairs(sub, args.threshold)
        t_exact = time.perf_counter() - t0
        agree = recall_of(ours.i, ours.j, np.stack([exact.i, exact.j], 1), m) if len(exact) else 1.0
        print(f"{m:,}-vector subset: exact faiss range search {t_exact:.1f} s ({len(exact):,} pairs), partitioned "
              f"{t_ours:.1f} s -> exact/partitioned time ratio {t_exact / t_ours:.1f}x; partitioned finds "
              f"{agree:.4f} of the exact pairs ({len(in_sub)} planted in the subset)")
        est = t_exact * (args.n / m) ** 2
        print(f"exact search on all {args.n:,} extrapolated (N^2): {est:.0f} s -> ratio {est / t_full:.0f}x")
        print(f"peak RSS after the comparison {peak_rss_gb():.2f} GB")
    print("PASS" if ok else "FAIL", "(targets: recall >= 0.99, wall <= 60 s, peak RSS <= 3 GB)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
