"""Input sources: web-scale metadata files (LAION/COYO/DataComp style) and local image folders."""

from __future__ import annotations

import functools
import glob
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from mrbench import storage
from mrbench.curation.config import SourceConfig
from mrbench.curation.img2dataset import shard_files

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
METADATA_SUFFIXES = {".parquet", ".csv", ".tsv", ".jsonl", ".json"}
# A parquet file with more rows than this is cut into ranges of whole row groups of about this many rows, so one
# multi-GB file becomes several balanced ingest shards (a folder of small files stays one shard per file).
ROWS_PER_SHARD = 2_000_000
BATCH_ROWS = 8192
# Key in ImageRecord.metadata of folder-source rows: the file's path relative to its folder (``cats/001.jpg``), the
# ``url`` the release publishes. The row itself keeps the absolute ``file://`` URL the downloader reads (and the id,
# sha1 of that URL, stays unique across folders).
LOCAL_PATH = "local_path"


def folder_relative_path(url: str, root: str) -> str:
    """The path of a folder source's file (``file://`` URL) relative to the folder ``root``; the file name when
    it lies outside (a symlink resolved elsewhere): never the curator's absolute path."""
    from urllib.parse import unquote, urlsplit

    path = Path(unquote(urlsplit(url).path))
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.name


@dataclass(frozen=True)
class SourceShard:
    """One unit of ingest work: a metadata file, a range of row groups of a large parquet file, or an image folder.

    Attributes:
        source_index: Index of the source in the config.
        path: The file or folder.
        row_groups: ``(first, end)`` row groups of a parquet file to read; ``None`` for the whole file.
        first_row: Row number (in the whole file) of the first row of ``row_groups``; rows keep their file numbers.
    """

    source_index: int
    path: str
    row_groups: tuple[int, int] | None = None
    first_row: int = 0


@dataclass(slots=True)
class MetadataBatch:
    """One record batch of a metadata source: raw URL and caption values, and the file row number of the first.

    ``passes`` is whether each row meets the source's ``where`` predicate (a boolean array; None: every row does);
    ``kept`` the values of its ``keep_columns`` per column (None: no columns kept; :func:`kept_json` makes a row's
    JSON, only for the rows that become candidates)."""

    first_row: int
    urls: list[Any]
    captions: list[Any]
    captions_are_text: bool  # str or None values (no str() needed)
    passes: "np.ndarray | None" = None
    kept: dict[str, list[Any]] | None = None


def referenced_columns(where: str, names: list[str]) -> list[str]:
    """The columns of ``names`` a predicate may read: each name found as a word (or quoted) in ``where``; a
    superset is harmless (the column is read, not used)."""
    import re

    return [n for n in names if re.search(r'(?<![\w"])' + re.escape(n) + r'(?![\w"])', where, re.I)
            or f'"{n}"' in where]


class RowPredicate:
    """A source's ``where`` over whole record batches (duckdb, one connection per reader): true rows pass; false or
    NULL rows do not."""

    def __init__(self, where: str) -> None:
        import duckdb

        self.where = where
        self._con = duckdb.connect(config={"threads": 1})

    def mask(self, batch: pa.RecordBatch) -> "np.ndarray | None":
        """Whether each row of ``batch`` passes (a boolean array), or None when every row does."""
        import duckdb

        self._con.register("batch", batch)
        try:
            out = self._con.sql(f"SELECT coalesce(({self.where}), false) FROM batch").to_arrow_table()
        except duckdb.Error as e:  # a value the check on the schema could not foresee (a failing cast)
            raise ValueError(f"where {self.where!r}: {str(e).splitlines()[0]}") from None
        finally:
            self._con.unregister("batch")
        verdict = out.column(0)
        if verdict.null_count == 0 and pc.all(verdict).as_py():
            return None
        return verdict.to_numpy(zero_copy_only=False)

    def close(self) -> None:
        self._con.close()


