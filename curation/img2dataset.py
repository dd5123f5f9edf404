"""Shards written by img2dataset as a source (``kind: img2dataset``): the images are read from the shards, never
downloaded again.

img2dataset writes, per shard ``NNNNN``, a metadata parquet ``NNNNN.parquet`` with one row per input URL (``key``,
``url``, ``caption``, ``status``, ``error_message``, ...) and the images beside it, by ``output_format``:

* ``parquet``: in that same parquet, a binary column named by the encode format (``jpg``, ``png``, ``webp``);
* ``webdataset``: ``NNNNN.tar`` with ``<key>.jpg`` + ``<key>.json`` + ``<key>.txt`` per image that succeeded;
* ``files``: a folder ``NNNNN/`` with the same three files per image.

Ingest reads the metadata parquet like any metadata file (tag matching, ``where``, ``keep_columns``); selection
marks the rows with their shard file (:data:`PACKED`); the download step fills their bytes here, one pass over each
shard's parquet or tar, and turns rows img2dataset failed into named rows (``img2dataset_<status>``, with its
error message). Reading: pyarrow for the parquet (only the row groups holding the selected rows, and only the
image column), the standard library's ``tarfile`` for the tars (a sequential pass; the ``webdataset`` package reads
tars for training loops and adds nothing here). Every file is opened through :func:`open_file`.
"""

from __future__ import annotations

import re
import tarfile
from collections import defaultdict
from pathlib import Path
from typing import IO, Iterable

import pyarrow.parquet as pq

from mrbench.records import ImageRecord

# Key in ImageRecord.metadata set at selection for rows of img2dataset sources: the shard parquet they come from.
PACKED = "img2dataset_shard"
IMAGE_FORMATS = ("jpg", "jpeg", "png", "webp")
SUCCESS = "success"


def open_file(path: str, mode: str = "rb") -> IO[bytes]:
    """Open one file of an img2dataset output (the one place a storage backend would plug in)."""
    return open(path, mode)  # noqa: SIM115 (the caller closes it)


def shard_files(path: str) -> list[str]:
    """The metadata parquet files of an img2dataset output folder (``NNNNN.parquet``, sorted), or ``[path]`` for a
    file."""
    p = Path(path)
    if p.is_dir():
        return [str(f.resolve()) for f in sorted(p.glob("*.parquet"))]
    return [str(p.resolve())]


def container_of(shard: str) -> str:
    """Where a shard's images are: its tar (webdataset), its folder (files) or the parquet itself."""
    base = Path(shard).with_suffix("")
    if base.with_suffix(".tar").is_file():
        return str(base.with_suffix(".tar"))
    if base.is_dir():
        return str(base)
    return shard


def failure_reason(status: str) -> str:
    """The status of a row img2dataset did not download: ``img2dataset_<its status>`` (``failed_to_download``,
    ``failed_to_resize``, ...)."""
    return "img2dataset_" + (re.sub(r"[^a-z0-9_]+", "_", status.lower()).strip("_") or "failed")


def fill_from_shards(records: Iterable[ImageRecord], max_bytes: int) -> None:
    """Give each row of an img2dataset source its image bytes from its shard, or its failure: the shard's status
    for rows img2dataset failed, ``file_unreadable`` for a missing image or unreadable shard, ``oversize_body``
    beyond ``max_bytes``. One pass over each shard."""
    by_shard: dict[str, list[ImageRecord]] = defaultdict(list)
    for r in records:
        by_shard[r.metadata[PACKED]].append(r)
    for shard, rows in by_shard.items():
        try:
            _fill_shard(shard, rows)
        except (OSError, ValueError, tarfile.TarError) as e:  # a shard that cannot be read fails its rows, by name
            for r in rows:
                if r.ok and r.image is None:
                    r.fail("file_unreadable", f"{Path(shard).name}: {type(e).__name__}: {e}"[:300])
        for r in rows:
            if r.ok and r.image is not None and len(r.image) > max_bytes:
                r.fail("oversize_body", f"{len(r.image)} bytes > {max_bytes}")
                r.image = None


def _fill_shard(shard: str, rows: list[ImageRecord]) -> None:
    with open_file(shard) as f:
        pf = pq.ParquetFile(f)
        names = pf.schema_arrow.names
        image_col = next((c for c in IMAGE_FORMATS if c in names), None)
        container = container_of(shard)
        want = sorted({int(r.metadata["source_row"]) for r in rows})
        cols = [c for c in ("key", "status", "error_message") if c in names]
        if container == shard and image_col:
            cols.append(image_col)
        found = _read_rows(pf, want, cols)
    waiting: dict[str, list[ImageRecord]] = defaultdict(list)
    for r in rows:
        row = found[int(r.metadata["source_row"])]
        status = row.get("status") or SUCCESS
        if status != SUCCESS:
            r.fail(failure_reason(status), str(row.get("error_message") or status)[:300])
        elif image_col and container == shard:
            if row.get(image_col) is None:
                r.fail("file_unreadable", f"{Path(shard).name} row {r.metadata['source_row']}: no image bytes")
            else:
                r.image = row[image_col]
        else:
            waiting[str(row.get("key"))].append(r)
    if not waiting:
        return
    images = _read_tar(container, set(waiting)) if container.endswith(".tar") else _read_folder(container, set(waiting))
    for key, recs in waiting.items():
        for r in recs:
            if key in images:
                r.image = images[key]
            else:
                r.fail("file_unreadable", f"{Path(container).name}: no image for key {key!r}")


def _read_rows(pf: pq.ParquetFile, want: list[int], cols: list[str]) -> dict[int, dict]:
    """Rows ``want`` (file row numbers, sorted) of ``pf``, columns ``cols``: only the row groups holding them."""
    out: dict[int, dict] = {}
    start, k = 0, 0
    for g in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(g).num_rows
        inside = []
        while k < len(want) and want[k] < start + n:
            inside.append(want[k])
            k += 1
        if inside:
            table = pf.read_row_group(g, columns=cols)
            for i in inside:
                out[i] = {c: table.column(c)[i - start].as_py() for c in cols}
        start += n
    missing = [i for i in want if i not in out]
    if missing:
        raise ValueError(f"rows {missing[:3]} beyond the file's {start} rows")
    return out


def _read_tar(path: str, keys: set[str]) -> dict[str, bytes]:
    """The image bytes of ``keys`` in a webdataset tar (``<key>.<image format>`` members), in one sequential pass."""
    out: dict[str, bytes] = {}
    with open_file(path) as f, tarfile.open(fileobj=f, mode="r|*") as tar:
        for member in tar:
            key, _, ext = member.name.rpartition(".")
            if member.isfile() and key in keys and ext.lower() in IMAGE_FORMATS:
                data = tar.extractfile(member)
                if data is not None:
                    out[key] = data.read()
    return out


def _read_folder(folder: str, keys: set[str]) -> dict[str, bytes]:
    """The image bytes of ``keys`` in a ``files`` shard folder (``<key>.<image format>``)."""
    out: dict[str, bytes] = {}
    for key in keys:
        for ext in IMAGE_FORMATS:
            path = Path(folder) / f"{key}.{ext}"
            if path.is_file():
                with open_file(str(path)) as f:
                    out[key] = f.read()
                break
    return out

