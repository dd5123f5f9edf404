"""Near-duplicates and groups among plain files (the library side of ``mrbench dedup`` / ``mrbench group``), on
hand-placed unit vectors whose cosines are known."""

from __future__ import annotations

import numpy as np
import pytest

from mrbench.curation.embed import FileEmbeddings
from mrbench.curation.files import FILE_DUPLICATES_SCHEMA, FILE_GROUPS_SCHEMA, dedup_files, group_files


def at_angles(degrees: list[float]) -> np.ndarray:
    """Unit vectors in a plane: the cosine of two of them is the cosine of their angle."""
    rad = np.radians(degrees)
    return np.stack([np.cos(rad), np.sin(rad), np.zeros_like(rad)], axis=1).astype(np.float32)


def embedded(paths: list[str], status: list[str], degrees: list[float], resolution: list[int],
             faces: bool = False) -> FileEmbeddings:
    return FileEmbeddings(paths, status, ["" if s == "ok" else s for s in status], resolution, at_angles(degrees),
                          faces=faces)


def test_dedup_files_names_the_larger_image_and_keeps_a_row_per_file():
    # a.jpg and its smaller copy are 8 degrees apart (cosine 0.990); c.jpg is far from both; broken.jpg has no vector
    got = embedded(["a.jpg", "a_small.jpg", "broken.jpg", "c.jpg"], ["ok", "ok", "unreadable_image", "ok"],
                   [0.0, 8.0, 90.0], [640 * 480, 320 * 240, 0, 640 * 480])
    found = dedup_files(got, 0.95)
    rows = found.table.to_pylist()
    assert found.table.schema == FILE_DUPLICATES_SCHEMA
    assert [r["path"] for r in rows] == got.paths
    assert [r["duplicate_of"] for r in rows] == [None, "a.jpg", None, None]
    assert rows[1]["similarity"] == pytest.approx(np.cos(np.radians(8.0)), abs=1e-4)
    assert rows[2]["status"] == "unreadable_image" and rows[2]["similarity"] is None
    assert (found.kept, found.near_duplicates, found.not_embedded) == (2, 1, 1)
    assert dedup_files(got, 0.995).near_duplicates == 0  # above their cosine: nothing is a copy


def test_group_files_cuts_faces_at_the_encoders_identity_threshold():
    # p1-p2: cosine 0.951 (above dlib's measured 0.926); p3 averages 0.81 with them; no_face.jpg has no vector
    paths = ["p1.jpg", "p2.jpg", "no_face.jpg", "p3.jpg"]
    status = ["ok", "ok", "no_face", "ok"]
    faces = embedded(paths, status, [0.0, 18.0, -26.0], [1, 1, 1, 1], faces=True)
    found = group_files(faces, "dlib")
    ids = found.table.column("group_id").to_pylist()
    assert found.table.schema == FILE_GROUPS_SCHEMA
    assert ids[0] == ids[1] != ids[3] and ids[2] is None and found.not_embedded == 1
    assert "0.926" in found.clustering.method
    one = group_files(faces, "dlib", threshold=0.75).table.column("group_id").to_pylist()  # a lower bar: one person
    assert one[0] == one[1] == one[3]
    # image embeddings get no identity threshold: the number of groups is given or inferred
    images = embedded(paths, status, [0.0, 18.0, -26.0], [1, 1, 1, 1])
    assert group_files(images, "dlib", num_groups=3).clustering.num_clusters == 3
