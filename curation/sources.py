"""Input sources: web-scale metadata files (LAION/COYO/DataComp style) and local image folders."""

from __future__ import annotations

import functools
import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from mrbench.config import SourceConfig

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
    """One record batch of a metadata source: raw URL and caption values, and the file row number of the first."""

    first_row: int
    urls: list[Any]
    captions: list[Any]
    captions_are_text: bool  # str or None values (no str() needed)


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
            matches = sorted(glob.glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]
            for m in matches:
                p = Path(m)
                if src.kind == "folder":
                    if not p.is_dir():
                        raise FileNotFoundError(f"sources[{si}]: not a folder: {m}")
                    found.append(str(p.resolve()))
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


def _split_file(source_index: int, path: str, rows_per_shard: int) -> list[SourceShard]:
    if not path.lower().endswith(".parquet"):
        return [SourceShard(source_index, path)]
    st = os.stat(path)
    sizes = _row_group_rows(path, st.st_mtime_ns, st.st_size)
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
        meta = pq.read_metadata(path)
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
            if url:
                yield SourceRow(str(url), str(caption or ""), None, shard.path, i)


def read_metadata_batches(shard: SourceShard, src: SourceConfig) -> Iterator[MetadataBatch]:
    """Stream the (URL, caption) columns of one metadata shard as record batches (parquet: only its row groups)."""
    row = shard.first_row
    for urls, captions in _iter_metadata(Path(shard.path), src.url_col, src.caption_col, shard.row_groups):
        yield MetadataBatch(row, urls.to_pylist(), captions.to_pylist(),
                            pa.types.is_string(captions.type) or pa.types.is_large_string(captions.type))
        row += len(urls)


def _iter_metadata(
    path: Path, url_col: str, caption_col: str, row_groups: tuple[int, int] | None = None
) -> Iterator[tuple[pa.Array, pa.Array]]:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        pf = pq.ParquetFile(path)
        names = pf.schema_arrow.names
        _require_columns(path, names, url_col, caption_col)
        groups = range(*row_groups) if row_groups else None
        for batch in pf.iter_batches(batch_size=BATCH_ROWS, row_groups=groups, columns=[url_col, caption_col]):
            # A binary column is decoded as UTF-8 (invalid bytes raise), never stored as "b'...'".
            yield batch.column(0).cast(pa.string()), batch.column(1).cast(pa.string())
        return
    if suffix in (".csv", ".tsv"):
        opts = pacsv.ParseOptions(delimiter="\t" if suffix == ".tsv" else ",")
        table = pacsv.read_csv(path, parse_options=opts)
    elif suffix in (".jsonl", ".json"):
        table = pajson.read_json(path)
    else:
        raise ValueError(f"{path}: unsupported metadata format {suffix}")
    _require_columns(path, table.column_names, url_col, caption_col)
    table = table.select([url_col, caption_col]).cast(pa.schema([(url_col, pa.string()), (caption_col, pa.string())]))
    for batch in table.to_batches(BATCH_ROWS):
        yield batch.column(0), batch.column(1)


def _require_columns(path: Path, names: list[str], *cols: str) -> None:
    missing = [c for c in cols if c not in names]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; has {names}. Set sources[].url_col/caption_col.")
