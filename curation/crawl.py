"""Tag crawl: match captions against the tag list (per source shard), then cap candidates per tag and cut the
selected URLs into deterministic download shards (one global step, linked to the others by files)."""

from __future__ import annotations

import hashlib
import heapq
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from mrbench.config import CurateConfig
from mrbench.curation.inputs import named_source_errors
from mrbench.curation.sources import expand_sources, read_source
from mrbench.curation.tags import Tag, TagList, TagMatcher, normalize
from mrbench.records import ImageRecord
from mrbench.shards import ShardSet, global_step, records_to_table, write_parquet_atomic
from mrbench.stats import Stats

CANDIDATE_SCHEMA = pa.schema(
    [
        ("url", pa.string()),
        ("caption", pa.string()),
        ("tags", pa.list_(pa.string())),
        ("category", pa.string()),
        ("source", pa.string()),
        ("row", pa.int64()),
        ("priority", pa.uint64()),
    ]
)


def record_id(url: str) -> str:
    """The record id: assigned once, from the URL (URLs are unique after selection), never reused."""
    return hashlib.sha1(url.encode()).hexdigest()[:16]


def priority(seed: int, url: str) -> int:
    """Seeded pseudo-random rank of a URL; the cap per tag keeps the lowest ranks."""
    return int.from_bytes(hashlib.blake2b(f"{seed}:{url}".encode(), digest_size=8).digest(), "big")


@dataclass
class IngestTask:
    """Per source shard: stream rows, match tags, write the candidates that mention a tag."""

    config: CurateConfig
    run_dir: str
    name: str = "ingest"

    @property
    def shards(self) -> ShardSet:
        return ShardSet(Path(self.run_dir) / "ingest", "candidates")

    def is_done(self, shard: int) -> bool:
        return self.shards.is_done(shard)

    def __call__(self, shard: int) -> None:
        cfg = self.config
        source_shard = expand_sources(cfg.sources)[shard]
        src = cfg.sources[source_shard.source_index]
        tags = TagList.load(cfg.crawl.tag_list) if cfg.crawl.tag_list else TagList([])
        matcher = TagMatcher(tags)
        by_norm = {normalize(t.name): t for t in tags.tags}
        stats = Stats()
        cols: dict[str, list] = {n: [] for n in CANDIDATE_SCHEMA.names}
        for row in named_source_errors(read_source(source_shard, src), source_shard.path):
            stats.inc("ingest/rows")
            if row.folder_tag is not None:
                tag = by_norm.get(normalize(row.folder_tag)) or Tag(row.folder_tag.replace("_", " "), "subject")
                matched = [tag.name] + [t for t in matcher.match(row.caption) if t != tag.name]
                category = tag.category
            else:
                matched = matcher.match(row.caption)
                if not matched and cfg.crawl.require_tag:
                    stats.inc("ingest/no_tag_match")
                    continue
                category = tags.by_name[matched[0]].category if matched else ""
            stats.inc("ingest/candidates")
            for name, value in (
                ("url", row.url), ("caption", row.caption), ("tags", matched), ("category", category),
                ("source", row.source), ("row", row.row), ("priority", priority(cfg.seed, row.url)),
            ):
                cols[name].append(value)
        write_parquet_atomic(pa.table(cols, schema=CANDIDATE_SCHEMA), self.shards.output(shard))
        self.shards.complete(shard, stats)


@global_step("urls")
def select_and_shard(config: CurateConfig, run_dir: Path, num_ingest: int) -> Stats:
    """Global step: cap candidates per tag (lowest seeded priority wins), drop repeated URLs, assign ids and
    write ``num_shards`` URL shards. Memory is bounded by the selected set, not the candidate pool."""
    out = ShardSet(run_dir / "urls", "urls")
    ingest = ShardSet(run_dir / "ingest", "candidates")
    cap = config.crawl.max_candidates_per_tag
    heaps: dict[str, list[tuple[int, str]]] = {}  # tag -> max-heap (negated) of the `cap` lowest priorities
    for i in range(num_ingest):
        for batch in pq.ParquetFile(ingest.output(i)).iter_batches(columns=["url", "tags", "priority"]):
            for url, tags, prio in zip(*(batch.column(c).to_pylist() for c in ("url", "tags", "priority"))):
                for tag in (tags or ["untagged"])[:1]:  # the cap applies to the group the record will land in
                    h = heaps.setdefault(tag, [])
                    item = (-prio, url)
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
