"""Leakage audit on a hand-made index: near-duplicates and identities across splits, removal, report."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq

from mrbench.curation.config import CurateConfig
from mrbench.curation.audit import leakage_audit, shown_leak_pairs
from mrbench.curation.cluster import face_threshold
from mrbench.curation.group import Group
from visual_fixtures import write_index


def unit(v) -> np.ndarray:
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v)


def test_audit_finds_cross_split_leaks_and_removes_training_side(tmp_path):
    rng = np.random.default_rng(1)
    dim = 24
    base = [unit(rng.standard_normal(dim)) for _ in range(9)]
    vecs = list(base)
    vecs[4] = unit(base[0] + 0.05 * rng.standard_normal(dim))  # t1 (train) is a near-copy of o0 (held-out)
    vecs[7] = unit(base[6] + 0.05 * rng.standard_normal(dim))  # i1 (held-in) is a near-copy of o2 (held-out)
    person = unit(rng.standard_normal(8))
    faces = [unit(person + 0.05 * rng.standard_normal(8)), unit(person + 0.05 * rng.standard_normal(8)),
             unit(rng.standard_normal(8))]
    ids = ["o0", "o1", "i0", "t0", "t1", "t2", "o2", "i1", "t3"]
    face_of = {"i0": 0, "t2": 1, "t3": 2}  # i0 (held-in) and t2 (train) show the same person
    rows = [{"id": r, "tag": r, "category": "subject", "width": 10, "height": 10, "row": k,
             "face_row": face_of.get(r, -1)} for k, r in enumerate(ids)]
    write_index(tmp_path, rows, np.stack(vecs), np.stack(faces))
    groups = [Group("out", "out", "subject", ["o0", "o1", "o2"]), Group("in", "in", "subject", ["i0", "i1"]),
              Group("tr_a", "tr_a", "subject", ["t0", "t1"]), Group("tr_b", "tr_b", "subject", ["t2", "t3"])]
    splits = {"out": "held_out", "in": "held_in", "tr_a": "train", "tr_b": "train"}
    cfg = CurateConfig()
    cfg.embed.encoder, cfg.embed.face_encoder = "mobilenet_v2", "dlib"
    cfg.audit.near_dup_threshold = 0.9
    result = leakage_audit(groups, splits, cfg, tmp_path)

    leaks = pq.read_table(tmp_path / "audit" / "leaks.parquet").to_pylist()
    got = {(r["kind"], r["id_a"], r["split_a"], r["id_b"], r["split_b"], r["action"]) for r in leaks}
    assert got == {
        ("near_duplicate", "t1", "train", "o0", "held_out", "removed t1"),
        ("near_duplicate", "i1", "held_in", "o2", "held_out", "reported"),  # test vs test: reported only
        ("identity", "t2", "train", "i0", "held_in", "removed t2"),
    }
    assert {k: v[0] for k, v in result.drops.items()} == {
        "t1": "leak_near_duplicate", "t2": "leak_identity",
        "t0": "group_too_small", "t3": "group_too_small"}  # both train groups fell below 2 images
    assert [g.group_id for g in result.groups] == ["out", "in"]
    report = json.loads((tmp_path / "audit" / "leakage.json").read_text())
    assert report["pairs"] == {"identity/train-held_in": 1, "near_duplicate/held_in-held_out": 1,
                               "near_duplicate/train-held_out": 1}
    assert report["removed_train_images"] == 2 and report["dropped_groups"] == 2 == result.stats.counts["audit/dropped/group_too_small"]
    assert report["removed_train_images_by_kind"] == {"identity": 1, "near_duplicate": 1}
    assert report["near_dup_threshold"] == 0.9 and report["identity_threshold"] == face_threshold("dlib")

    cfg.audit.remove_train_leaks = False
    kept = leakage_audit(groups, splits, cfg, tmp_path)
    assert kept.drops == {} and len(kept.groups) == 4 and kept.report["pairs_total"] == 3


def test_audit_skipped_without_index(tmp_path):
    groups = [Group("g", "g", "subject", ["a", "b"])]
    assert leakage_audit(groups, {"g": "train"}, CurateConfig(), tmp_path).groups == groups
    assert not (tmp_path / "audit").exists()


def test_shown_leak_pairs_are_the_most_similar_and_those_nearest_the_threshold(tmp_path):
    import pyarrow as pa

    from mrbench.curation.audit import LEAK_SCHEMA
    from mrbench.layout import RunLayout

    sims = [0.99, 0.98, 0.97, 0.96, 0.95, 0.94, 0.93, 0.92, 0.91, 0.90]
    rows = {n: [] for n in LEAK_SCHEMA.names}
    for k, s in enumerate(sims):
        for n, v in zip(LEAK_SCHEMA.names, ("identity", f"a{k}", "g", "train", f"b{k}", "h", "held_out", s, "reported")):
            rows[n].append(v)
    path = RunLayout(tmp_path).leaks
    path.parent.mkdir(parents=True)
    pq.write_table(pa.table(rows, schema=LEAK_SCHEMA), path)
    shown = [round(r["similarity"], 2) for r in shown_leak_pairs(tmp_path, per_kind=4)]
    assert shown == [0.99, 0.98, 0.91, 0.90]
    assert len(shown_leak_pairs(tmp_path, per_kind=20)) == 10