def kept_json(kept: dict[str, list[Any]], k: int) -> str:
    """Row ``k``'s kept values as a JSON object (numbers, text, booleans, null; other values as text)."""
    import json

    return json.dumps({c: values[k] for c, values in kept.items()}, default=str)


@dataclass(slots=True)
class SourceRow:
    url: str
    caption: str
    folder_tag: str | None
    source: str
    row: int


def expand_sources(sources: list[SourceConfig], rows_per_shard: int | None = None) -> list[SourceShard]:
    """List the ingest shards for all sources, in a deterministic order; raises for paths that match nothing.

    Parquet files longer than ``rows_per_shard`` (default :data:`ROWS_PER_SHARD`) are split into ranges of whole
    row groups; the split depends only on the files' footers, so a resumed run gets the same shards.
    """
    rows_per_shard = rows_per_shard or ROWS_PER_SHARD
    shards: list[SourceShard] = []
    for si, src in enumerate(sources):
        found: list[str] = []
        for pattern in src.paths:
            if storage.is_url(pattern):
                found.extend(_expand_url(si, src.kind, pattern))
                continue
            matches = sorted(glob.glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]
            for m in matches:
                p = Path(m)
                if src.kind == "folder":
                    if not p.is_dir():
                        raise FileNotFoundError(f"sources[{si}]: not a folder: {m}")
                    found.append(str(p.resolve()))
                elif src.kind == "img2dataset" and p.exists():
                    found.extend(shard_files(m))  # its shards' metadata parquet files
                elif p.is_dir():
                    found.extend(str(f.resolve()) for f in sorted(p.rglob("*")) if f.suffix in METADATA_SUFFIXES)
                elif p.is_file():
                    found.append(str(p.resolve()))
                else:
                    raise FileNotFoundError(f"sources[{si}]: no such file: {m}")
        if not found:
            raise FileNotFoundError(f"sources[{si}]: {src.paths} matched no files")
        for f in found:
            shards.extend(_split_file(si, f, rows_per_shard) if src.kind != "folder" else [SourceShard(si, f)])
    return shards


def _expand_url(si: int, kind: str, pattern: str) -> list[str]:
    """The metadata files an object-store pattern names: a glob, a folder (its metadata files), or one file."""
    if kind == "folder":
        raise FileNotFoundError(f"sources[{si}]: {pattern}: an image folder must be a local folder "
                                "(metadata sources may be object-store URLs)")
    storage.check_access(pattern)  # credentials, endpoint and bucket, named before anything is listed
    if any(c in pattern.split("://", 1)[1] for c in "*?["):
        return storage.glob(pattern)
    what = storage.stat(pattern)[0]
    if what == "file":
        return [pattern]
    files = [u for u in storage.list_files(pattern) if Path(u).suffix in METADATA_SUFFIXES]
    if not files:
        raise FileNotFoundError(f"sources[{si}]: no such file: {pattern}")
    return files


def _split_file(source_index: int, path: str, rows_per_shard: int) -> list[SourceShard]:
    if not path.lower().endswith(".parquet"):
        return [SourceShard(source_index, path)]
    _, size, mtime_ns = storage.stat(path)
    sizes = _row_group_rows(path, mtime_ns, size)
    if sizes is None or sum(sizes) <= rows_per_shard or len(sizes) < 2:
        return [SourceShard(source_index, path)]
    out, start, first_row, rows = [], 0, 0, 0
    for g, n in enumerate(sizes):
        rows += n
        if rows >= rows_per_shard or g == len(sizes) - 1:
            out.append(SourceShard(source_index, path, (start, g + 1), first_row))
            start, first_row, rows = g + 1, first_row + rows, 0
    return out


@functools.lru_cache(maxsize=65536)
def _row_group_rows(path: str, mtime_ns: int, size: int) -> tuple[int, ...] | None:
    """Rows per row group of a parquet file (its footer only; cached per file version: every ingest shard lists
    the shards again). ``None`` when the footer cannot be read: the file stays one shard and reading it reports
    the problem there."""
    try:
        meta = pq.read_metadata(storage.open_input(path))
    except (OSError, pa.ArrowException):
        return None
    return tuple(meta.row_group(g).num_rows for g in range(meta.num_row_groups))


