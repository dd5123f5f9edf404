"""Batch ingest over row-group ranges, and the streaming select, give what the row-wise versions gave.

``_reference_ingest`` and ``_reference_select`` are the previous implementations (row by row, and per-tag heaps
with every selected record held on the driver), kept here as the reference.
"""

from __future__ import annotations

import heapq
import random
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import mrbench.curation.crawl as crawl_mod
import mrbench.curation.sources as sources_mod
from mrbench.curation.config import CrawlConfig, CurateConfig, SourceConfig
from mrbench.curation.crawl import CANDIDATE_SCHEMA, INGEST_STEP, priority, record_id, select_and_shard
from mrbench.curation.sources import expand_sources, read_source
from mrbench.curation.tags import TagList, TagMatcher
from mrbench.records import ImageRecord
from mrbench.shards import ShardSet, records_to_table, write_parquet_atomic
from mrbench.stats import Stats

TAGS = ["Barack Obama", "Spider-Man", "Totoro", "Beyoncé", "C++", "impressionism", "red apple", "New York"]


# --- reference implementations -----------------------------------------------------------------------------
def _reference_ingest(cfg: CurateConfig) -> tuple[pa.Table, Stats]:
    tags = TagList.load(cfg.crawl.tag_list)
    matcher = TagMatcher(tags)
    stats = Stats()
    cols: dict[str, list] = {n: [] for n in CANDIDATE_SCHEMA.names}
    for shard in expand_sources(cfg.sources, rows_per_shard=10**12):
        for row in read_source(shard, cfg.sources[shard.source_index]):
            stats.inc("ingest/rows")
            matched = matcher.match(row.caption)
            if not matched and cfg.crawl.require_tag:
                stats.inc("ingest/no_tag_match")
                continue
            category = tags.by_name[matched[0]].category if matched else ""
            stats.inc("ingest/candidates")
            for name, value in (
                ("url", row.url), ("caption", row.caption), ("tags", matched), ("category", category),
                ("source", row.source), ("row", row.row), ("priority", priority(cfg.seed, row.url)), ("kept", None),
            ):
                cols[name].append(value)
    return pa.table(cols, schema=CANDIDATE_SCHEMA), stats


def _reference_select(config: CurateConfig, run_dir: Path, num_ingest: int) -> Stats:
    out = ShardSet(run_dir / "urls", "urls")
    ingest = ShardSet(run_dir / "ingest", "candidates")
    cap = config.crawl.max_candidates_per_tag
    heaps: dict[str, list[tuple[int, str]]] = {}
    for i in range(num_ingest):
        for batch in pq.ParquetFile(ingest.output(i)).iter_batches(columns=["url", "tags", "priority"]):
            for url, tags, prio in zip(*(batch.column(c).to_pylist() for c in ("url", "tags", "priority"))):
                for tag in (tags or ["untagged"])[:1]:
                    h = heaps.setdefault(tag, [])
                    item = (-prio, url)
                    if item in h:  # a URL takes one place per tag however often it is listed
                        continue
                    if len(h) < cap:
                        heapq.heappush(h, item)
                    elif item > h[0]:
                        heapq.heapreplace(h, item)
    selected = {url for h in heaps.values() for _, url in h}
    stats = Stats()
    shards: list[list[ImageRecord]] = [[] for _ in range(config.num_shards)]
    seen: set[str] = set()
    for i in range(num_ingest):
        for batch in pq.ParquetFile(ingest.output(i)).iter_batches():
            for row in batch.to_pylist():
                url = row["url"]
                if url not in selected:
                    stats.inc("select/over_tag_cap")
                    continue
                if url in seen:
                    stats.inc("select/repeated_url")
                    continue
                seen.add(url)
                rid = record_id(url)
                rec = ImageRecord(
                    id=rid, url=url, caption=row["caption"], tags=list(row["tags"]), category=row["category"],
                    metadata={"source": Path(row["source"]).name, "source_row": row["row"]},
                )
                shards[int(rid, 16) % config.num_shards].append(rec)
                stats.inc("select/selected")
    for i, recs in enumerate(shards):
        recs.sort(key=lambda r: r.id)
        write_parquet_atomic(records_to_table(recs), out.output(i))
    return stats


