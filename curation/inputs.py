"""Upfront checks of the input sources: every file is opened (footer, header, first rows) before any work, so a
missing file, a corrupt parquet, a missing column or a non-UTF-8 text file fails at once with the file named.

Problems deeper in a file (a bad byte a million rows in) surface while ingesting; :func:`named_source_errors`
wraps the reader so they too name the file instead of ending in a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Iterator, TypeVar

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from mrbench import storage
from mrbench.config import InputError
from mrbench.curation.config import CurateConfig
from mrbench.curation.img2dataset import container_of
from mrbench.curation.release_format import RELEASE_SCHEMA
from mrbench.curation.sources import METADATA_SUFFIXES, expand_sources

T = TypeVar("T")
ROW_SOURCES = ("metadata", "img2dataset")  # sources of metadata rows (columns, where, keep_columns)
_TEXT_TYPES = (pa.types.is_string, pa.types.is_large_string, pa.types.is_binary, pa.types.is_large_binary,
               pa.types.is_null)
_UTF8_HINT = "not UTF-8 text (latin-1?); convert it to UTF-8 first"


def check_sources(config: CurateConfig) -> int:
    """Open every source file of ``config`` and check it can be ingested.

    Returns:
        The number of ingest shards (source files and folders).

    Raises:
        InputError: naming the file and the problem.
    """
    try:
        shards = expand_sources(config.sources)
    except FileNotFoundError as e:
        raise InputError(str(e)) from None
    checked: set[str] = set()
    for shard in shards:
        src = config.sources[shard.source_index]
        if src.kind in ROW_SOURCES:
            check_metadata_file(shard.path, src.url_col, src.caption_col)
            if (src.where or src.keep_columns) and shard.path not in checked:
                checked.add(shard.path)
                check_row_rules(shard.path, shard.source_index, src.where, src.keep_columns)
        elif src.where or src.keep_columns:
            raise InputError(f"sources[{shard.source_index}]: where / keep_columns apply to metadata and img2dataset "
                             "sources only (a folder has no columns)")
    if any(s.keep_columns for s in config.sources):
        kept_fields(config)  # one type per kept column across sources
    return len(shards)


def source_schema(path: str | Path) -> pa.Schema:
    """The columns of a metadata file: the parquet footer, the CSV header (types of its first block), or the
    first JSON line's keys and value types."""
    path = str(path)
    suffix = Path(path).suffix.lower()
    if suffix == ".parquet":
        return pq.ParquetFile(storage.open_input(path)).schema_arrow
    if suffix in (".csv", ".tsv"):
        opts = pacsv.ParseOptions(delimiter="\t" if suffix == ".tsv" else ",")
        return pacsv.open_csv(storage.open_input(path), parse_options=opts, read_options=pacsv.ReadOptions(block_size=1 << 20)).schema
    import io

    import pyarrow.json as pajson

    with storage.open_binary(path) as f:
        first = next((line for line in f if line.strip()), b"{}")
    return pajson.read_json(io.BytesIO(first)).schema


def check_row_rules(path: str, index: int, where: str, keep_columns: list[str]) -> None:
    """A source's ``where`` must be a boolean SQL expression over its columns, and every ``keep_columns`` name one
    of its columns that no release column shadows; checked on the file's schema (no row is read)."""
    import duckdb

    schema = source_schema(path)
    missing = [c for c in keep_columns if c not in schema.names]
    if missing:
        raise InputError(f"sources[{index}].keep_columns: {path} has no column(s) {', '.join(missing)}; "
                         f"it has {', '.join(schema.names)}")
    clash = [c for c in keep_columns if c in RELEASE_SCHEMA.names]
    if clash:
        raise InputError(f"sources[{index}].keep_columns: {', '.join(clash)} would replace a release column")
    if where:
        con = duckdb.connect(config={"threads": 1})
        try:
            con.register("batch", schema.empty_table())
            kind = con.execute(f"DESCRIBE SELECT ({where}) AS keep FROM batch").fetchall()[0][1]
            if kind != "BOOLEAN":
                raise InputError(f"sources[{index}].where {where!r} is not a true/false condition (it gives {kind}); "
                                 "write a comparison such as punsafe < 0.1")
        except duckdb.Error as e:
            raise InputError(f"sources[{index}].where {where!r} does not apply to {storage.name(path)}: "
                             f"{_short(e)}") from None
        finally:
            con.close()


