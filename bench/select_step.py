"""Benchmark: the select step's peak memory and time vs the number of candidates.

Writes synthetic ingest candidate files (``--files`` files, in the real candidate schema; ``--tags`` tags, about
5 % repeated URLs, 3 % untagged) for each size in ``--candidates``, then runs ``select_and_shard`` on each in a
fresh process and prints its wall time, CPU per candidate and peak RSS. With the per-tag cap binding
(tags x cap well below the candidate count), peak RSS should stay flat as the candidates grow: the step keeps
what the caps keep, not the candidates.

Run: ``python bench/select_step.py`` (``--candidates 200000 800000`` for a quick look).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa

from mrbench.curation.config import CrawlConfig, CurateConfig
from mrbench.curation.crawl import CANDIDATE_SCHEMA, priority
from mrbench.shards import ShardSet, write_parquet_atomic


def write_candidates(run_dir: Path, n: int, files: int, tags: int, seed: int) -> None:
    rng = random.Random(seed)
    ingest = ShardSet(run_dir / "ingest", "candidates")
    per = -(-n // files)
    for f in range(files):
        rows = min(per, n - f * per)
        cols: dict[str, list] = {k: [] for k in CANDIDATE_SCHEMA.names}
        for r in range(rows):
            k = f * per + r
            url = f"https://img{k % 97}.example.com/{rng.randrange(n) if rng.random() < 0.05 else k}.jpg"
            t = [] if rng.random() < 0.03 else [f"tag {rng.randrange(tags)}"] + ([f"tag {rng.randrange(tags)}"] if rng.random() < 0.2 else [])
            for name, v in (("url", url), ("caption", f"a photo of {' and '.join(t) or 'something'} on a poster, stock image"),
                            ("tags", t), ("category", "subject" if t else ""), ("source", f"/data/laion/part-{f:05d}.parquet"),
                            ("row", r), ("priority", priority(0, url)), ("kept", None)):
                cols[name].append(v)
        write_parquet_atomic(pa.table(cols, schema=CANDIDATE_SCHEMA), ingest.output(f))


def run_select(run_dir: str, files: int, cap: int, shards: int) -> None:
    """Child process: run the step, print its figures as JSON."""
    from mrbench.curation.crawl import select_and_shard

    cfg = CurateConfig(num_shards=shards, crawl=CrawlConfig(max_candidates_per_tag=cap))
    t, c = time.perf_counter(), time.process_time()
    stats = select_and_shard(cfg, Path(run_dir), files)
    print(json.dumps({"wall": time.perf_counter() - t, "cpu": time.process_time() - c,
                      "rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                      "counts": dict(stats.counts)}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--candidates", type=int, nargs="+", default=[1_000_000, 4_000_000])
    ap.add_argument("--files", type=int, default=16)
    ap.add_argument("--tags", type=int, default=200)
    ap.add_argument("--cap", type=int, default=1000)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        run_dir, files, cap, shards = args.child
        run_select(run_dir, int(files), int(cap), int(shards))
        return 0
    print(f"{'candidates':>11} {'selected':>9} {'wall s':>7} {'CPU us/cand':>12} {'peak RSS GB':>12}")
    rss = []
    for n in args.candidates:
        with tempfile.TemporaryDirectory() as tmp:
            write_candidates(Path(tmp), n, args.files, args.tags, seed=n)
            out = subprocess.run([sys.executable, __file__, "--child", tmp, str(args.files), str(args.cap), str(args.shards)],
                                 check=True, capture_output=True, text=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
        rss.append(r["rss_gb"])
        print(f"{n:>11,} {r['counts'].get('select/selected', 0):>9,} {r['wall']:>7.1f} {1e6 * r['cpu'] / n:>12.2f} "
              f"{r['rss_gb']:>12.2f}")
    print(f"peak RSS at {args.candidates[-1]:,} / at {args.candidates[0]:,} candidates: {rss[-1] / rss[0]:.2f}x "
          f"(candidates {args.candidates[-1] / args.candidates[0]:.0f}x; caps keep at most {args.tags * args.cap:,} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