# --- inputs ------------------------------------------------------------------------------------------------
def write_tag_list(path: Path) -> Path:
    cats = ["celebrity", "character", "character", "celebrity", "subject", "style", "subject", "subject"]
    path.write_text("".join(f"{t}\t{c}\t{t.lower()} fan|{t.upper()}s\n" for t, c in zip(TAGS, cats)), encoding="utf-8")
    return path


def write_source(path: Path, n: int, seed: int, row_group_size: int) -> None:
    """A LAION-style file: repeated URLs, empty/None URLs and captions, captions naming 0-3 tags."""
    rng = random.Random(seed)
    urls, caps = [], []
    for k in range(n):
        r = rng.random()
        urls.append(None if r < 0.01 else "" if r < 0.02 else f"https://img.example/{rng.randrange(n // 2)}.jpg")
        words = ["photo", "of", "a", "poster", "with"] + rng.sample(TAGS + [t.lower() + " fan" for t in TAGS], rng.randint(0, 3))
        rng.shuffle(words)
        caps.append(None if rng.random() < 0.02 else " ".join(words))
    pq.write_table(pa.table({"TEXT": caps, "URL": urls, "other": list(range(n))}), path, row_group_size=row_group_size)


def make_config(tmp: Path, cap: int = 25, num_shards: int = 3) -> CurateConfig:
    write_source(tmp / "laion_a.parquet", 3000, seed=1, row_group_size=200)
    write_source(tmp / "laion_b.parquet", 700, seed=2, row_group_size=700)
    src = SourceConfig(kind="metadata", paths=[str(tmp / "laion_*.parquet")], url_col="URL", caption_col="TEXT")
    crawl = CrawlConfig(tag_list=str(write_tag_list(tmp / "tags.tsv")), max_candidates_per_tag=cap)
    return CurateConfig(seed=7, num_shards=num_shards, sources=[src], crawl=crawl)


def run_ingest(cfg: CurateConfig, run_dir: Path) -> int:
    n = len(expand_sources(cfg.sources))
    task = INGEST_STEP.task(cfg, str(run_dir))
    for i in range(n):
        task(i)
    return n


def candidates(run_dir: Path, n: int) -> pa.Table:
    return pa.concat_tables([pq.read_table(ShardSet(run_dir / "ingest", "candidates").output(i)) for i in range(n)])


# --- tests -------------------------------------------------------------------------------------------------
def test_row_group_ranges_give_the_same_candidates_as_one_shard(tmp_path, monkeypatch):
    cfg = make_config(tmp_path)
    whole = run_ingest(cfg, tmp_path / "whole")
    assert whole == 2
    monkeypatch.setattr(sources_mod, "ROWS_PER_SHARD", 500)
    shards = expand_sources(cfg.sources)
    assert [s.row_groups for s in shards] == [(0, 3), (3, 6), (6, 9), (9, 12), (12, 15), None]
    assert [s.first_row for s in shards] == [0, 600, 1200, 1800, 2400, 0]
    split = run_ingest(cfg, tmp_path / "split")
    assert split == 6
    expected, ref_stats = _reference_ingest(cfg)
    assert expected.num_rows > 1000
    assert candidates(tmp_path / "whole", whole).equals(expected)
    assert candidates(tmp_path / "split", split).equals(expected)
    merged = ShardSet(tmp_path / "split" / "ingest", "candidates").merged_stats(split)
    assert merged.to_dict() == ref_stats.to_dict()
    # a resumed ingest with the same files sees the same shards and skips the finished ones
    task = INGEST_STEP.task(cfg, str(tmp_path / "split"))
    assert all(task.is_done(i) for i in range(split))


