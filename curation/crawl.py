"""Tag crawl: match captions against the tag list (per source shard), then cap candidates per tag and cut the
selected URLs into deterministic download shards (one global step, linked to the others by files)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from mrbench.curation.config import CurateConfig
from mrbench.curation.blocklist import block_at_selection, blocklist_identity
from mrbench.curation.inputs import named_source_errors, source_identity
from mrbench.curation.sources import (
    LOCAL_PATH, expand_sources, folder_relative_path, kept_json, read_metadata_batches, read_source,
)
from mrbench.curation.tags import Tag, load_matcher, normalize
from mrbench.layout import RunLayout
from mrbench.records import STATUS_OK
from mrbench.shards import RECORD_SCHEMA, atomic_write_text, write_tables
from mrbench.stage import ShardedStep, Step
from mrbench.stats import Stats

# Select: duckdb's working memory before it spills to disk, its threads, and the rows per batch it hands back.
SELECT_MEMORY = "1GB"
SELECT_THREADS = 2
URL_BATCH_ROWS = 8192
KEPT = "source_columns"  # key in ImageRecord.metadata: the source's keep_columns values of the row

CANDIDATE_SCHEMA = pa.schema(
    [
        ("url", pa.string()),
        ("caption", pa.string()),
        ("tags", pa.list_(pa.string())),
        ("category", pa.string()),
        ("source", pa.string()),
        ("row", pa.int64()),
        ("priority", pa.uint64()),
        ("kept", pa.string()),  # JSON of the source's keep_columns values (null: none kept)
    ]
)


def record_id(url: str) -> str:
    """The record id: assigned once, from the URL (URLs are unique after selection), never reused."""
    return hashlib.sha1(url.encode()).hexdigest()[:16]


def priority(seed: int, url: str) -> int:
    """Seeded pseudo-random rank of a URL; the cap per tag keeps the lowest ranks."""
    return int.from_bytes(hashlib.blake2b(f"{seed}:{url}".encode(), digest_size=8).digest(), "big")


class IngestTask(ShardedStep):
    """Per source shard: stream record batches, match their captions, write the candidates that mention a tag."""

    @classmethod
    def num_shards(cls, config: CurateConfig) -> int:
        return len(expand_sources(config.sources))  # one shard per source shard (file or row range)

    def process(self, shard: int) -> tuple[pa.Table, Stats]:
        cfg = self.config
        source_shard = expand_sources(cfg.sources)[shard]
        src = cfg.sources[source_shard.source_index]
        tags, matcher = load_matcher(cfg.crawl.tag_list, self.layout.cache)
        stats = Stats()
        cols: dict[str, list] = {n: [] for n in CANDIDATE_SCHEMA.names}

        def keep(url: str, caption: str, matched: list[str], category: str, row: int, kept: str | None = None) -> None:
            for name, value in (
                ("url", url), ("caption", caption), ("tags", matched), ("category", category),
                ("source", source_shard.path), ("row", row), ("priority", priority(cfg.seed, url)), ("kept", kept),
            ):
                cols[name].append(value)

        if src.kind == "folder":
            by_norm = {normalize(t.name): t for t in tags.tags}
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
                keep(row.url, row.caption, matched, category, row.row)
        else:
            rows = candidates = failed = 0
            for batch in named_source_errors(read_metadata_batches(source_shard, src), source_shard.path):
                # rows without a URL are not rows (as before); captions are matched a whole batch at a time
                with_url = range(len(batch.urls)) if all(batch.urls) else [k for k, u in enumerate(batch.urls) if u]
                rows += len(with_url)
                if batch.passes is not None:  # the source's where: failing rows are counted, never candidates
                    passing = np.flatnonzero(batch.passes).tolist()
                    if not isinstance(with_url, range):
                        passing = sorted(set(passing).intersection(with_url))
                    failed += len(with_url) - len(passing)
                    with_url = passing
                captions = [batch.captions[k] for k in with_url] if len(with_url) < len(batch.urls) else batch.captions
                if not batch.captions_are_text:
                    captions = [str(c or "") for c in captions]
                for k, caption, matched in zip(with_url, captions, matcher.match_many(captions)):
                    if not matched and cfg.crawl.require_tag:
                        continue
                    candidates += 1
                    category = tags.by_name[matched[0]].category if matched else ""
                    keep(str(batch.urls[k]), caption or "", matched, category, batch.first_row + k,
                         kept_json(batch.kept, k) if batch.kept is not None else None)
            if failed:
                stats.inc("ingest/where_failed", failed)
                stats.inc(f"ingest/where_failed/{source_shard.source_index}", failed)
            if rows:
                stats.inc("ingest/rows", rows)
            if rows - failed - candidates:
                stats.inc("ingest/no_tag_match", rows - failed - candidates)
            if candidates:
                stats.inc("ingest/candidates", candidates)
        return pa.table(cols, schema=CANDIDATE_SCHEMA), stats


def origin_status(url: str, kind: str, root: str = "") -> tuple[dict, str, str]:
    """Origin of a selected row, by its source's ``kind``: rows of ``folder`` sources are marked as local files (the
    only rows ever read from disk) with their path relative to the folder ``root`` (what the release publishes as
    ``url``); rows of ``img2dataset`` sources with their shard file ``root`` (their bytes are read from it, their URL
    never requested); a metadata row whose URL is not http(s) is ``unsupported_url`` here, before any I/O.

    Returns the metadata to add, the status and the error message.
    """
    from mrbench.curation.download import LOCAL_FILE
    from mrbench.curation.img2dataset import PACKED
    from mrbench.curation.netguard import check_url

    if kind == "folder":
        return {LOCAL_FILE: True, LOCAL_PATH: folder_relative_path(url, root)}, STATUS_OK, ""
    if kind == "img2dataset":
        return {PACKED: root}, STATUS_OK, ""
    bad = check_url(url)
    return {}, *(bad if bad is not None else (STATUS_OK, ""))


def select_and_shard(config: CurateConfig, run_dir: Path, num_ingest: int) -> Stats:
    """Global step: cap candidates per tag (lowest seeded priority wins), drop repeated URLs, assign ids and
    write the URL shards (:func:`url_shard_count`), each in id order.

    The candidates never come to Python, nor into memory as a whole: duckdb streams them through a bounded top-n
    per tag (the cap-th lowest priority), ranks only the rows under that cutoff, keeps the first candidate row of
    each selected URL, and hands each URL shard back in id order, batch by batch; what it holds grows with what
    the caps keep (and spills to disk past ``SELECT_MEMORY``), not with the candidates. The result is the one the
    per-tag heaps of earlier versions gave, with each URL counted once per tag: per tag the ``cap`` distinct URLs
    with the lowest (priority, then highest URL), the union of them selected, each URL released once, from its
    first candidate row (ingest shard, then row order). Repeated rows of a selected URL count as ``repeated_url``.
    """
    layout = RunLayout(run_dir)
    out = layout.urls
    files = [str(layout.ingest.output(i)) for i in range(num_ingest)]
    tmp = layout.select_tmp
    tmp.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(config={"memory_limit": SELECT_MEMORY, "temp_directory": str(tmp), "threads": SELECT_THREADS,
                                 "preserve_insertion_order": False})  # every output order is explicit
    try:
        con.execute("CREATE TEMP TABLE files (fi INTEGER, filename VARCHAR)")
        con.executemany("INSERT INTO files VALUES (?, ?)", list(enumerate(files)))
        listed = "[" + ", ".join("'" + f.replace("'", "''") + "'" for f in files) + "]"  # a view takes no parameters
        con.execute(
            "CREATE TEMP VIEW cand_all AS SELECT c.url, c.caption, c.tags, c.category, c.source, c.\"row\", c.priority, c.kept,"
            " f.fi, c.file_row_number AS rn,"
            " CASE WHEN c.tags IS NULL OR len(c.tags) = 0 THEN 'untagged' ELSE c.tags[1] END AS tag"  # the group the record lands in
            f" FROM read_parquet({listed}, filename = true, file_row_number = true) c JOIN files f USING (filename)"
        )
        # URLs a url / domain / id block list names: out before the caps (they take no place under a tag's cap),
        # written to the URL shards as named rows that are never requested.
        blocking = block_at_selection(con, config.crawl, "cand_all")
        con.execute("CREATE TEMP VIEW cand AS SELECT * FROM cand_all"
                    + (" ANTI JOIN blocked USING (url)" if blocking else ""))
        cap = {"cap": config.crawl.max_candidates_per_tag}
        kinds = [config.sources[s.source_index].kind for s in expand_sources(config.sources)]
        # 1. Per tag, the cap-th lowest priority among its distinct URLs (a URL listed many times under one tag takes
        #    one place: copies of one URL never crowd the others out), in one streaming aggregation.
        con.execute("CREATE TEMP VIEW tag_urls AS SELECT DISTINCT tag, url, priority FROM cand")
        con.execute("CREATE TEMP TABLE cutoff AS SELECT tag, list_max(min_by(priority, priority, $cap)) AS cutoff"
                    " FROM tag_urls GROUP BY tag", cap)
        # 2. Only URLs at or under their tag's cutoff can be in its top cap: rank just those (priority, then the
        #    higher URL).
        con.execute(
            "CREATE TEMP TABLE selected AS SELECT DISTINCT url FROM (SELECT c.url, row_number() OVER ("
            " PARTITION BY c.tag ORDER BY c.priority, c.url DESC) AS r"
            " FROM tag_urls c JOIN cutoff k ON c.tag = k.tag AND c.priority <= k.cutoff) WHERE r <= $cap", cap)
        # 3. Each selected URL once, from its first candidate row (ingest shard, then row).
        con.execute(
            "CREATE TEMP TABLE chosen AS SELECT url, substr(sha1(url), 1, 16) AS id, count(*) AS n, arg_min({"
            " 'caption': caption, 'tags': tags, 'category': category, 'source': source, 'row': \"row\","
            " 'fi': fi, 'rn': rn, 'kept': kept}, fi::BIGINT * 4294967296 + rn) AS first, NULL::VARCHAR AS block,"
            " NULL::VARCHAR AS block_detail FROM cand SEMI JOIN selected USING (url) GROUP BY url")
        [(total,)] = con.execute("SELECT count(*)::BIGINT FROM cand").fetchall()
        [(chosen, in_selected)] = con.execute("SELECT count(*), sum(n)::BIGINT FROM chosen").fetchall()
        total, in_selected = total or 0, in_selected or 0
        stats = Stats()
        if blocking:
            con.execute(
                "INSERT INTO chosen SELECT url, substr(sha1(url), 1, 16), count(*), arg_min({'caption': caption,"
                " 'tags': tags, 'category': category, 'source': source, 'row': \"row\", 'fi': fi, 'rn': rn, 'kept': kept},"
                " fi::BIGINT * 4294967296 + rn), any_value(b.reason), any_value(b.detail)"
                " FROM cand_all JOIN blocked b USING (url) GROUP BY url")
            for reason, n in con.execute("SELECT reason, count(*) FROM blocked GROUP BY reason").fetchall():
                stats.inc(f"select/{reason}", n)
        for key, n in (("select/over_tag_cap", total - in_selected), ("select/repeated_url", in_selected - chosen),
                       ("select/selected", chosen)):
            if n:
                stats.inc(key, n)
        [(rows,)] = con.execute("SELECT count(*)::BIGINT FROM chosen").fetchall()
        n = url_shard_count(config, rows)
        for i in range(n):
            reader = con.sql(
                "SELECT id, url, first.caption AS caption, first.tags AS tags, first.category AS category,"
                " first.source AS source, first.\"row\" AS \"row\", first.fi AS fi, first.kept AS kept, block, block_detail FROM chosen"
                " WHERE ('0x' || id)::UBIGINT % $n = $i ORDER BY id, first.fi, first.rn",
                params={"n": n, "i": i},
            ).to_arrow_reader(URL_BATCH_ROWS)
            _write_url_shard(reader, out.output(i), kinds)
        atomic_write_text(layout.shard_count, json.dumps({"num_shards": n}))
    finally:
        con.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return stats


def url_shard_count(config: CurateConfig, rows: int) -> int:
    """The URL shards of ``rows`` selected rows: ``num_shards`` when set, else one per ``rows_per_shard`` rows
    (rounded up; at least one). Rows go to shards by id, so shards hold about ``rows_per_shard`` rows each."""
    return config.num_shards or max(1, -(-rows // config.rows_per_shard))


def select_step(config: CurateConfig, run_dir: Path) -> Stats:
    """The ``select`` step over every ingest shard (:func:`select_and_shard`)."""
    return select_and_shard(config, run_dir, IngestTask.num_shards(config))


INGEST_STEP = Step("ingest", IngestTask, unit="files", settings=("seed", "sources", "crawl.require_tag"),
                   inputs=source_identity, prefix="candidates")
SELECT_STEP = Step("select", select_step, after="ingest", reads=("ingest",), folder="urls", prefix="urls",
                   settings=("sources", "num_shards", "crawl.max_candidates_per_tag", "crawl.blocklists"),
                   inputs=blocklist_identity, drops=(("select", ("blocked_url", "blocked_domain", "blocked_id")),))


def _url_records(batch: pa.RecordBatch, kinds: list[str]) -> pa.Table:
    """Candidate rows -> rows of the record schema (what ``records_to_table`` made of each ``ImageRecord``)."""
    n = batch.num_rows
    sources = batch.column("source").to_pylist()
    rows = batch.column("row").to_pylist()
    urls, shard_of = batch.column("url").to_pylist(), batch.column("fi").to_pylist()
    origins = [origin_status(u, kinds[fi] if fi < len(kinds) else "metadata", s)
               for u, fi, s in zip(urls, shard_of, sources)]
    if batch.column("block").null_count < n:  # block-listed at selection: a named row, never requested
        blocks = zip(batch.column("block").to_pylist(), batch.column("block_detail").to_pylist())
        origins = [o if b is None else (o[0], b, d or "") for o, (b, d) in zip(origins, blocks)]
    kept = batch.column("kept").to_pylist()  # keep_columns values: carried to the release as columns
    meta = [json.dumps({"source": Path(s).name, "source_row": r, **o[0], **({KEPT: json.loads(k)} if k else {})},
                       sort_keys=True) for s, r, o, k in zip(sources, rows, origins, kept)]
    cols = {
        "id": batch.column("id"), "url": batch.column("url"), "caption": batch.column("caption"),
        "tags": batch.column("tags"), "category": batch.column("category"),
        "group": pa.array([""] * n, pa.string()), "split": pa.array([""] * n, pa.string()),
        "role": pa.array([""] * n, pa.string()), "image": pa.nulls(n, pa.binary()),
        "width": pa.array([0] * n, pa.int32()), "height": pa.array([0] * n, pa.int32()),
        "sha256": pa.array([""] * n, pa.string()), "status": pa.array([o[1] for o in origins], pa.string()),
        "error_message": pa.array([o[2] for o in origins], pa.string()), "metadata": pa.array(meta, pa.string()),
    }
    return pa.table([cols[name].cast(f.type) for name, f in zip(RECORD_SCHEMA.names, RECORD_SCHEMA)],
                    schema=RECORD_SCHEMA)


def _write_url_shard(reader: pa.RecordBatchReader, path: Path, kinds: list[str]) -> None:
    """Stream one URL shard to ``path`` (atomically, row group by row group: :func:`~mrbench.shards.write_tables`)."""
    write_tables((_url_records(batch, kinds) for batch in reader if batch.num_rows), path)
