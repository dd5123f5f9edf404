"""EasyRef's training JSON from a release: one record shape per file, image paths relative to the image root that
``mrbench release extract-images`` fills."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mrbench.curation.release_format import image_bytes, release_data_files
from mrbench.layout import RunLayout
from mrbench.shards import atomic_write_text

EASYREF_FILES = {
    "single": "stage1-2_single.json",  # {"image_file": [t], "text": [caption], "target": t}
    "face": "stage1-2_face.json",      # {"face": [[x1, y1, x2, y2, score]], "text": [caption], "target": t}
    "group": "stage3_group.json",      # {"image_file": [refs...], "text": [target caption], "target": t}
}


def easyref_image_path(image_id: str, fmt: str | None) -> str:
    """An image's path in the EasyRef JSON, relative to the image root: ``images/<id>.<ext>``, where
    ``mrbench release extract-images RELEASE --out ROOT`` writes it (the authors' ``image_root_path`` is ROOT)."""
    return f"images/{image_id}.{fmt or 'jpg'}"


def easyref_faces(run_dir: Path) -> dict[str, list[float]]:
    """Image id -> its largest detected face ``[x1, y1, x2, y2, score]``, from the embed step's features: pixels of
    the oriented image (EXIF applied, as every model step decodes; :func:`faces_in_stored_frame` turns them into the
    stored bytes' frame); empty when no face encoder ran."""
    faces: dict[str, list[float]] = {}
    cols = ["id", "num_faces", "face_box", "face_score"]
    for f in RunLayout(run_dir).embed.existing():
        if not set(cols) <= set(pq.ParquetFile(f).schema_arrow.names):
            continue
        for r in pq.read_table(f, columns=cols).to_pylist():
            if r["num_faces"] and r["face_box"] is not None and len(r["face_box"]) == 4:
                faces[r["id"]] = [round(float(x), 2) for x in r["face_box"]] + [round(float(r["face_score"] or 0.0), 4)]
    return faces


def faces_in_stored_frame(release_dir: Path, faces: dict[str, list[float]]) -> dict[str, list[float]]:
    """``faces`` (boxes on the oriented images) in the frame of the release's stored, unrotated bytes: the authors'
    loader opens an image with ``PIL.Image.open`` and crops without applying EXIF orientation."""
    from mrbench.images import box_to_stored_frame, orientation_of

    if not faces:
        return {}
    out = dict(faces)
    wanted = pa.array(sorted(faces), pa.string())
    for f in release_data_files(release_dir):
        t = pq.read_table(f, columns=["id", "image"], filters=[("id", "in", wanted)])
        for rid, data in zip(t.column("id").to_pylist(), image_bytes(t.column("image"))):
            orientation, size = orientation_of(data)
            if orientation not in (None, 1):
                box = box_to_stored_frame(faces[rid][:4], orientation, size)
                out[rid] = [round(v, 2) for v in box] + faces[rid][4:]
    return out


def write_easyref_json(release_dir: Path, faces: dict[str, list[float]] | None = None) -> dict[str, int]:
    """EasyRef's training data, one record shape per file, for the stage that reads it [C: finetune_sdxl.py]:

    - ``stage1-2_single.json``: single-reference records (the image is its own reference) for the alignment
      pre-training and single-reference fine-tuning stages, whose loader truncates to 256 tokens and stacks
      fixed-size tensors, so a group record would break it. Every image of a train group, and the references of
      held-in groups (the paper trains on held-in references, never on their targets).
    - ``stage1-2_face.json``: face-crop records in the authors' flat shape ``{"face": [[x1, y1, x2, y2, score]],
      "text": [caption], "target": t}`` (their loader reads ``item["face"][0]``) for the same images, where the
      embed step detected a face (``faces``; the largest face, in pixels of the stored bytes as ``PIL.Image.open``
      decodes them, without EXIF rotation: the frame their loader crops in).
    - ``stage3_group.json``: group records (references -> target) of the train groups, for the multi-reference
      stage (batch 1 per GPU).
    - ``held_in.json`` / ``held_out.json``: one group record per test group (evaluation, not training).

    Paths are :func:`easyref_image_path` values relative to the image root that ``mrbench release extract-images
    RELEASE --out ROOT`` fills (pass ROOT as the authors' ``image_root_path``). Returns records per file.
    """
    faces = faces_in_stored_frame(release_dir, faces or {})
    rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for f in release_data_files(release_dir):
        cols = ["id", "caption", "group", "split", "role", "format"]
        for r in pq.read_table(f, columns=cols).to_pylist():
            rows[r["group"]].append(r)
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in [*EASYREF_FILES.values(), "held_in.json", "held_out.json"]}

    def path(r: dict[str, Any]) -> str:
        return easyref_image_path(r["id"], r["format"])

    def single(r: dict[str, Any]) -> None:
        out[EASYREF_FILES["single"]].append({"image_file": [path(r)], "text": [r["caption"]], "target": path(r)})
        if r["id"] in faces:
            out[EASYREF_FILES["face"]].append({"face": [faces[r["id"]]], "text": [r["caption"]], "target": path(r)})

    for gid in sorted(rows):
        members = sorted(rows[gid], key=lambda r: (r["role"] != "target", r["id"]))
        target, refs = members[0], members[1:]
        split = target["split"]
        group_rec = {"image_file": [path(r) for r in refs], "text": [target["caption"]], "target": path(target)}
        if split == "train":
            if refs:
                out[EASYREF_FILES["group"]].append(group_rec)
            for r in members:
                single(r)
        else:
            out[f"{split}.json"].append(group_rec)
            if split == "held_in":
                for r in refs:
                    single(r)
    (release_dir / "easyref").mkdir(parents=True, exist_ok=True)
    for name, recs in out.items():
        atomic_write_text(release_dir / "easyref" / name, json.dumps(recs, indent=1, ensure_ascii=False))
    return {name: len(v) for name, v in out.items()}
