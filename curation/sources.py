"""Input sources: web-scale metadata files (LAION/COYO/DataComp style) and local image folders."""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from mrbench.config import SourceConfig

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
METADATA_SUFFIXES = {".parquet", ".csv", ".tsv", ".jsonl", ".json"}


@dataclass(frozen=True)
class SourceShard:
    """One unit of ingest work: a metadata file, or a whole image folder."""

    source_index: int
    path: str


@dataclass(slots=True)
class SourceRow:
    url: str
    caption: str
    folder_tag: str | None
    source: str
    row: int


def expand_sources(sources: list[SourceConfig]) -> list[SourceShard]:
    """List the ingest shards for all sources, in a deterministic order; raises for paths that match nothing."""
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
        shards.extend(SourceShard(si, f) for f in found)
    return shards


def read_source(shard: SourceShard, src: SourceConfig) -> Iterator[SourceRow]:
    """Stream the rows of one source shard."""
    if src.kind == "folder":
        root = Path(shard.path)
        for i, f in enumerate(sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)):
            rel = f.relative_to(root)
            tag = rel.parts[0] if src.folder_tag and len(rel.parts) > 1 else None
            yield SourceRow(f.resolve().as_uri(), tag.replace("_", " ") if tag else "", tag, shard.path, i)
        return
    for i, (url, caption) in enumerate(_iter_metadata(Path(shard.path), src.url_col, src.caption_col)):
        if url:
            yield SourceRow(str(url), str(caption or ""), None, shard.path, i)


def _iter_metadata(path: Path, url_col: str, caption_col: str) -> Iterator[tuple[str, str]]:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        pf = pq.ParquetFile(path)
        names = pf.schema_arrow.names
        _require_columns(path, names, url_col, caption_col)
        for batch in pf.iter_batches(batch_size=8192, columns=[url_col, caption_col]):
            # A binary column is decoded as UTF-8 (invalid bytes raise), never stored as "b'...'".
            yield from zip(batch.column(0).cast(pa.string()).to_pylist(), batch.column(1).cast(pa.string()).to_pylist())
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
    for batch in table.to_batches(8192):
        yield from zip(batch.column(0).to_pylist(), batch.column(1).to_pylist())


def _require_columns(path: Path, names: list[str], *cols: str) -> None:
    missing = [c for c in cols if c not in names]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; has {names}. Set sources[].url_col/caption_col.")
