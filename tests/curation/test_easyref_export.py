"""EasyRef export: one record shape per file and stage, the authors' flat face shape, paths under the image root."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image
from typer.testing import CliRunner

from mrbench.cli import app
from mrbench.curation.config import CurateConfig
from mrbench.curation.embed import FEATURE_SCHEMA
from mrbench.curation.easyref_export import EASYREF_FILES, easyref_faces, write_easyref_json
from mrbench.curation.release import write_manifest
from mrbench.curation.release_format import release_file, release_table
from mrbench.shards import write_parquet_atomic

# group -> (split, number of images); image 0 of each group is its target.
GROUPS = {"t0": ("train", 3), "t1": ("train", 2), "t2": ("train", 1), "hi": ("held_in", 3), "ho": ("held_out", 3)}


def ID(name: str) -> str:
    """A release id (16 hex digits) for a readable image name; hex keeps the names' order."""
    return name.encode().hex().ljust(16, "0")


def NAME(rid: str) -> str:
    return bytes.fromhex(rid[:8]).decode()


def _png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _release(root: Path) -> Path:
    rel = root / "release"
    for split in ("train", "held_in", "held_out"):
        rows: list[dict] = []
        for gid, (gsplit, n) in GROUPS.items():
            if gsplit != split:
                continue
            for k in range(n):
                data = _png(10 * list(GROUPS).index(gid) + k)
                row = {"id": ID(f"{gid}_{k}"), "url": f"http://127.0.0.1/{gid}/{k}.png", "caption": f"caption {gid} {k}",
                       "tags": ["Some Name"], "category": "celebrity", "group": gid, "split": split,
                       "role": "target" if k == 0 else "reference", "image": data, "format": "png", "width": 32,
                       "height": 24, "sha256": hashlib.sha256(data).hexdigest(),
                       "encoding": "original"}
                rows.append(row)
        write_parquet_atomic(release_table(rows), rel / release_file(split, 0, 1))
    return rel


def _embed_features(run: Path, faces: dict[str, list[float]]) -> None:
    """An embed shard in the pipeline's schema: faces on some images, none or no face encoder on the others."""
    ids = [ID(f"{g}_{k}") for g, (_, n) in GROUPS.items() for k in range(n)]
    rows = []
    for i in ids:
        face = faces.get(i)
        rows.append({"id": i, "width": 32, "height": 24, "embedding": None, "num_faces": 1 if face else (0 if NAME(i).startswith("t") else None),
                     "face_box": face[:4] if face else None, "face_score": face[4] if face else None,
                     "face_boxes": [face] if face else None, "face_embedding": None, "det_labels": None,
                     "det_scores": None, "status": "ok", "error_message": ""})
    cols = {c: [r[c] for r in rows] for c in FEATURE_SCHEMA.names}
    write_parquet_atomic(pa.table(cols, schema=FEATURE_SCHEMA), run / "embed" / "shard_00000.parquet")


