"""``mrbench embed`` / ``mrbench detect``: one parquet row per image, unreadable files as rows, clear failures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from mrbench.backends import get_encoder
from mrbench.cli import app


@pytest.fixture
def image_tree(tmp_path: Path, small_images: list[Image.Image]) -> Path:
    root = tmp_path / "imgs"
    (root / "sub" / "deeper").mkdir(parents=True)
    small_images[0].save(root / "a.jpg", quality=95)
    small_images[1].save(root / "sub" / "b.png")
    small_images[4].save(root / "sub" / "deeper" / "c.png")  # RGBA
    (root / "notes.txt").write_text("not an image, skipped when walking folders")
    (root / "sub" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    return root


def test_embed_folder_rows_and_errors(tmp_path: Path, image_tree: Path) -> None:
    out = tmp_path / "emb.parquet"
    missing = tmp_path / "nope.jpg"
    res = CliRunner().invoke(app, ["embed", "--encoder", "clip-tiny", str(image_tree), str(missing), "--out", str(out),
                                   "--encoder-args", "seed=0", "--batch-size", "2"])
    assert res.exit_code == 0, res.output
    assert "RANDOM WEIGHTS" in res.output
    table = pq.read_table(out)
    assert table.column_names == ["path", "encoder", "embedding", "status", "error_message"]
    rows = {Path(r["path"]).name: r for r in table.to_pylist()}
    assert set(rows) == {"a.jpg", "b.png", "c.png", "broken.jpg", "nope.jpg"}
    assert rows["broken.jpg"]["status"] == "unreadable_image" and rows["broken.jpg"]["embedding"] is None
    assert rows["nope.jpg"]["status"] == "not_found"
    ok = [r for r in rows.values() if r["status"] == "ok"]
    assert len(ok) == 3 and all(r["encoder"] == "clip-tiny" and r["error_message"] is None for r in ok)
    emb = np.array([r["embedding"] for r in ok], dtype=np.float32)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    # the same numbers as the library call on the decoded files
    direct = get_encoder("clip-tiny", seed=0).embed_images([Image.open(image_tree / "a.jpg")])
    np.testing.assert_allclose(np.array(rows["a.jpg"]["embedding"]), direct[0], atol=1e-6)
    meta = json.loads(table.schema.metadata[b"mrbench.backend"])
    assert meta["random_weights"] is True and meta["registry_name"] == "clip-tiny"


def test_embed_face_encoder_columns(tmp_path: Path, image_tree: Path) -> None:
    out = tmp_path / "faces.parquet"
    res = CliRunner().invoke(app, ["embed", "-e", "insightface-tiny", str(image_tree), "-o", str(out)])
    assert res.exit_code == 0, res.output
    table = pq.read_table(out)
    assert {"num_faces", "face_box", "face_score"} <= set(table.column_names)
    for r in table.to_pylist():
        if r["status"] == "ok":
            assert r["num_faces"] > 0 and len(r["face_box"]) == 4 and len(r["embedding"]) == 512
        else:
            assert r["num_faces"] is None and r["embedding"] is None
    none = tmp_path / "noface.parquet"
    res = CliRunner().invoke(app, ["embed", "-e", "insightface-tiny", str(image_tree / "a.jpg"), "-o", str(none),
                                   "-a", "det_thresh=0.999"])
    row = pq.read_table(none).to_pylist()[0]
    assert row["status"] == "ok" and row["num_faces"] == 0 and row["embedding"] is None and row["face_box"] is None


def test_detect_folder(tmp_path: Path, image_tree: Path) -> None:
    out = tmp_path / "det.parquet"
    res = CliRunner().invoke(app, ["detect", "--detector", "rtdetr-tiny", str(image_tree), "--out", str(out)])
    assert res.exit_code == 0, res.output
    rows = pq.read_table(out).to_pylist()
    assert {"path", "boxes", "scores", "labels"} <= set(rows[0])
    for r in rows:
        if r["status"] == "ok":
            assert len(r["boxes"]) == len(r["scores"]) == len(r["labels"]) > 0
            assert all(len(b) == 4 for b in r["boxes"])
        else:
            assert r["boxes"] is None and Path(r["path"]).name == "broken.jpg"


def test_missing_weights_exit_before_writing(tmp_path: Path, image_tree: Path, offline_env: Path) -> None:
    out = tmp_path / "never.parquet"
    res = CliRunner().invoke(app, ["embed", "--encoder", "dino", str(image_tree), "--out", str(out)])
    assert res.exit_code == 3
    assert "facebook/dinov2-small" in res.output and "To supply them" in res.output
    assert not out.exists()


def test_bad_encoder_arg_and_unknown_name(tmp_path: Path, image_tree: Path) -> None:
    out = tmp_path / "x.parquet"
    res = CliRunner().invoke(app, ["embed", "-e", "clip-tiny", str(image_tree), "-o", str(out), "-a", "impl=jax"])
    assert res.exit_code == 2 and "impl must be" in res.output
    res = CliRunner().invoke(app, ["embed", "-e", "clipp", str(image_tree), "-o", str(out)])
    assert res.exit_code == 2 and "did you mean" in res.output
    res = CliRunner().invoke(app, ["detect", "-d", "rtdetr-tiny", str(image_tree), "-o", str(out), "-a", "oops"])
    assert res.exit_code == 2 and "key=value" in res.output
