"""The release format: the data files' schema (the Hugging Face ``Image`` feature in the schema metadata), its
older versions, the file names and the image cells; what the release step writes and what the card, the verifier
and the benchmarks read."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

# The image column as the Hugging Face ``Image`` feature stores it: the encoded file (``bytes``, the publisher's
# bytes or their re-encode) and a file name (``path``: ``<id>.<format>``; never opened while ``bytes`` is set).
IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
_RELEASE_FIELDS = [
    ("id", pa.string()),
    ("url", pa.string()),  # the source URL; for folder sources the file's path relative to the folder (sources.py)
    ("caption", pa.string()),  # as the source wrote it
    ("prompt", pa.string()),  # the caption with every tag mention replaced by its noun (curation.tags): eval prompt
    ("tags", pa.list_(pa.string())),
    ("category", pa.string()),
    ("group", pa.string()),
    ("split", pa.string()),
    ("role", pa.string()),
    ("image", IMAGE_TYPE),
    ("format", pa.string()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("sha256", pa.string()),
    ("encoding", pa.string()),  # "original" (the publisher's bytes) or how they were re-encoded (curation.download)
]


def _hf_feature(t: pa.DataType) -> dict[str, Any]:
    """The ``datasets`` feature (its JSON form) of a release column type: ``Sequence`` rather than the newer
    ``List`` so that every ``datasets`` version reads it."""
    if t == IMAGE_TYPE:
        return {"_type": "Image"}
    if pa.types.is_list(t):
        return {"feature": _hf_feature(t.value_type), "_type": "Sequence"}
    return {"dtype": str(t), "_type": "Value"}


# The features ride in each shard's schema metadata under "huggingface", where ``datasets`` writes and reads them
# (``Features.from_arrow_schema``): ``load_dataset`` then gives PIL images; duckdb/polars see a plain struct column.
def _with_features(fields: list[tuple[str, pa.DataType]]) -> pa.Schema:
    features = {name: _hf_feature(t) for name, t in fields}
    return pa.schema(fields, metadata={"huggingface": json.dumps({"info": {"features": features}})})


RELEASE_SCHEMA = _with_features(_RELEASE_FIELDS)
# Format mrbench-release/2 had no leak-free ``prompt`` column; format 1 (before the Image feature) also stored the
# image as plain binary. Both still verify and evaluate.
_FIELDS_V2 = [(n, t) for n, t in _RELEASE_FIELDS if n != "prompt"]
RELEASE_SCHEMA_V2 = _with_features(_FIELDS_V2)
RELEASE_SCHEMA_V1 = pa.schema([(n, pa.binary() if n == "image" else t) for n, t in _FIELDS_V2])
KEPT_TYPES = {"int64": pa.int64(), "double": pa.float64(), "bool": pa.bool_(), "string": pa.string()}


def release_schema(kept: "list[pa.Field] | tuple[pa.Field, ...]" = ()) -> pa.Schema:
    """The release schema, with the sources' ``keep_columns`` after the standard columns (and in its features)."""
    if not kept:
        return RELEASE_SCHEMA
    return _with_features([*_RELEASE_FIELDS, *((f.name, f.type) for f in kept)])


def kept_fields_of(schema: pa.Schema) -> list[pa.Field]:
    """The kept source columns of a release data file's schema (the columns after the standard ones)."""
    return [f for f in schema if f.name not in RELEASE_SCHEMA.names]


def release_data_files(release_dir: str | Path) -> list[Path]:
    """A release's data files (``data/*.parquet``), sorted by name: split, then shard order."""
    return sorted((Path(release_dir) / "data").glob("*.parquet"))


def release_kept_fields(release_dir: Path) -> list[pa.Field]:
    """The kept source columns of a release (from its first data file; none without data)."""
    files = release_data_files(release_dir)
    return kept_fields_of(pq.ParquetFile(files[0]).schema_arrow) if files else []


REJECT_SCHEMA = pa.schema(
    [("id", pa.string()), ("url", pa.string()), ("status", pa.string()), ("error_message", pa.string()),
     ("caption", pa.string()), ("tags", pa.list_(pa.string()))]
)
MANIFEST = "manifest.json"