def check_metadata_file(path: str, url_col: str, caption_col: str) -> None:
    """Check that ``path`` opens as its format and has text columns ``url_col`` and ``caption_col``."""
    suffix = Path(path).suffix.lower()
    if suffix not in METADATA_SUFFIXES:
        raise InputError(f"{path}: unsupported metadata format {suffix or '(no suffix)'!r}; "
                         f"use one of {', '.join(sorted(METADATA_SUFFIXES))}")
    try:
        if suffix == ".parquet":
            schema = pq.ParquetFile(storage.open_input(path)).schema_arrow
        elif suffix in (".csv", ".tsv"):
            opts = pacsv.ParseOptions(delimiter="\t" if suffix == ".tsv" else ",")
            schema = pacsv.open_csv(storage.open_input(path), parse_options=opts, read_options=pacsv.ReadOptions(block_size=1 << 20)).schema
        else:
            _check_json_head(path, url_col)
            return
    except (pa.ArrowException, OSError) as e:
        kind = "parquet" if suffix == ".parquet" else "CSV"
        raise InputError(f"{path}: not a readable {kind} file ({_short(e)})") from None
    _check_columns(path, schema, url_col, caption_col, text_file=suffix != ".parquet")


def _check_columns(path: str, schema: pa.Schema, url_col: str, caption_col: str, text_file: bool) -> None:
    missing = [c for c in (url_col, caption_col) if c not in schema.names]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)}; it has {', '.join(schema.names)}. "
                         "Set sources[].url_col / caption_col.")
    for col in (url_col, caption_col):
        tp = schema.field(col).type
        if not any(is_type(tp) for is_type in _TEXT_TYPES):
            raise InputError(f"{path}: column {col!r} has type {tp}, expected text")
        # pyarrow's CSV reader types a column holding invalid UTF-8 as binary.
        if text_file and pa.types.is_binary(tp):
            raise InputError(f"{path}: column {col!r} is {_UTF8_HINT}")


