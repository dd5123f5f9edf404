"""Acceptance (real data): DreamBench subjects grouped visually; face photos grouped by identity (CLI)."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from sklearn.metrics import adjusted_rand_score
from typer.testing import CliRunner

from shared_paths import shared_data
from mrbench.cli import app
from mrbench.curation.cluster import cluster_embeddings
from realdata import dreambench
from visual_fixtures import untagged_folder

pytestmark = pytest.mark.slow


def test_dreambench_subjects_by_visual_grouping():
    _, subjects, emb = dreambench()
    given = cluster_embeddings(emb, num_clusters=30)
    inferred = cluster_embeddings(emb)
    ari_given = adjusted_rand_score(subjects, given.labels)
    ari_inferred = adjusted_rand_score(subjects, inferred.labels)
    print(f"DreamBench, mobilenet_v2: ARI {ari_given:.3f} with K=30 given; ARI {ari_inferred:.3f} with "
          f"K={inferred.num_clusters} inferred ({inferred.method})")
    assert ari_given >= 0.75
    assert 20 <= inferred.num_clusters <= 40 and ari_inferred >= 0.6


def test_group_command_puts_one_identity_in_one_group(tmp_path):
    faces = shared_data("faces")
    out = tmp_path / "groups.parquet"
    result = CliRunner().invoke(app, ["group", "--encoder", "dlib", str(faces), "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = {r["path"].split("/")[-1]: r for r in pq.read_table(out).to_pylist()}
    assert set(rows) == {"32bit.png", "biden.jpg", "obama.jpg", "obama2.jpg", "obama3.jpg", "obama_partial_face.jpg",
                         "obama_partial_face2.jpg"}
    assert all(r["status"] == "ok" for r in rows.values())
    obama = {rows[n]["group_id"] for n in rows if n != "biden.jpg"}
    assert len(obama) == 1 and rows["biden.jpg"]["group_id"] not in obama


def test_group_command_groups_an_untagged_folder_visually(tmp_path):
    flat, truth = untagged_folder(tmp_path / "flat")
    out = tmp_path / "groups.parquet"
    result = CliRunner().invoke(app, ["group", "-e", "mobilenet_v2", str(flat), "-o", str(out), "--num-groups", "3"])
    assert result.exit_code == 0, result.output
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == len(truth) == 16
    assert adjusted_rand_score([truth[r["path"].split("/")[-1]] for r in rows], [r["group_id"] for r in rows]) == 1.0


def test_dedup_command_marks_the_copy(tmp_path):
    flat, _ = untagged_folder(tmp_path / "flat", subjects=("candle", "dog7"))
    from PIL import Image

    Image.open(flat / "candle_01.jpg").resize((256, 256)).save(flat / "zz_small_copy.jpg")
    (flat / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "dups.parquet"
    result = CliRunner().invoke(app, ["dedup", "--encoder", "mobilenet_v2", str(flat), "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = {r["path"].split("/")[-1]: r for r in pq.read_table(out).to_pylist()}
    assert rows["zz_small_copy.jpg"]["duplicate_of"].endswith("candle_01.jpg")  # the larger image is kept
    assert rows["zz_small_copy.jpg"]["similarity"] >= 0.94
    assert rows["broken.jpg"]["status"] == "unreadable_image" and rows["broken.jpg"]["duplicate_of"] is None
    assert [n for n, r in rows.items() if r["duplicate_of"] is not None] == ["zz_small_copy.jpg"]
    assert "1 near-duplicates" in result.output