@pytest.mark.parametrize("cap, num_shards, batch_rows", [(25, 3, 8192), (10_000, 2, 8192), (1, 1, 8192), (10_000, 1, 1024)])
def test_streaming_select_writes_the_same_url_shards(tmp_path, monkeypatch, cap, num_shards, batch_rows):
    monkeypatch.setattr(crawl_mod, "URL_BATCH_ROWS", batch_rows)  # 1024: shards written in several row-group runs
    cfg = make_config(tmp_path, cap=cap, num_shards=num_shards)
    n = run_ingest(cfg, tmp_path / "new")
    # one more ingest shard with nothing in it, and one whose rows repeat another shard's URLs under other tags
    empty = ShardSet(tmp_path / "new" / "ingest", "candidates")
    write_parquet_atomic(CANDIDATE_SCHEMA.empty_table(), empty.output(n))
    again = pq.read_table(empty.output(0)).slice(0, 300)
    again = again.set_column(2, "tags", pa.array([t[::-1] for t in again.column("tags").to_pylist()], pa.list_(pa.string())))
    write_parquet_atomic(again, empty.output(n + 1))
    n += 2
    shutil.copytree(tmp_path / "new" / "ingest", tmp_path / "old" / "ingest")
    ref_stats = _reference_select(cfg, tmp_path / "old", n)
    stats = select_and_shard(cfg, tmp_path / "new", n)
    assert stats.to_dict() == ref_stats.to_dict()
    if cap < 10_000:
        assert stats.counts["select/over_tag_cap"] > 0
    assert stats.counts["select/repeated_url"] > 0 and stats.counts["select/selected"] > 0
    if batch_rows == 1024:
        assert pq.ParquetFile(tmp_path / "new" / "urls" / "urls_00000.parquet").metadata.num_row_groups >= 2
    for i in range(num_shards):
        new = (tmp_path / "new" / "urls" / f"urls_{i:05d}.parquet").read_bytes()
        old = (tmp_path / "old" / "urls" / f"urls_{i:05d}.parquet").read_bytes()
        assert new == old, i
    assert not (tmp_path / "new" / "urls" / ".select_tmp").exists()
    assert sorted(p.name for p in (tmp_path / "new" / "urls").iterdir()) == sorted(
        [f"urls_{i:05d}.parquet" for i in range(num_shards)] + ["shards.json"])  # the step runner writes stats, log and marker


@pytest.mark.parametrize("cap", [1, 2, 3])
def test_select_counts_a_url_repeated_under_one_tag_once_like_the_heaps(tmp_path, cap):
    urls = [f"https://x.example/{k}.jpg" for k in range(40)]
    low = min(urls, key=lambda u: priority(7, u))  # the URL every tag's cap keeps first
    rows = [(low, ["A"]), (low, ["A"]), (low, []), (low, [])]
    rows += [(u, ["A"] if k % 2 else []) for k, u in enumerate(urls) if u != low]
    cols = {"url": [u for u, _ in rows], "caption": ["c"] * len(rows), "tags": [t for _, t in rows],
            "category": ["subject" if t else "" for _, t in rows], "source": ["/d/s.parquet"] * len(rows),
            "row": list(range(len(rows))), "priority": [priority(7, u) for u, _ in rows], "kept": [None] * len(rows)}
    cfg = CurateConfig(seed=7, num_shards=2, crawl=CrawlConfig(max_candidates_per_tag=cap))
    for run in ("new", "old"):
        write_parquet_atomic(pa.table(cols, schema=CANDIDATE_SCHEMA), ShardSet(tmp_path / run / "ingest", "candidates").output(0))
    ref = _reference_select(cfg, tmp_path / "old", 1)
    assert select_and_shard(cfg, tmp_path / "new", 1).to_dict() == ref.to_dict()
    # copies of `low` take one place per tag: a cap of 2 keeps `low` and one more URL in each of the two tags
    assert ref.counts["select/selected"] == {1: 1, 2: 3, 3: 5}[cap]
    for i in range(2):
        assert (tmp_path / "new" / "urls" / f"urls_{i:05d}.parquet").read_bytes() == \
            (tmp_path / "old" / "urls" / f"urls_{i:05d}.parquet").read_bytes()
