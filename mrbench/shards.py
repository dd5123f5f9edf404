"""Shard I/O: record tables, atomic parquet writes, and the output -> stats -> completion-marker protocol.

A shard is complete when its output, then its stats, then its ``.done`` marker are written, in that order
(each by atomic rename). A relaunch skips complete shards and rewrites incomplete ones from scratch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

# The atomic writers live one level down (the stats module writes with them too); the steps import them from here.
from mrbench.atomic import (  # noqa: F401
    atomic_output, atomic_write_bytes, atomic_write_text, sha256_file, temporary_path, write_text_if_changed)
from mrbench.records import ImageRecord
from mrbench.stats import Stats

RECORD_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("url", pa.string()),
        ("caption", pa.string()),
        ("tags", pa.list_(pa.string())),
        ("category", pa.string()),
        ("group", pa.string()),
        ("split", pa.string()),
        ("role", pa.string()),
        ("image", pa.binary()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("sha256", pa.string()),
        ("status", pa.string()),
        ("error_message", pa.string()),
        ("metadata", pa.string()),  # JSON: free-form keys do not fit a fixed parquet struct
    ]
)
ROW_GROUP_ROWS = 1024  # rows per row group of the shards MRBench writes


def write_parquet_atomic(table: pa.Table, path: Path, compression: str = "zstd") -> None:
    """Write ``table`` to ``path`` via a temporary file and rename, so readers never see half a file."""
    write_tables([table], path, table.schema, compression)


def write_tables(tables: Iterable[pa.Table], path: Path, schema: pa.Schema = None, compression: str = "zstd",
                 group_bytes: int | None = None) -> int:
    """Stream ``tables`` into one parquet file at ``path`` as they come (atomically: :func:`atomic_output`), in
    row groups of :data:`ROW_GROUP_ROWS` rows: the bytes are those of writing all of them as one table. Memory holds
    one row group; with ``group_bytes``, a row group whose data passes that many bytes is written sooner (smaller).

    Returns:
        The rows written.
    """
    schema = RECORD_SCHEMA if schema is None else schema
    written = 0
    with atomic_output(path) as tmp, pq.ParquetWriter(tmp, schema, compression=compression) as writer:
        pending: list[pa.Table] = []
        rows = size = 0
        for table in tables:
            pending.append(table)
            rows, size = rows + table.num_rows, size + table.nbytes
            if rows < ROW_GROUP_ROWS and not (group_bytes and rows and size >= group_bytes):
                continue
            # one contiguous row group, as writing one table gives (a copy of one row group at most)
            whole = pa.concat_tables(pending).combine_chunks() if len(pending) > 1 else pending[0]
            cut = rows - rows % ROW_GROUP_ROWS if rows >= ROW_GROUP_ROWS else rows
            writer.write_table(whole.slice(0, cut), row_group_size=ROW_GROUP_ROWS)
            written += cut
            rest = whole.slice(cut)
            pending, rows, size = ([rest] if rest.num_rows else []), rest.num_rows, rest.nbytes
        if rows or not written:  # the tail; an empty file gets the empty row group the one-shot writer gives it
            writer.write_table(pa.concat_tables(pending) if pending else schema.empty_table(),
                               row_group_size=ROW_GROUP_ROWS)
            written += rows
    return written


def write_records_sorted(records: Iterable[ImageRecord], path: Path, group_bytes: int | None = None) -> int:
    """Write ``records``, arriving in any order, to the parquet shard ``path`` sorted by id: the file
    :func:`write_tables` gives for the sorted rows, whatever the arrival order (ids are unique: selection assigns
    them from unique URLs).

    Rows go to a spool file as they arrive (a temporary sibling, uncompressed, in row groups of
    :data:`SPOOL_ROWS` rows or :data:`SPOOL_BYTES` of images); then the spool is read back in id order, a few of
    its row groups cached (rows arrive roughly sorted: a straggler costs one row group read). Memory holds a spool
    row group being filled, the cache, one output row group and the ids, not the images of the shard.

    Returns:
        The rows written.
    """
    path = Path(path)
    spool = temporary_path(path)  # a killed writer's is removed with the run's other leftovers
    keys: list[tuple[str, int]] = []  # (id, spool row group * SPOOL_ROWS + row in it)
    try:
        with pq.ParquetWriter(spool, RECORD_SCHEMA, compression="none", use_dictionary=False,
                              write_statistics=False) as writer:
            batch: list[ImageRecord] = []
            size = groups = 0
            for r in records:
                keys.append((r.id, groups * SPOOL_ROWS + len(batch)))
                batch.append(r)
                size += len(r.image or b"")
                if len(batch) == SPOOL_ROWS or size >= SPOOL_BYTES:
                    writer.write_table(records_to_table(batch), row_group_size=len(batch))
                    batch, size, groups = [], 0, groups + 1
            if batch:
                writer.write_table(records_to_table(batch), row_group_size=len(batch))
        keys.sort()
        return write_tables(_spooled_in_order(spool, keys), path, group_bytes=group_bytes)
    finally:
        spool.unlink(missing_ok=True)


SPOOL_ROWS = 256
SPOOL_BYTES = 4 << 20


def _spooled_in_order(spool: Path, keys: list[tuple[str, int]], cached: int = 4, rows: int = 64) -> Iterator[pa.Table]:
    """The spool's rows in the order of ``keys``, ``rows`` at a time."""
    from collections import OrderedDict

    pf = pq.ParquetFile(spool)
    cache: OrderedDict[int, pa.Table] = OrderedDict()

    def group(g: int) -> pa.Table:
        if g not in cache:
            cache[g] = pf.read_row_group(g)
            if len(cache) > cached:
                cache.popitem(last=False)
        cache.move_to_end(g)
        return cache[g]

    for start in range(0, len(keys), rows):
        yield pa.concat_tables([group(slot // SPOOL_ROWS).slice(slot % SPOOL_ROWS, 1)
                                for _, slot in keys[start:start + rows]])


SUCCESS = "_SUCCESS"  # a global step's completion marker (mrbench.layout, mrbench.stage.run_global_step)


def records_to_table(records: Iterable[ImageRecord]) -> pa.Table:
    rows: dict[str, list[Any]] = {name: [] for name in RECORD_SCHEMA.names}
    for r in records:
        d = r.to_dict()
        for name in RECORD_SCHEMA.names:
            v = d.get(name)
            rows[name].append(json.dumps(v, sort_keys=True) if name == "metadata" else v)
    return pa.table(rows, schema=RECORD_SCHEMA)


def table_to_records(table: pa.Table) -> Iterator[ImageRecord]:
    for batch in table.to_batches(max_chunksize=256):
        for row in batch.to_pylist():
            meta = row.get("metadata")
            row["metadata"] = json.loads(meta) if meta else {}
            yield ImageRecord.from_dict(row)


def read_records(path: Path, columns: list[str] | None = None) -> Iterator[ImageRecord]:
    """Stream records from one parquet shard, batch by batch."""
    pf = pq.ParquetFile(path)
    for batch in pf.iter_batches(batch_size=256, columns=columns):
        yield from table_to_records(pa.Table.from_batches([batch]))


class ShardSet:
    """The shards of one step in one folder: ``{prefix}_{i:05d}.parquet`` + ``.stats.json`` + ``.done`` (+ ``.log``)."""

    def __init__(self, folder: Path, prefix: str = "shard", suffix: str = ".parquet") -> None:
        self.folder = Path(folder)
        self.prefix = prefix
        self.suffix = suffix

    def output(self, i: int) -> Path:
        return self.folder / f"{self.prefix}_{i:05d}{self.suffix}"

    def stats_path(self, i: int) -> Path:
        return self.folder / f"{self.prefix}_{i:05d}.stats.json"

    def marker(self, i: int) -> Path:
        return self.folder / f"{self.prefix}_{i:05d}.done"

    def log_path(self, i: int) -> Path:
        """The shard's log: when it ran, what went wrong while it ran, and its outcome (:func:`mrbench.log.shard_log`)."""
        return self.folder / f"{self.prefix}_{i:05d}.log"

    def progress_path(self, i: int) -> Path:
        """Live counts of the shard while it runs (:mod:`mrbench.progress`); gone once it has finished."""
        return self.folder / f"{self.prefix}_{i:05d}.progress.json"

    def is_done(self, i: int) -> bool:
        return self.marker(i).exists()

    def existing(self) -> list[Path]:
        """The shard outputs present in the folder, in shard order (none when it does not exist)."""
        return sorted(self.folder.glob(f"{self.prefix}_*{self.suffix}"))

    def markers(self) -> list[Path]:
        """The completion markers present in the folder, in shard order."""
        return sorted(self.folder.glob(f"{self.prefix}_[0-9][0-9][0-9][0-9][0-9].done"))

    def files(self) -> list[Path]:
        """Every file of every shard present in the folder (outputs, stats, markers, logs), whatever the shard
        count; nothing else in the folder."""
        ends = (self.suffix, ".stats.json", ".done", ".log")
        return sorted(p for p in self.folder.glob(f"{self.prefix}_[0-9][0-9][0-9][0-9][0-9].*")
                      if p.name[len(self.prefix) + 6:] in ends)

    def complete(self, i: int, stats: Stats, marker: str = "") -> None:
        """Call after the output is written: writes stats, then the completion marker (holding ``marker``: the
        step's fingerprint record, :mod:`mrbench.fingerprint`), last."""
        stats.save(self.stats_path(i))
        atomic_write_text(self.marker(i), marker)

    def merged_stats(self, n: int) -> Stats:
        total = Stats()
        for i in range(n):
            if self.stats_path(i).exists():
                total.merge(Stats.load(self.stats_path(i)))
        return total