def _check_json_head(path: str, url_col: str) -> None:
    """The first non-empty line of a JSON-lines file must be a UTF-8 JSON object with ``url_col``."""
    with storage.open_binary(path) as f:
        for number, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                raise InputError(f"{path}:{number}: {_UTF8_HINT}") from None
            except json.JSONDecodeError as e:
                raise InputError(f"{path}:{number}: not JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(row, dict) or url_col not in row:
                raise InputError(f"{path}:{number}: expected a JSON object with key {url_col!r}. "
                                 "Set sources[].url_col.")
            return
    raise InputError(f"{path}: empty file")


def named_source_errors(rows: Iterable[T], path: str) -> Iterator[T]:
    """Yield ``rows``; a read error (bad bytes, a corrupt page, a bad type) becomes :class:`InputError` naming
    ``path`` instead of a traceback."""
    try:
        yield from rows
    except InputError:
        raise
    except UnicodeDecodeError:
        raise InputError(f"{path}: {_UTF8_HINT}") from None
    except (pa.ArrowException, OSError, ValueError) as e:
        text = _short(e)
        if "UTF8" in text or "utf-8" in text.lower():
            text = _UTF8_HINT
        raise InputError(f"{path}: cannot read ({text})" if path not in text else text) from None


def _short(e: BaseException) -> str:
    """First line of an exception's message (pyarrow's can run to many lines)."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def kept_fields(config: CurateConfig) -> list[pa.Field]:
    """The release columns of the sources' ``keep_columns``, in first-mention order, typed from the first file of
    the source that names them: integers -> int64, floats -> double, booleans -> bool, anything else -> string
    (text; other values as JSON).

    Raises:
        InputError: two sources keep a column of the same name with different types.
    """
    out: dict[str, pa.Field] = {}
    for i, src in enumerate(config.sources):
        if src.kind not in ROW_SOURCES or not src.keep_columns:
            continue
        shard = next(s for s in expand_sources(config.sources) if s.source_index == i)
        schema = source_schema(shard.path)
        for name in src.keep_columns:
            tp = schema.field(name).type
            kind = (pa.int64() if pa.types.is_integer(tp) else pa.float64() if pa.types.is_floating(tp)
                    else pa.bool_() if pa.types.is_boolean(tp) else pa.string())
            if name in out and out[name].type != kind:
                raise InputError(f"sources[{i}].keep_columns: {name} is {kind} here but {out[name].type} in an "
                                 "earlier source")
            out.setdefault(name, pa.field(name, kind))
    return list(out.values())


def tag_list_identity(config: CurateConfig) -> dict[str, str]:
    """The tag list's identity for step fingerprints (:mod:`mrbench.fingerprint`): its sha256 ("" without one)."""
    from mrbench.curation.tags import file_sha256

    path = config.crawl.tag_list
    return {"tag_list": file_sha256(path) if path and Path(path).is_file() else ""}


def source_identity(config: CurateConfig) -> dict[str, str]:
    """The source files' identity for the ingest step's fingerprint: a digest of every ingest shard's file (or
    each image file of a folder source) with its size and modification time, and of the tag list's sha256.

    Sizes and times, not contents: hashing terabytes of metadata on every rerun would cost more than the check is
    worth; a file rewritten in place keeps neither its time nor, almost always, its size.
    """
    import hashlib
    import os

    h = hashlib.sha256()
    try:
        shards = expand_sources(config.sources)
    except FileNotFoundError as e:
        raise InputError(str(e)) from None
    for shard in shards:
        if storage.is_url(shard.path):  # an object: its size and time as the store keeps them
            _, size, mtime_ns = storage.stat(shard.path)
            h.update(f"{shard.path}\0{size}\0{mtime_ns}\0{shard.row_groups}\n".encode())
            continue
        root = Path(shard.path)
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        if config.sources[shard.source_index].kind == "img2dataset" and container_of(shard.path) != shard.path:
            images = Path(container_of(shard.path))  # the shard's tar or folder: its images are part of the input
            files += sorted(p for p in images.rglob("*") if p.is_file()) if images.is_dir() else [images]
        for f in files:
            st = os.stat(f)
            h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\0{shard.row_groups}\n".encode())
    return {"sources": h.hexdigest()[:32], **tag_list_identity(config)}


def filters_identity(config: CurateConfig) -> dict[str, object]:
    """The filters step's inputs besides its settings: the tag list (object classes come from its aliases) and the
    registered filters, by name and class, with the settings each one reads (every setting but the free ones for a
    filter that does not declare them in ``settings``). MRBench's own filters are left out: the step's settings are
    theirs (a filter registered in place of one is recorded)."""
    from mrbench.fingerprint import flat_settings, select_settings
    from mrbench.stage import filter_stages

    flat = flat_settings(config)
    registered: dict[str, object] = {}
    for name, cls in filter_stages():
        if cls.__module__.startswith("mrbench."):
            continue
        read = select_settings(getattr(cls, "settings", None), flat)
        registered[name] = {"class": f"{cls.__module__}:{cls.__qualname__}",
                            "settings": json.dumps(read, sort_keys=True, default=str)}
    return {**tag_list_identity(config), "registered_filters": registered}


def calibration_identity(config: CurateConfig) -> dict[str, str]:
    """The calibration file's identity for the steps whose thresholds it sets (dedup, group): its sha256."""
    from mrbench.curation.tags import file_sha256

    path = config.calibration
    return {"calibration": file_sha256(path) if path and Path(path).is_file() else ""}
