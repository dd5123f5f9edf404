"""Group refinement on a hand-made index: identities, outliers, within-group duplicates, visual groups."""

from __future__ import annotations

import numpy as np

from mrbench.curation.config import CurateConfig
from mrbench.curation.refine import GroupRefiner
from mrbench.stats import Stats
from visual_fixtures import write_index


def unit(v) -> np.ndarray:
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v)


def near(v, eps: float, rng: np.random.Generator) -> np.ndarray:
    return unit(unit(v) + eps * rng.standard_normal(len(v)))


def test_refiner_identity_consistency_duplicates_and_visual_groups(tmp_path):
    rng = np.random.default_rng(0)
    dim = 16
    subject, other, ident_a, ident_b = (unit(rng.standard_normal(dim)) for _ in range(4))
    rows, vecs, faces = [], [], []

    def add(rid, tag, category, vec, face=None, res=(100, 100)):
        rows.append({"id": rid, "tag": tag, "category": category, "width": res[0], "height": res[1],
                     "row": len(vecs), "face_row": len(faces) if face is not None else -1})
        vecs.append(vec)
        if face is not None:
            faces.append(face)

    for k in range(4):  # a celebrity: four photos of one person, two of somebody else, one without a face
        add(f"p{k}", "Someone", "celebrity", near(subject, 0.5, rng), near(ident_a, 0.1, rng))
    for k in range(2):
        add(f"q{k}", "Someone", "celebrity", near(subject, 0.5, rng), near(ident_b, 0.1, rng))
    add("p_noface", "Someone", "celebrity", near(subject, 0.5, rng))
    for k in range(5):  # a subject: five consistent photos, one foreign, one near-copy of s0 at lower resolution
        add(f"s{k}", "teapot", "subject", near(subject, 0.1, rng))
    add("s_foreign", "teapot", "subject", near(other, 0.3, rng))
    add("s_copy", "teapot", "subject", near(vecs[rows.index(next(r for r in rows if r["id"] == "s0"))], 0.02, rng), res=(50, 50))
    for k in range(3):  # untagged: two visual clusters
        add(f"u{k}", "untagged", "", near(subject, 0.1, rng))
        add(f"v{k}", "untagged", "", near(other, 0.1, rng))
    write_index(tmp_path, rows, np.stack(vecs), np.stack(faces))

    cfg = CurateConfig()
    cfg.embed.encoder, cfg.embed.face_encoder = "mobilenet_v2", "dlib"
    cfg.group.consistency_min, cfg.group.dedup_threshold, cfg.group.visual_groups = 0.7, 0.97, 2
    cfg.group.identity_threshold = 0.85  # synthetic faces (noise 0.1 in 16 dims), not on dlib's calibrated scale
    members = {"someone": [r["id"] for r in rows if r["tag"] == "Someone"],
               "teapot": [r["id"] for r in rows if r["tag"] == "teapot"],
               "untagged": [r["id"] for r in rows if r["tag"] == "untagged"]}
    meta = {"someone": ("Someone", "celebrity"), "teapot": ("teapot", "subject"), "untagged": ("untagged", "")}
    drops: dict[str, tuple[str, str]] = {}
    stats = Stats()
    GroupRefiner(cfg, tmp_path)(members, meta, drops, stats)

    assert {k: v[0] for k, v in drops.items()} == {
        "q0": "other_identity", "q1": "other_identity", "s_foreign": "inconsistent", "s_copy": "duplicate_in_group"}
    assert "s0" in drops["s_copy"][1]  # points at the kept, higher-resolution photo
    assert members["someone"] == ["p0", "p1", "p2", "p3", "p_noface"]  # no face: left to the face filter
    assert members["teapot"] == ["s0", "s1", "s2", "s3", "s4"]
    assert "untagged" not in members and "untagged" not in meta
    assert sorted(map(sorted, (members["visual_0000"], members["visual_0001"]))) == [["u0", "u1", "u2"], ["v0", "v1", "v2"]]
    assert stats.counts["refine/other_identity"] == 2 and stats.counts["refine/visual_groups"] == 2


def test_refiner_is_a_no_op_without_an_index(tmp_path):
    members = {"g": ["a", "b"]}
    GroupRefiner(CurateConfig(), tmp_path)(members, {"g": ("g", "subject")}, {}, Stats())
    assert members == {"g": ["a", "b"]}
