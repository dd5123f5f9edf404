"""Shard I/O: record tables, atomic parquet writes, and the output -> stats -> completion-marker protocol.

A shard is complete when its output, then its stats, then its ``.done`` marker are written, in that order
(each by atomic rename). A relaunch skips complete shards and rewrites incomplete ones from scratch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

# The atomic writers live one level down (the stats module writes with them too); the steps import them from here.
from mrbench.atomic import (  # noqa: F401
    atomic_write_bytes, atomic_write_text, sha256_file, temporary_path, write_text_if_changed)
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


def write_parquet_atomic(table: pa.Table, path: Path, compression: str = "zstd") -> None:
    """Write ``table`` to ``path`` via a temporary file and rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        pq.write_table(table, tmp, compression=compression, row_group_size=1024)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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
