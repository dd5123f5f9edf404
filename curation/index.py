"""Index step (global): gather the embed step's vectors of every image still in play into memory-mapped matrices.

    index/meta.parquet   id, tag, category, width, height, row (in vectors.npy, -1: none), face_row (in faces.npy)
    index/vectors.npy    (N, D) float32 image embeddings, in shard order (ids sorted within a shard)
    index/faces.npy      (F, d) float32 face embeddings of the images that have one
    index/_SUCCESS

An image is in play when its download row is ok, no filter dropped it and the embed step read it. The global
steps (dedup, grouping, audit) open the matrices memory-mapped, so the driver never holds the whole dataset.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mrbench.config import CurateConfig
from mrbench.curation.filters import read_drops
from mrbench.shards import ShardSet, global_step, write_parquet_atomic
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
        folder = Path(run_dir) / "index"
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


def _dim(path: Path, column: str) -> int:
    for batch in pq.ParquetFile(path).iter_batches(columns=[column], batch_size=256):
        for v in batch.column(0).to_pylist():
            if v is not None:
                return len(v)
    return 0


@global_step("index")
def build_index(config: CurateConfig, run_dir: Path) -> Stats:
    """Global step: write ``index/`` (see the module docstring); skipped when already complete."""
    folder = Path(run_dir) / "index"
    n = config.num_shards
    download = ShardSet(Path(run_dir) / "download", "shard")
    features = ShardSet(Path(run_dir) / "embed", "shard")
    dropped = read_drops(Path(run_dir) / "filters", "drops", n)
    meta: dict[str, list] = {k: [] for k in META_SCHEMA.names}
    # Pass 1: which rows are in play, and the vector sizes.
    dim = face_dim = 0
    keep: list[list[bool]] = []
    for i in range(n):
        cols = ["id", "tags", "category", "status"]
        info = {r["id"]: r for r in pq.read_table(download.output(i), columns=cols).to_pylist()}
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
    vec_tmp, face_tmp = folder / "vectors.npy.tmp", folder / "faces.npy.tmp"
    # Pass 2: stream the vectors into memory-mapped files.
    vectors = np.lib.format.open_memmap(vec_tmp, mode="w+", dtype=np.float32, shape=(total if dim else 0, dim))
    face_rows: list[np.ndarray] = []
    k = 0
    for i in range(n):
        start = 0  # batches may come shorter than batch_size (row-group ends): slice the mask by their real length
        batches = pq.ParquetFile(features.output(i)).iter_batches(columns=["embedding", "face_embedding"], batch_size=512)
        for batch in batches:
            emb, fem = batch.column(0).to_pylist(), batch.column(1).to_pylist()
            mask, start = keep[i][start : start + batch.num_rows], start + batch.num_rows
            for e, fe, ok in zip(emb, fem, mask):
                if not ok:
                    continue
                if dim:
                    vectors[k] = e if e is not None else np.zeros(dim, np.float32)
                meta["row"].append(k if (dim and e is not None) else -1)
                if fe is not None:
                    meta["face_row"].append(len(face_rows))
                    face_rows.append(np.asarray(fe, np.float32))
                else:
                    meta["face_row"].append(-1)
                k += 1
    vectors.flush()
    del vectors
    faces = np.stack(face_rows) if face_rows else np.zeros((0, face_dim), np.float32)
    with open(face_tmp, "wb") as f:
        np.save(f, faces)
    vec_tmp.replace(folder / "vectors.npy")
    face_tmp.replace(folder / "faces.npy")
    write_parquet_atomic(pa.table(meta, schema=META_SCHEMA), folder / "meta.parquet")
    stats = Stats()
    stats.inc("index/images", total)
    stats.inc("index/faces", len(face_rows))
    return stats
