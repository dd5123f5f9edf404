"""The curation run with the model steps on, over real photos: filters, dedup, refinement, audit, resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from mrbench.config import load_config
from mrbench.curation.config import CurateConfig
from mrbench.curation.dedup import DEFAULT_THRESHOLD
from mrbench.curation.pipeline import run_curation
from visual_fixtures import PLANTED, face_folder, folder_config, names_by_id, photo_folder

pytestmark = pytest.mark.slow


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def statuses(run: Path, num_shards: int = 2) -> dict[str, tuple[str, str]]:
    names = names_by_id(run, num_shards)
    return {names[r["id"]]: (r["status"], r["error_message"]) for r in pq.read_table(run / "groups" / "assignments.parquet").to_pylist()}


@pytest.fixture(scope="module")
def tagged(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tagged")
    photos = photo_folder(tmp / "photos")
    cfg_path = folder_config(tmp / "in", photos)
    summary = run_curation(load_config(CurateConfig, cfg_path), tmp / "run")
    return tmp, cfg_path, summary


def test_planted_problems_are_dropped_with_their_reasons(tagged):
    tmp, _, summary = tagged
    got = statuses(tmp / "run")
    assert got["fancy_boot/tiny.png"][0] == "low_resolution"
    assert got["dog7/intruder.jpg"][0] == "inconsistent"
    pair = [got["candle/00.jpg"][0], got["candle/copy.jpg"][0]]
    assert sorted(pair) == ["near_duplicate", "ok"]  # exactly one of the two stays
    assert sum(s == "ok" for s, _ in got.values()) == len(got) - 3  # nothing else was dropped
    assert summary["drops_per_reason"] == {"inconsistent": 1, "low_resolution": 1, "near_duplicate": 1}
    assert summary["groups_per_split"] == {"held_out": 1, "held_in": 1, "train": 2}
    assert summary["leakage_audit"]["pairs_total"] == 0 and summary["leakage_audit"]["near_dup_threshold"] == DEFAULT_THRESHOLD
    # the reasons are also in the filter and dedup files and in the release's rejects
    drops = pq.read_table(tmp / "run" / "filters" / "drops_00000.parquet").to_pylist() + \
        pq.read_table(tmp / "run" / "filters" / "drops_00001.parquet").to_pylist()
    assert [d["status"] for d in drops] == ["low_resolution"]
    dup = pq.read_table(tmp / "run" / "dedup" / "duplicates.parquet").to_pylist()
    assert len(dup) == 1 and dup[0]["similarity"] >= DEFAULT_THRESHOLD
    rejects = [r for f in sorted((tmp / "run" / "rejects").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    assert sorted(r["status"] for r in rejects) == ["inconsistent", "low_resolution", "near_duplicate"]
    assert set(PLANTED.values()) == {"near_duplicate", "inconsistent", "low_resolution"}


def test_released_images_hold_no_near_duplicates(tagged):
    tmp, _, _ = tagged
    run = tmp / "run"
    released = {r["id"]: r["group"] for f in sorted((run / "release" / "data").glob("*.parquet"))
                for r in pq.read_table(f, columns=["id", "group"]).to_pylist()}
    meta = pq.read_table(run / "index" / "meta.parquet").to_pylist()
    vectors = np.load(run / "index" / "vectors.npy")
    rows = [m["row"] for m in meta if m["id"] in released]
    groups = [released[m["id"]] for m in meta if m["id"] in released]
    sims = vectors[rows] @ vectors[rows].T
    np.fill_diagonal(sims, 0)
    assert len(rows) == len(released) == 21
    assert sims.max() < DEFAULT_THRESHOLD
    same = np.equal.outer(groups, groups)
    assert sims[same].max() < 0.92  # group.dedup_threshold


def test_rerun_is_free_and_another_folder_gives_the_same_release(tagged, tmp_path):
    tmp, cfg_path, summary = tagged
    run = tmp / "run"
    marks = {p: p.stat().st_mtime_ns for p in sorted((run / "embed").glob("*.parquet"))}
    again = run_curation(load_config(CurateConfig, cfg_path), run)
    assert again == summary
    assert {p: p.stat().st_mtime_ns for p in marks} == marks  # cached per shard: nothing re-embedded
    run_curation(load_config(CurateConfig, cfg_path), tmp_path / "elsewhere")
    assert tree_bytes(tmp_path / "elsewhere" / "release") == tree_bytes(run / "release")


def test_person_group_keeps_one_identity(tmp_path):
    photos = face_folder(tmp_path / "people")
    (tmp_path / "tags.yaml").write_text(yaml.safe_dump([{"name": "Barack Obama", "category": "celebrity"}]))
    cfg_path = folder_config(tmp_path / "in", photos, embed={"face_encoder": "dlib"},
                             crawl={"tag_list": str(tmp_path / "tags.yaml")})
    summary = run_curation(load_config(CurateConfig, cfg_path), tmp_path / "run")
    got = {n.split("/")[1]: s for n, (s, _) in statuses(tmp_path / "run").items()}
    assert got["biden.jpg"] == "other_identity"
    # obama2.jpg and 32bit.png are one photo (RGB and RGBA): dedup keeps one. The two partial faces are crops of
    # obama.jpg, i.e. near-duplicates of it: one globally (>= 0.94), one within the group (>= 0.92).
    assert sorted([got["obama2.jpg"], got["32bit.png"]]) == ["near_duplicate", "ok"]
    assert {got["obama_partial_face.jpg"], got["obama_partial_face2.jpg"]} <= {"near_duplicate", "duplicate_in_group"}
    assert got["obama.jpg"] == got["obama3.jpg"] == "ok"
    assert sum(v != "ok" for v in got.values()) == 4 and sum(summary["groups_per_split"].values()) == 1


def test_untagged_folder_is_grouped_visually_by_curate(tmp_path):
    from sklearn.metrics import adjusted_rand_score

    from visual_fixtures import untagged_folder

    flat, truth = untagged_folder(tmp_path / "flat")
    cfg_path = folder_config(tmp_path / "in", flat, crawl={"require_tag": False}, group={"min_group_size": 2},
                             split={"held_out_groups": 1, "held_in_groups": 1})
    summary = run_curation(load_config(CurateConfig, cfg_path), tmp_path / "run")
    names = names_by_id(tmp_path / "run", 2)
    released = [r for f in sorted((tmp_path / "run" / "release" / "data").glob("*.parquet"))
                for r in pq.read_table(f, columns=["id", "group"]).to_pylist()]
    assert len(released) >= 14  # 16 photos; only near-duplicates or visual outliers may go
    labels = [truth[names[r["id"]].split("/")[-1]] for r in released]
    assert adjusted_rand_score(labels, [r["group"] for r in released]) >= 0.9
    assert sum(summary["groups_per_split"].values()) == 3
