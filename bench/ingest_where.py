"""Benchmark: the ingest step with a metadata predicate (``sources[].where``) vs without, in the same run.

A synthetic LAION-style parquet (``URL``, ``TEXT``, ``punsafe``, ``pwatermark``, ``similarity``, ``WIDTH``,
``HEIGHT``; about ``--mention`` of the captions name one of a small tag list) is ingested by :class:`IngestTask`
(parquet record batches, caption matching, candidate table) three ways: no predicate, ``where: "punsafe < 0.1 AND
pwatermark < 0.8"``, and the same predicate with ``keep_columns: [punsafe, similarity]``. Each configuration runs
``--reps`` times, interleaved, and the median CPU time of the process counts (duckdb's threads included). A fourth
run, ``where: "punsafe < 2"``, passes every row: the predicate's own cost, with no row saved from matching.

Prints rows/s per core for each and the ratio of each to the plain ingest. Goal: with a predicate <= 1.2 x the
time of the plain ingest (the predicate also removes rows from the matcher's work, which the ratio includes; the
rows it drops are the ~10% LAION marks unsafe or watermarked).

Run: ``python bench/ingest_where.py`` (``--rows 200000`` for a quick look).
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from mrbench.curation.config import CrawlConfig, CurateConfig, SourceConfig
from mrbench.curation.crawl import INGEST_STEP

WORDS = ("a the of and with photo image poster art painting vintage modern red blue portrait landscape city street "
         "house garden tree flower sky sea beach mountain car dog cat bird book design logo stock hd").split()
TAGS = [f"tagname{k}" for k in range(200)]


def write_inputs(folder: Path, rows: int, mention: float, seed: int = 0) -> Path:
    rng = random.Random(seed)
    cols: dict[str, list] = {"URL": [], "TEXT": [], "punsafe": [], "pwatermark": [], "similarity": [], "WIDTH": [],
                             "HEIGHT": []}
    for k in range(rows):
        words = [rng.choice(WORDS) for _ in range(rng.randint(6, 20))]
        if rng.random() < mention:
            words.insert(rng.randrange(len(words)), rng.choice(TAGS))
        cols["URL"].append(f"https://img{k % 997}.example.com/{k}.jpg")
        cols["TEXT"].append(" ".join(words))
        cols["punsafe"].append(rng.random() ** 20)  # mostly small, as LAION's: ~11% >= 0.1
        cols["pwatermark"].append(rng.random() ** 6)  # ~4% >= 0.8
        cols["similarity"].append(0.25 + 0.1 * rng.random())
        cols["WIDTH"].append(rng.randint(64, 2048))
        cols["HEIGHT"].append(rng.randint(64, 2048))
    pq.write_table(pa.table(cols), folder / "laion.parquet", row_group_size=65536)
    (folder / "tags.yaml").write_text(yaml.safe_dump([{"name": t, "category": "subject"} for t in TAGS]))
    return folder


def config(folder: Path, **source: object) -> CurateConfig:
    src = SourceConfig(paths=[str(folder / "laion.parquet")], url_col="URL", caption_col="TEXT", **source)
    return CurateConfig(sources=[src], crawl=CrawlConfig(tag_list=str(folder / "tags.yaml")))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--mention", type=float, default=0.2)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_inputs(Path(tmp), args.rows, args.mention)
        where = "punsafe < 0.1 AND pwatermark < 0.8"
        runs = {"plain": config(folder), "where": config(folder, where=where),
                "where(all)": config(folder, where="punsafe < 2"),  # passes every row: the predicate's own cost
                "where+keep": config(folder, where=where, keep_columns=["punsafe", "similarity"])}
        times: dict[str, list[float]] = {k: [] for k in runs}
        counts: dict[str, dict[str, int]] = {}
        for _ in range(args.reps):
            for name, cfg in runs.items():
                task = INGEST_STEP.task(cfg, Path(tmp) / name)
                start = time.process_time()
                table, stats = task.process(0)
                times[name].append(time.process_time() - start)
                counts[name] = dict(stats.counts) | {"candidates_table_rows": table.num_rows}
        base = statistics.median(times["plain"])
        print(f"ingest of {args.rows} LAION-style rows, median of {args.reps} (process CPU time)")
        for name in runs:
            t = statistics.median(times[name])
            print(f"  {name:11s} {t:7.3f} s  {args.rows / t:10,.0f} rows/s/core  ratio {t / base:5.2f}x  {counts[name]}")
        for name in ("where", "where(all)"):
            ratio = statistics.median(times[name]) / base
            print(f"{name} / plain: {ratio:.2f}x (goal <= 1.2x): {'ok' if ratio <= 1.2 else 'MISSED'}")


if __name__ == "__main__":
    main()
