"""Benchmark: the global steps (group + refine + split + leakage audit + release) at the paper's scale.

For each size, a run folder is written in the real on-disk format of the earlier steps, as ``mrbench curate``
would leave it: ``download/`` shards (ids, captions, tags, categories, small image bytes, sha256, some failed
rows, some byte duplicates) and ``embed/`` shards (an image embedding per image, face boxes and a face embedding
for person categories). The vectors are synthetic but structured like real ones: each tag group has a concept
direction; planted near-duplicates inside groups (``duplicate_in_group``), planted copies across groups (leaks
for the audit), inconsistent members in subject groups, other identities in person groups; about 2.1 images per
group as in the paper, plus one big tag group and a pool of untagged images (each ``--big-frac`` of the images)
so in-group dedup and visual grouping run on large groups too. The index step then builds ``index/`` (timed
apart: it is not one of the global steps measured).

Measured, in a fresh process per size (so peak RSS is that size's own): ``group_and_split`` (group by tag,
refine with the embeddings: identities, outliers, in-group dedup, visual groups of untagged images; split by
group; leakage audit), every release shard and ``finalize_release`` (card, EasyRef JSON, manifest, verify).
Prints time per step, peak RSS, the fitted growth exponent of the total time over the sizes and its
extrapolation to 2.1M images.

Run: ``python bench/scale.py`` (acceptance: ``--sizes 100000,300000,1000000``; goals 1M images in <= 5 min and
<= 4 GB peak RSS); ``--sizes 10000,30000`` for a quick look. ``--check-against /work/main`` additionally runs the
timed steps with another checkout's code on the smallest size and compares the releases byte for byte.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

PAPER_IMAGES = 2_100_000


def _config(num_shards: int, seed: int):  # noqa: ANN202 - CurateConfig, imported lazily with the checkout's code
    """The default curation config (paper split sizes: 50 held-out, 300 held-in groups) with both embedders."""
    from mrbench.curation.config import CurateConfig, EmbedConfig, SourceConfig

    return CurateConfig(seed=seed, num_shards=num_shards, sources=[SourceConfig(paths=["synthetic.parquet"])],
                        embed=EmbedConfig(encoder="mobilenet_v2", face_encoder="dlib"))


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _lists(x: np.ndarray | None, mask: np.ndarray) -> pa.Array:
    """(N, D) rows -> list<float32> with nulls where ``mask`` is False (built from buffers, no Python loop)."""
    n = mask.size
    if x is None or x.shape[1] == 0:
        return pa.nulls(n, pa.list_(pa.float32()))
    d = x.shape[1]
    lengths = np.where(mask, d, 0)
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    values = pa.array(np.ascontiguousarray(x[mask]).reshape(-1), pa.float32())
    return pa.ListArray.from_arrays(pa.array(offsets), values, mask=pa.array(~mask))


def generate(run: Path, n: int, num_shards: int, dim: int, face_dim: int, big_frac: float, seed: int) -> dict:
    """Write ``download/`` and ``embed/`` shards of ``n`` synthetic images into ``run`` (see the module docstring)."""
    from mrbench.curation.embed import FEATURE_SCHEMA
    from mrbench.shards import RECORD_SCHEMA, ShardSet, write_parquet_atomic
    from mrbench.stats import Stats

    rng = np.random.default_rng(seed)
    n_big = n_untagged = int(n * big_frac)
    n_small = n - n_big - n_untagged
    # Small tag groups: 1 + Poisson(1.1) images (mean 2.1, as in the paper).
    sizes = 1 + rng.poisson(1.1, int(n_small / 2.1) + 16)
    sizes = sizes[: np.searchsorted(np.cumsum(sizes), n_small) + 1]
    sizes[-1] -= sizes.sum() - n_small
    sizes = sizes[sizes > 0]
    group = np.repeat(np.arange(sizes.size), sizes)
    big_id, untagged_id = sizes.size, sizes.size + 1
    group = np.concatenate([group, np.full(n_big, big_id), np.full(n_untagged, untagged_id)])
    num_groups = sizes.size + 2
    cat_names = np.array(["celebrity", "character", "subject", "style"])
    category = cat_names[rng.choice(4, num_groups, p=[0.3, 0.1, 0.5, 0.1])]
    category[big_id], category[untagged_id] = "subject", ""
    # Concept vectors: one per group; the untagged pool holds concepts of ~5 images each.
    concept = np.empty(n, np.int64)
    concept[: n_small + n_big] = group[: n_small + n_big]
    concept[n_small + n_big :] = num_groups + rng.integers(0, max(1, n_untagged // 5), n_untagged)
    vec = np.empty((n, dim), np.float32)
    step = 1 << 15
    for s in range(0, n, step):
        c = concept[s : s + step]
        uniq, inv = np.unique(c, return_inverse=True)
        centre = _unit(np.stack([np.random.default_rng([seed, int(u)]).standard_normal(dim) for u in uniq]))[inv]
        w = rng.uniform(0.75, 0.9, c.size).astype(np.float32)[:, None]
        vec[s : s + step] = _unit(centre * w + _unit(rng.standard_normal((c.size, dim), dtype=np.float32)) * np.sqrt(1 - w**2))
    # Planted problems.
    rows = rng.permutation(n)
    k = n // 50
    dup_a, dup_b = rows[:k], rows[k : 2 * k]  # within-group near-duplicates: b becomes a's near-copy, same group
    group[dup_b], concept[dup_b] = group[dup_a], concept[dup_a]
    t = rng.uniform(0.93, 0.995, k).astype(np.float32)[:, None]
    noise = _unit(rng.standard_normal((k, dim), dtype=np.float32))
    vec[dup_b] = _unit(vec[dup_a] * t + noise * np.sqrt(1 - t**2))
    leak_a, leak_b = rows[2 * k : 2 * k + k // 10], rows[2 * k + k // 10 : 2 * k + k // 5]  # copies across groups
    vec[leak_b] = _unit(vec[leak_a] * 0.97 + _unit(rng.standard_normal((leak_a.size, dim), dtype=np.float32)) * 0.243)
    odd = rows[2 * k + k // 5 : 3 * k]  # members unlike their group
    vec[odd] = _unit(rng.standard_normal((odd.size, dim), dtype=np.float32))
    # Faces for person groups: an identity per group, a few other identities.
    person = np.isin(category[group], ["celebrity", "character"])
    faces = None
    if face_dim:
        ident = np.where(rng.random(n) < 0.05, rng.integers(0, 1 << 40, n), group)
        faces = np.empty((n, face_dim), np.float32)
        for s in range(0, n, step):
            idk = ident[s : s + step]
            uniq, inv = np.unique(idk, return_inverse=True)
            centre = _unit(np.stack([np.random.default_rng([seed, 7, int(u)]).standard_normal(face_dim) for u in uniq]))[inv]
            faces[s : s + step] = _unit(centre * 0.95 + _unit(rng.standard_normal((idk.size, face_dim), dtype=np.float32)) * 0.31)
        faces[leak_b] = _unit(faces[leak_a] * 0.97 + _unit(rng.standard_normal((leak_a.size, face_dim), dtype=np.float32)) * 0.243)
    # Records: id from the URL, shard by id as the select step does; a few failures and byte duplicates.
    urls = np.array([f"https://img{i % 97}.example.com/{seed}/{i}.jpg" for i in range(n)], dtype=object)
    ids = np.array([hashlib.sha1(u.encode()).hexdigest()[:16] for u in urls], dtype=object)
    shard_of = np.array([int(r, 16) % num_shards for r in ids])
    status = np.where(rng.random(n) < 0.03, "http_error", "ok")
    body = [hashlib.blake2b(f"{seed}:{i}".encode(), digest_size=32).digest() * 6 for i in range(n)]  # 192 bytes
    bdup = rows[3 * k : 3 * k + k // 10]
    for a, b in zip(bdup, rows[3 * k + k // 10 : 3 * k + k // 5]):
        body[b] = body[a]
    width = rng.integers(256, 1024, n).astype(np.int32)
    height = rng.integers(256, 1024, n).astype(np.int32)
    tag_names = np.array([f"tag {g:07d}" for g in range(num_groups)], dtype=object)
    tag_names[big_id] = "big subject"
    download, embed = ShardSet(run / "download", "shard"), ShardSet(run / "embed", "shard")
    for i in range(num_shards):
        sel = np.flatnonzero(shard_of == i)
        sel = sel[np.argsort(ids[sel])]
        ok = status[sel] == "ok"
        g = group[sel]
        tags = [[] if gg == untagged_id else [tag_names[gg]] for gg in g.tolist()]
        cols = {
            "id": ids[sel].tolist(), "url": urls[sel].tolist(),
            "caption": [f"a photo of {t[0] if t else 'something'}" for t in tags], "tags": tags,
            "category": category[g].tolist(), "group": [""] * sel.size, "split": [""] * sel.size, "role": [""] * sel.size,
            "image": [body[j] if o else None for j, o in zip(sel.tolist(), ok.tolist())],
            "width": np.where(ok, width[sel], 0), "height": np.where(ok, height[sel], 0),
            "sha256": [hashlib.sha256(body[j]).hexdigest() if o else "" for j, o in zip(sel.tolist(), ok.tolist())],
            "status": status[sel].tolist(),
            "error_message": ["" if o else "HTTP 404" for o in ok.tolist()],
            "metadata": ['{"format": "jpeg"}' if o else "{}" for o in ok.tolist()],
        }
        write_parquet_atomic(pa.table(cols, schema=RECORD_SCHEMA), download.output(i))
        download.complete(i, Stats())
        es = sel[ok]
        pmask = person[es]
        m = es.size
        fboxes = [[[10.0, 10.0, 90.0, 90.0, 0.99]] if p else None for p in pmask.tolist()]
        feat = {
            "id": pa.array(ids[es].tolist(), pa.string()), "width": pa.array(width[es]), "height": pa.array(height[es]),
            "embedding": _lists(vec[es], np.ones(m, bool)),
            "num_faces": pa.array(np.where(pmask, 1, 0).astype(np.int32), mask=~pmask),
            "face_box": _lists(np.tile(np.float32([10, 10, 90, 90]), (m, 1)), pmask),
            "face_score": pa.array(np.full(m, 0.99, np.float32), mask=~pmask),
            "face_boxes": pa.array(fboxes, pa.list_(pa.list_(pa.float32()))),
            "face_embedding": _lists(faces[es] if faces is not None else None, pmask),
            "det_labels": pa.nulls(m, pa.list_(pa.string())), "det_scores": pa.nulls(m, pa.list_(pa.float32())),
            "status": pa.array(["ok"] * m), "error_message": pa.array([""] * m),
        }
        write_parquet_atomic(pa.table(feat, schema=FEATURE_SCHEMA), embed.output(i))
        embed.complete(i, Stats())
    return {"images": n, "tag_groups": int(sizes.size + 1), "untagged": n_untagged, "big_group": n_big,
            "ok": int((status == "ok").sum()), "dim": dim, "face_dim": face_dim}


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # KiB on Linux


def measure(run: Path, num_shards: int, seed: int) -> dict:
    """Index (apart), then the timed global steps on ``run``; returns the timings."""
    from mrbench.curation.group import GROUP_STEP
    from mrbench.curation.index import INDEX_STEP
    from mrbench.curation.release import RELEASE_STEP, finalize_release
    from mrbench.stage import run_global_step

    cfg = _config(num_shards, seed)
    out: dict = {}
    t0 = time.perf_counter()
    run_global_step(INDEX_STEP, cfg, run)  # its marker: the grouping reads the index only once it is complete
    out["index_s"] = time.perf_counter() - t0
    out["rss_after_index_gb"] = peak_rss_gb()
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    stats = run_global_step(GROUP_STEP, cfg, run)
    out["group_split_audit_s"] = time.perf_counter() - t0
    out["rss_after_group_gb"] = peak_rss_gb()
    t1 = time.perf_counter()
    task = RELEASE_STEP.task(cfg, str(run))
    for i in range(num_shards):
        task(i)
    out["release_shards_s"] = time.perf_counter() - t1
    out["rss_after_release_gb"] = peak_rss_gb()
    t2 = time.perf_counter()
    manifest = finalize_release(cfg, run)
    out["finalize_s"] = time.perf_counter() - t2
    out["total_s"] = time.perf_counter() - t0
    out["cpu_s"] = time.process_time() - cpu0
    out["peak_rss_gb"] = peak_rss_gb()
    out["release_rows"] = manifest["rows"]
    out["groups"] = {k: v for k, v in stats.counts.items() if k.startswith(("split/", "audit/pairs", "refine/"))}
    return out


def one(args: argparse.Namespace) -> int:
    """Child process: generate (or reuse) the data of one size, then measure."""
    run = Path(args.run_dir)
    if args.generate:
        shutil.rmtree(run, ignore_errors=True)
        t0 = time.perf_counter()
        info = generate(run, args.n, args.shards, args.dim, args.face_dim, args.big_frac, args.seed)
        info["generate_s"] = time.perf_counter() - t0
        (run / "bench_data.json").write_text(json.dumps(info))
        return 0
    for sub in ("index", "groups", "audit", "release_parts", "release", "rejects", "state"):
        shutil.rmtree(run / sub, ignore_errors=True)
    print(json.dumps(measure(run, args.shards, args.seed)))
    return 0


def _child(argv: list[str], pythonpath: str | None = None) -> str:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    res = subprocess.run([sys.executable, __file__, *argv], env=env, capture_output=True, text=True)
    if res.returncode:
        sys.stderr.write(res.stderr)
        raise SystemExit(f"child failed: {argv}")
    return res.stdout.strip().splitlines()[-1] if res.stdout.strip() else ""


def _release_digest(run: Path) -> dict[str, str]:
    """sha256 of every file of the release, the rejects and the group assignments."""
    files = [p for sub in ("release", "rejects") for p in sorted((run / sub).rglob("*")) if p.is_file()]
    files += [run / "groups" / "assignments.parquet", run / "groups" / "groups.parquet", run / "audit" / "leaks.parquet"]
    return {p.relative_to(run).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,300000,1000000", help="comma-separated image counts")
    ap.add_argument("--shards", type=int, default=32, help="download shards (release shards)")
    ap.add_argument("--dim", type=int, default=256, help="image embedding size")
    ap.add_argument("--face-dim", type=int, default=128, help="face embedding size (dlib: 128)")
    ap.add_argument("--big-frac", type=float, default=0.05, help="share of one big tag group and of untagged images")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default="/tmp/mrbench_scale", help="folder for the run folders")
    ap.add_argument("--keep", action="store_true", help="keep the run folders")
    ap.add_argument("--check-against", default="", help="another checkout: compare its release on the smallest size")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--generate", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--run-dir", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        return one(args)
    sizes = [int(s) for s in args.sizes.split(",")]
    common = ["--shards", str(args.shards), "--dim", str(args.dim), "--face-dim", str(args.face_dim),
              "--big-frac", str(args.big_frac), "--seed", str(args.seed)]
    results = []
    for n in sizes:
        run = Path(args.work) / f"n{n}"
        _child(["--one", "--generate", "--n", str(n), "--run-dir", str(run), *common])
        data = json.loads((run / "bench_data.json").read_text())
        r = json.loads(_child(["--one", "--n", str(n), "--run-dir", str(run), *common]))
        results.append((n, r))
        print(f"{n:>9,} images ({data['ok']:,} ok, {data['tag_groups']:,} tag groups, untagged {data['untagged']:,}, "
              f"big group {data['big_group']:,}; generated in {data['generate_s']:.0f} s; index {r['index_s']:.1f} s): "
              f"group+refine+split+audit {r['group_split_audit_s']:.1f} s, release shards {r['release_shards_s']:.1f} s, "
              f"finalize {r['finalize_s']:.1f} s -> total {r['total_s']:.1f} s (CPU {r['cpu_s']:.1f} s), "
              f"peak RSS {r['peak_rss_gb']:.2f} GB (after index {r['rss_after_index_gb']:.2f}, group {r['rss_after_group_gb']:.2f}, "
              f"release {r['rss_after_release_gb']:.2f}), {r['release_rows']:,} released", flush=True)
        print("   ", json.dumps(r["groups"], sort_keys=True), flush=True)
        if args.check_against and n == sizes[0]:
            mine = _release_digest(run)
            _child(["--one", "--n", str(n), "--run-dir", str(run), *common], pythonpath=args.check_against)
            theirs = _release_digest(run)
            same = mine == theirs
            diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
            print(f"    release vs {args.check_against}: {'byte-identical' if same else 'DIFFERENT: ' + ', '.join(diff[:8])}"
                  f" ({len(mine)} files)", flush=True)
        if not args.keep:
            shutil.rmtree(run, ignore_errors=True)
    ok = True
    if len(results) >= 2:
        x = np.log([n for n, _ in results])
        y = np.log([r["total_s"] for _, r in results])
        slope, icpt = np.polyfit(x, y, 1)
        est = math.exp(icpt) * PAPER_IMAGES**slope
        print(f"growth: total time ~ N^{slope:.2f} over {', '.join(f'{n:,}' for n, _ in results)}; "
              f"extrapolated to {PAPER_IMAGES:,} images: {est:.0f} s ({est / 60:.1f} min)")
        # CPU time is the steadier figure on a shared machine (wall time includes waiting for other processes).
        cs, ci = np.polyfit(x, np.log([r["cpu_s"] for _, r in results]), 1)
        cest = math.exp(ci) * PAPER_IMAGES**cs
        print(f"growth: CPU time ~ N^{cs:.2f}; extrapolated to {PAPER_IMAGES:,} images: {cest:.0f} CPU s ({cest / 60:.1f} min)")
        rss = [r["peak_rss_gb"] for _, r in results]
        ys = np.log(rss)
        rs, ri = np.polyfit(x, ys, 1)
        print(f"peak RSS ~ N^{rs:.2f}; extrapolated to {PAPER_IMAGES:,} images: {math.exp(ri) * PAPER_IMAGES**rs:.2f} GB")
    big = [r for n, r in results if n >= 1_000_000]
    if big:
        ok = big[0]["total_s"] <= 300 and big[0]["peak_rss_gb"] <= 4.0
        print("PASS" if ok else "FAIL", "(goal at 1M images: <= 300 s and <= 4 GB peak RSS)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