def read_source(shard: SourceShard, src: SourceConfig) -> Iterator[SourceRow]:
    """Stream the rows of one source shard."""
    if src.kind == "folder":
        root = Path(shard.path)
        for i, f in enumerate(sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)):
            rel = f.relative_to(root)
            tag = rel.parts[0] if src.folder_tag and len(rel.parts) > 1 else None
            yield SourceRow(f.resolve().as_uri(), tag.replace("_", " ") if tag else "", tag, shard.path, i)
        return
    for batch in read_metadata_batches(shard, src):
        for i, (url, caption) in enumerate(zip(batch.urls, batch.captions), batch.first_row):
            if url and (batch.passes is None or batch.passes[i - batch.first_row]):
                yield SourceRow(str(url), str(caption or ""), None, shard.path, i)


def read_metadata_batches(shard: SourceShard, src: SourceConfig) -> Iterator[MetadataBatch]:
    """Stream the (URL, caption) columns of one metadata shard as record batches (parquet: only its row groups),
    with the ``where`` verdict and the ``keep_columns`` values of each row when the source asks for them."""
    row = shard.first_row
    predicate = RowPredicate(src.where) if src.where else None
    try:
        for urls, captions, batch in _iter_metadata(shard.path, src.url_col, src.caption_col, shard.row_groups,
                                                    src.where, src.keep_columns):
            yield MetadataBatch(row, urls.to_pylist(), captions.to_pylist(),
                                pa.types.is_string(captions.type) or pa.types.is_large_string(captions.type),
                                predicate.mask(batch) if predicate is not None else None,
                                {c: batch.column(c).to_pylist() for c in src.keep_columns} if src.keep_columns else None)
            row += len(urls)
    finally:
        if predicate is not None:
            predicate.close()


def _iter_metadata(
    path: str, url_col: str, caption_col: str, row_groups: tuple[int, int] | None = None, where: str = "",
    keep_columns: list[str] | tuple[str, ...] = (),
) -> Iterator[tuple[pa.Array, pa.Array, pa.RecordBatch]]:
    """(URL, caption, the batch) per record batch; the batch also holds the columns ``where`` and ``keep_columns``
    read (only those are read from a parquet file)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".parquet":
        pf = pq.ParquetFile(storage.open_input(path))
        names = pf.schema_arrow.names
        _require_columns(path, names, url_col, caption_col, *keep_columns)
        groups = range(*row_groups) if row_groups else None
        extra = [c for c in dict.fromkeys([*referenced_columns(where, names), *keep_columns]) if c not in (url_col, caption_col)]
        for batch in pf.iter_batches(batch_size=BATCH_ROWS, row_groups=groups, columns=[url_col, caption_col, *extra]):
            # A binary column is decoded as UTF-8 (invalid bytes raise), never stored as "b'...'".
            yield batch.column(0).cast(pa.string()), batch.column(1).cast(pa.string()), batch
        return
    if suffix in (".csv", ".tsv"):
        opts = pacsv.ParseOptions(delimiter="\t" if suffix == ".tsv" else ",")
        table = pacsv.read_csv(storage.open_input(path), parse_options=opts)
    elif suffix in (".jsonl", ".json"):
        table = pajson.read_json(storage.open_input(path))
    else:
        raise ValueError(f"{path}: unsupported metadata format {suffix}")
    _require_columns(path, table.column_names, url_col, caption_col, *keep_columns)
    for batch in table.to_batches(BATCH_ROWS):
        yield batch.column(url_col).cast(pa.string()), batch.column(caption_col).cast(pa.string()), batch


def _require_columns(path: str, names: list[str], *cols: str) -> None:
    missing = [c for c in cols if c not in names]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; has {names}. Set sources[].url_col/caption_col.")