def release_file(split: str, shard: int, num_shards: int) -> str:
    return f"data/{split}-{shard:05d}-of-{num_shards:05d}.parquet"


RELEASE_FILE = re.compile(r"data/(?P<split>[a-z_]+)-(?P<shard>\d{5})-of-(?P<of>\d{5})\.parquet")


def image_cells(data: pa.Array | pa.ChunkedArray, ids: list[str], formats: list[str]) -> pa.StructArray:
    """Encoded images as the ``Image`` feature's cells: ``{"bytes": data, "path": "<id>.<format>"}``."""
    data = data.combine_chunks() if isinstance(data, pa.ChunkedArray) else data
    names = pa.array([f"{i}.{f or 'jpg'}" for i, f in zip(ids, formats)], pa.string())
    return pa.StructArray.from_arrays([data.cast(pa.binary()), names], fields=list(IMAGE_TYPE))


def release_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Rows (``image``: the encoded bytes) as a table of :data:`RELEASE_SCHEMA`."""
    cols = {n: [r.get(n) for r in rows] for n in RELEASE_SCHEMA.names}
    cols["image"] = image_cells(pa.array(cols["image"], pa.binary()), cols["id"], cols["format"])
    return pa.table(cols, schema=RELEASE_SCHEMA)


def image_bytes(column: pa.Array | pa.ChunkedArray) -> list[bytes | None]:
    """The encoded images of a release ``image`` column, either layout: the ``Image`` struct (release format 2) or
    plain binary (format 1)."""
    if pa.types.is_struct(column.type):
        column = pc.struct_field(column, "bytes")
    return column.to_pylist()


def schema_problem(schema: pa.Schema, fmt: str | None = None, kept: "list[pa.Field] | None" = None) -> str | None:
    """Why a data file's schema is not the one its release format prescribes (``None`` when it is): columns
    missing, extra or of another type, or (format 2) the Hugging Face features metadata lost. ``kept``: the source
    columns the manifest lists (``kept_columns``)."""
    want = RELEASE_SCHEMAS.get(fmt or RELEASE_FORMAT, RELEASE_SCHEMA)
    if kept and want is RELEASE_SCHEMA:
        want = release_schema(kept)
    got = {f.name: f.type for f in schema}
    missing = [n for n in want.names if n not in got]
    extra = [n for n in got if n not in want.names]
    retyped = [f"{f.name} is {got[f.name]}, not {f.type}" for f in want if f.name in got and got[f.name] != f.type]
    parts = (([f"missing column(s) {missing}"] if missing else []) + ([f"extra column(s) {extra}"] if extra else [])
             + retyped)
    if not parts and want.metadata:
        try:
            features = json.loads((schema.metadata or {}).get(b"huggingface", b"{}"))["info"]["features"]
        except (ValueError, KeyError, TypeError):
            features = None
        if features != json.loads(want.metadata[b"huggingface"])["info"]["features"]:
            parts.append("its Hugging Face features metadata (schema key 'huggingface') is missing or altered")
    return "; ".join(parts) or None


# 2: image as the Hugging Face Image feature, contiguous data file names; 3: the leak-free ``prompt`` column
RELEASE_FORMAT = "mrbench-release/3"
RELEASE_SCHEMAS = {"mrbench-release/1": RELEASE_SCHEMA_V1, "mrbench-release/2": RELEASE_SCHEMA_V2,
                   RELEASE_FORMAT: RELEASE_SCHEMA}
RELEASE_ID = re.compile(r"[0-9a-f]{16}")  # curation.crawl.record_id: 16 hex digits of the URL's sha1
IMAGE_EXTENSION = re.compile(r"[a-z0-9]{1,8}")  # a bare extension: no dot, no separator, nothing to traverse with


class ReleaseError(ValueError):
    """A release cannot be used as it is (it fails verification, or holds ids of another format)."""


class UnsafeOutputError(ReleaseError):
    """``extract-images --out`` is inside the release, or a symlink waits where a file or folder is to be written."""
