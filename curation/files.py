"""Near-duplicates and groups among plain image files, without a run folder (``mrbench dedup``, ``mrbench group``).

Both take the embeddings of :func:`curation.embed.embed_files` and give one row per file, in the files' order;
a file that was not embedded (unreadable, no face) keeps its row with its ``status`` and empty results.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from mrbench.curation.cluster import Clustering, cluster_embeddings
from mrbench.curation.dedup import dedup
from mrbench.curation.embed import FileEmbeddings
from mrbench.thresholds import choose

FILE_DUPLICATES_SCHEMA = pa.schema([("path", pa.string()), ("duplicate_of", pa.string()), ("similarity", pa.float32()),
                                    ("status", pa.string()), ("error_message", pa.string())])
FILE_GROUPS_SCHEMA = pa.schema([("path", pa.string()), ("group_id", pa.int64()), ("status", pa.string()),
                                ("error_message", pa.string())])


@dataclass(frozen=True)
class FileDuplicates:
    """What :func:`dedup_files` found: the table (:data:`FILE_DUPLICATES_SCHEMA`) and its counts."""

    table: pa.Table
    kept: int
    near_duplicates: int
    not_embedded: int


@dataclass(frozen=True)
class FileGroups:
    """What :func:`group_files` found: the table (:data:`FILE_GROUPS_SCHEMA`) and how the groups were cut."""

    table: pa.Table
    clustering: Clustering
    not_embedded: int


def dedup_files(embeddings: FileEmbeddings, threshold: float) -> FileDuplicates:
    """Mark near-duplicates (cosine >= ``threshold``): ``duplicate_of`` names the kept file (null when kept), the one
    with the most pixels, then the smallest path (:func:`curation.dedup.dedup`)."""
    ok = embeddings.ok_index
    paths_ok = [embeddings.paths[k] for k in ok]
    res = dedup(embeddings.vectors, paths_ok, np.asarray(embeddings.resolution)[ok], threshold)
    dup: list[str | None] = [None] * len(embeddings.paths)
    sim: list[float | None] = [None] * len(embeddings.paths)
    for k, row in enumerate(ok.tolist()):
        if res.duplicate_of[k] >= 0:
            dup[row], sim[row] = paths_ok[res.duplicate_of[k]], float(res.similarity[k])
    table = pa.table({"path": embeddings.paths, "duplicate_of": dup, "similarity": sim, "status": embeddings.status,
                      "error_message": embeddings.error_message}, schema=FILE_DUPLICATES_SCHEMA)
    n_dup = sum(d is not None for d in dup)
    return FileDuplicates(table, len(ok) - n_dup, n_dup, len(dup) - len(ok))


def group_files(embeddings: FileEmbeddings, encoder: str, num_groups: int | None = None,
                threshold: float | None = None, seed: int = 0) -> FileGroups:
    """Group the embedded files (:func:`curation.cluster.cluster_embeddings`). Without ``num_groups`` or
    ``threshold``, face embeddings are cut at ``encoder``'s identity threshold (:mod:`mrbench.thresholds`) and
    image embeddings into the number of groups with the best silhouette."""
    if threshold is None and num_groups is None and embeddings.faces:
        threshold = choose(encoder, "identity").threshold
    result = cluster_embeddings(embeddings.vectors, num_clusters=num_groups, threshold=threshold, seed=seed)
    group_id: list[int | None] = [None] * len(embeddings.paths)
    for row, label in zip(embeddings.ok_index.tolist(), result.labels.tolist()):
        group_id[row] = int(label)
    table = pa.table({"path": embeddings.paths, "group_id": group_id, "status": embeddings.status,
                      "error_message": embeddings.error_message}, schema=FILE_GROUPS_SCHEMA)
    return FileGroups(table, result, sum(g is None for g in group_id))