def test_easyref_export_per_stage_and_image_root(tmp_path: Path) -> None:
    rel = _release(tmp_path)
    run = tmp_path / "run"
    detected = {"t0_1": [2.0, 3.0, 20.0, 18.0, 0.91], "hi_1": [1.0, 1.0, 9.0, 9.0, 0.5],
                "hi_0": [0.0, 0.0, 5.0, 5.0, 0.7], "ho_2": [4.0, 4.0, 8.0, 8.0, 0.8]}
    detected = {ID(k): v for k, v in detected.items()}
    _embed_features(run, detected)
    faces = easyref_faces(run)
    assert faces == detected
    counts = write_easyref_json(rel, faces)
    er = rel / "easyref"
    data = {p.name: json.loads(p.read_text()) for p in er.glob("*.json")}
    assert set(data) == {*EASYREF_FILES.values(), "held_in.json", "held_out.json"}
    assert counts == {name: len(v) for name, v in data.items()}

    # Each file holds one record shape.
    single, face, group = (data[EASYREF_FILES[k]] for k in ("single", "face", "group"))
    assert all(set(r) == {"image_file", "text", "target"} and r["image_file"] == [r["target"]] for r in single)
    assert all(set(r) == {"face", "text", "target"} for r in face)
    for r in group + data["held_in.json"] + data["held_out.json"]:
        assert set(r) == {"image_file", "text", "target"} and r["image_file"] and r["target"] not in r["image_file"]
    # Stages 1-2: every train image and the held-in references; never a held-in target or a held-out image.
    targets = {r["target"] for r in single}
    assert targets == {f"images/{ID(i)}.png" for i in ("t0_0", "t0_1", "t0_2", "t1_0", "t1_1", "t2_0", "hi_1", "hi_2")}
    assert all(r["text"] == [f"caption {NAME(Path(r['target']).stem).replace('_', ' ')}"] for r in single)
    # Face records: the authors' flat shape [[x1, y1, x2, y2, score]], only where a face was detected, same pool.
    assert face == [{"face": [detected[ID("hi_1")]], "text": ["caption hi 1"], "target": f"images/{ID('hi_1')}.png"},
                    {"face": [detected[ID("t0_1")]], "text": ["caption t0 1"], "target": f"images/{ID('t0_1')}.png"}]
    # Stage 3: the train groups with references (a one-image group has none), target caption as text.
    assert group == [{"image_file": [f"images/{ID('t0_1')}.png", f"images/{ID('t0_2')}.png"], "text": ["caption t0 0"], "target": f"images/{ID('t0_0')}.png"},
                     {"image_file": [f"images/{ID('t1_1')}.png"], "text": ["caption t1 0"], "target": f"images/{ID('t1_0')}.png"}]
    assert [r["target"] for r in data["held_out.json"]] == [f"images/{ID('ho_0')}.png"]

    # Every referenced image exists under the image root extract-images writes (an explicit --out: the root).
    write_manifest(rel, CurateConfig())
    root = tmp_path / "image_root"
    res = CliRunner().invoke(app, ["release", "extract-images", str(rel), "--out", str(root)])
    assert res.exit_code == 0, res.output
    for name, recs in data.items():
        for r in recs:
            for p in [r["target"], *r.get("image_file", [])]:
                assert (root / p).is_file(), (name, p)
    with Image.open(root / face[0]["target"]) as im:  # the face box lies inside the image it refers to
        x1, y1, x2, y2, _ = face[0]["face"][0]
        assert 0 <= x1 < x2 <= im.width and 0 <= y1 < y2 <= im.height


def test_easyref_faces_without_a_face_encoder(tmp_path: Path) -> None:
    assert easyref_faces(tmp_path / "no_run") == {}


def test_face_boxes_are_in_the_stored_bytes_frame(tmp_path: Path) -> None:
    """The embed step finds faces on the EXIF-oriented image; the export gives the box in the stored, unrotated
    bytes, where the authors' loader (``Image.open`` without ``exif_transpose``) crops: the crop is the face."""
    from mrbench.images import load_image

    raw = np.zeros((24, 32, 3), np.uint8)
    raw[3:9, 4:14] = 255  # the "face" in the stored pixels: x 4..14, y 3..9
    im = Image.fromarray(raw)
    exif = im.getexif()
    exif[0x0112] = 6  # shown rotated by 90 degrees
    buf = io.BytesIO()
    im.save(buf, format="JPEG", exif=exif.tobytes(), quality=100)
    data = buf.getvalue()
    ys, xs = np.nonzero(np.asarray(load_image(data).convert("L")) > 128)  # what the embed step's detector sees
    oriented_box = [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1), 0.9]
    assert oriented_box[:4] != [4.0, 3.0, 14.0, 9.0]
    rid = ID("t0_0")
    row = {"id": rid, "url": "http://127.0.0.1/x.jpg", "caption": "c", "tags": ["Some Name"], "category": "celebrity",
           "group": "t0", "split": "train", "role": "target", "image": data, "format": "jpg", "width": 24,
           "height": 32, "sha256": hashlib.sha256(data).hexdigest(), "encoding": "original"}
    rel = tmp_path / "release"
    write_parquet_atomic(release_table([row]), rel / release_file("train", 0, 1))
    write_easyref_json(rel, {rid: oriented_box})
    (rec,) = json.loads((rel / "easyref" / EASYREF_FILES["face"]).read_text())
    assert rec["face"] == [[4.0, 3.0, 14.0, 9.0, 0.9]]
