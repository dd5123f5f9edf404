"""Index step (global): gather the embed step's vectors of every image still in play into memory-mapped matrices.

    index/meta.parquet   id, tag, category, width, height, row (in vectors.npy, -1: none), face_row (in faces.npy)
    index/vectors.npy    (N, D) float32 image embeddings, in shard order (ids sorted within a shard)
    index/faces.npy      (F, d) float32 face embeddings of the images that have one
    index/_SUCCESS

An image is in play when its download row is ok, no filter dropped it and the embed step read it. The global
steps (dedup, grouping, audit) open the matrices memory-mapped, so the driver never holds the whole dataset.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mrbench.curation.config import CurateConfig
from mrbench.curation.embed import uses_models
from mrbench.curation.filters import dropped_ids
from mrbench.layout import RunLayout
from mrbench.shards import temporary_path, write_parquet_atomic
from mrbench.stage import Step
from mrbench.stats import Stats

META_SCHEMA = pa.schema(
    [("id", pa.string()), ("tag", pa.string()), ("category", pa.string()), ("width", pa.int32()),
     ("height", pa.int32()), ("row", pa.int64()), ("face_row", pa.int64())]
)


@dataclass
class FeatureIndex:
    """The index of a run: metadata lists aligned with ``ids`` and memory-mapped vectors."""

    ids: list[str]
    tags: list[str]
    categories: list[str]
    resolution: np.ndarray  # width * height
    row: np.ndarray  # index into vectors, -1 when the image has no embedding
    face_row: np.ndarray  # index into faces, -1 when the image has no face embedding
    vectors: np.ndarray
    faces: np.ndarray

    @classmethod
    def load(cls, run_dir: Path) -> "FeatureIndex":
        folder = RunLayout(run_dir).index
        meta = pq.read_table(folder / "meta.parquet")
        col = {n: meta.column(n).to_numpy(zero_copy_only=False) for n in META_SCHEMA.names}
        return cls(
            ids=meta.column("id").to_pylist(), tags=meta.column("tag").to_pylist(),
            categories=meta.column("category").to_pylist(),
            resolution=col["width"].astype(np.int64) * col["height"].astype(np.int64),
            row=col["row"].astype(np.int64), face_row=col["face_row"].astype(np.int64),
            vectors=np.load(folder / "vectors.npy", mmap_mode="r"), faces=np.load(folder / "faces.npy", mmap_mode="r"),
        )

    def position(self) -> dict[str, int]:
        """Id -> position in the index lists."""
        return {rid: k for k, rid in enumerate(self.ids)}

    def image_vectors(self, positions: np.ndarray) -> np.ndarray:
        """Embeddings of the images at ``positions`` (all must have one)."""
        rows = self.row[positions]
        return np.asarray(self.vectors[rows], np.float32) if rows.size else np.zeros((0, self.vectors.shape[1]), np.float32)

    def face_vectors(self, positions: np.ndarray) -> np.ndarray:
        """Face embeddings of the images at ``positions`` (all must have one)."""
        rows = self.face_row[positions]
        return np.asarray(self.faces[rows], np.float32) if rows.size else np.zeros((0, self.faces.shape[1]), np.float32)

    def release_pages(self) -> None:
        """Let go of the memory-mapped pages read so far (they stay in the page cache): a pass over every group
        touches the whole matrix, which would otherwise count in this process's resident memory."""
        for m in (self.vectors, self.faces):
            mm = getattr(m, "_mmap", None)
            if mm is not None and hasattr(mm, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
                mm.madvise(mmap.MADV_DONTNEED)

    def stream_rows(self, which: str, rows: np.ndarray, block: int = 1 << 14) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Read rows of ``vectors`` or ``faces`` (``which``) block by block, with plain reads (no mapping).

        Args:
            which: ``vectors`` or ``faces``.
            rows: Matrix rows wanted, ascending.
            block: Matrix rows per read.

        Yields:
            (positions into ``rows``, their vectors as a float32 array) per block that holds any wanted row.
        """
        m = getattr(self, which)
        dim = m.shape[1]
        path, offset = getattr(m, "filename", None), getattr(m, "offset", None)
        for s in range(0, int(rows[-1]) + 1 if rows.size else 0, block):
            lo, hi = np.searchsorted(rows, [s, s + block])
            if lo == hi:
                continue
            e = min(s + block, m.shape[0])
            if path is None:  # an in-memory matrix
                data = np.asarray(m[s:e], np.float32)
            else:
                data = np.fromfile(path, np.float32, count=(e - s) * dim, offset=offset + s * dim * 4).reshape(e - s, dim)
            yield np.arange(lo, hi), data[rows[lo:hi] - s]


def _flat(col: pa.Array, dim: int) -> np.ndarray:
    """The non-null rows of a list<float32> column as an (N, dim) float32 array."""
    col = col.drop_null() if col.null_count else col
    values = col.flatten().to_numpy(zero_copy_only=False)
    return np.asarray(values, np.float32).reshape(len(col), dim)


def _dim(path: Path, column: str) -> int:
    for batch in pq.ParquetFile(path).iter_batches(columns=[column], batch_size=256):
        for v in batch.column(0).to_pylist():
            if v is not None:
                return len(v)
    return 0


def build_index(config: CurateConfig, run_dir: Path) -> Stats:
    """Global step: write ``index/`` (see the module docstring); skipped when already complete."""
    layout = RunLayout(run_dir)
    folder = layout.index
    n = config.num_shards
    download, features = layout.download, layout.embed
    meta: dict[str, list] = {k: [] for k in META_SCHEMA.names}
    # Pass 1: which rows are in play, and the vector sizes.
    dim = face_dim = 0
    keep: list[list[bool]] = []
    for i in range(n):
        cols = ["id", "tags", "category", "status"]
        info = {r["id"]: r for r in pq.read_table(download.output(i), columns=cols).to_pylist()}
        dropped = dropped_ids(layout.filters.output(i))  # this shard's filter drops: ids only, one shard at a time
        feats = pq.read_table(features.output(i), columns=["id", "width", "height", "status"]).to_pylist()
        dim = dim or _dim(features.output(i), "embedding")
        face_dim = face_dim or _dim(features.output(i), "face_embedding")
        mask = []
        for f in feats:
            d = info.get(f["id"])
            ok = d is not None and d["status"] == "ok" and f["status"] == "ok" and f["id"] not in dropped
            mask.append(ok)
            if ok:
                meta["id"].append(f["id"])
                meta["tag"].append(d["tags"][0] if d["tags"] else "untagged")
                meta["category"].append(d["category"] or "")
                meta["width"].append(f["width"])
                meta["height"].append(f["height"])
        keep.append(mask)
    folder.mkdir(parents=True, exist_ok=True)
    total = len(meta["id"])
    vec_tmp, face_tmp = temporary_path(folder / "vectors.npy"), temporary_path(folder / "faces.npy")
    # Pass 2: stream the vectors into memory-mapped files.
    vectors = np.lib.format.open_memmap(vec_tmp, mode="w+", dtype=np.float32, shape=(total if dim else 0, dim))
    face_parts: list[np.ndarray] = []
    num_faces = 0
    k = 0
    for i in range(n):
        start = 0  # batches may come shorter than batch_size (row-group ends): slice the mask by their real length
        batches = pq.ParquetFile(features.output(i)).iter_batches(columns=["embedding", "face_embedding"], batch_size=4096)
        for batch in batches:
            mask = np.asarray(keep[i][start : start + batch.num_rows], bool)
            start += batch.num_rows
            m = int(mask.sum())
            if not m:
                continue
            # Whole columns at once: the list values as one flat float32 buffer (no Python floats per value).
            emb = batch.column(0).filter(pa.array(mask))
            fem = batch.column(1).filter(pa.array(mask))
            has = ~np.asarray(emb.is_null().to_numpy(zero_copy_only=False), bool)
            if dim:
                block = np.zeros((m, dim), np.float32)
                if has.any():
                    block[has] = _flat(emb, dim)
                vectors[k : k + m] = block
                meta["row"].extend(np.where(has, np.arange(k, k + m), -1).tolist())
            else:
                meta["row"].extend([-1] * m)
            fhas = ~np.asarray(fem.is_null().to_numpy(zero_copy_only=False), bool)
            face_row = np.full(m, -1, np.int64)
            face_row[fhas] = np.arange(num_faces, num_faces + int(fhas.sum()))
            meta["face_row"].extend(face_row.tolist())
            if fhas.any():
                face_parts.append(_flat(fem, face_dim))
                num_faces += int(fhas.sum())
            k += m
    vectors.flush()
    del vectors
    faces = np.concatenate(face_parts) if face_parts else np.zeros((0, face_dim), np.float32)
    with open(face_tmp, "wb") as f:
        np.save(f, faces)
    vec_tmp.replace(folder / "vectors.npy")
    face_tmp.replace(folder / "faces.npy")
    write_parquet_atomic(pa.table(meta, schema=META_SCHEMA), folder / "meta.parquet")
    stats = Stats()
    stats.inc("index/images", total)
    stats.inc("index/faces", num_faces)
    return stats


INDEX_STEP = Step("index", build_index, after="filters", reads=("download", "embed", "filters"), enabled=uses_models,
                  settings=("num_shards",))
