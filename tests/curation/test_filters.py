"""Filters answer keep or drop-with-reason: resolution/aspect, face policy by category, object presence."""

from __future__ import annotations

import pytest

from mrbench.curation.config import CurateConfig, FilterConfig
from mrbench.curation.filters import FaceFilter, FaceInfo, ObjectFilter, ResolutionFilter, TagClasses, chain, object_class
from mrbench.records import ImageRecord


def rec(rid: str, w: int = 400, h: int = 300, category: str = "celebrity", tags: list[str] | None = None) -> ImageRecord:
    return ImageRecord(id=rid, url=f"http://x/{rid}", width=w, height=h, category=category, tags=tags or ["Someone"])


@pytest.mark.parametrize(
    "names, expected",
    [
        (["coffee cup"], "cup"), (["wall clock"], "clock"), (["Chelsea the Cat"], "cat"), (["red robot toy"], None),
        (["teddy bear"], "teddy bear"), (["hot dogs"], "hot dog"), (["Eileen Collins"], None),
        (["my pet", "golden puppy"], "dog"), (["pixel art"], None), (["Sofa"], "couch"),
    ],
)
def test_tag_names_a_coco_class_by_its_last_noun(names, expected):
    assert object_class(names) == expected


def test_object_class_overrides_win():
    assert object_class(["backpack dog"]) == "dog"  # the naive reading...
    assert object_class(["backpack dog"], {"backpack dog": "backpack"}) == "backpack"  # ...fixed by config
    assert object_class(["coffee cup"], {"coffee cup": ""}) is None


def test_resolution_filter_reasons():
    f = ResolutionFilter(min_side=64, max_aspect=4.0)
    out = {r.id: (r.status, r.error_message) for r in f([rec("a"), rec("b", 63, 500), rec("c", 1000, 200), rec("d", 800, 200)])}
    assert out["a"] == ("ok", "")
    assert out["b"][0] == "low_resolution" and "63x500" in out["b"][1]
    assert out["c"][0] == "extreme_aspect" and out["d"][0] == "ok"
    assert f.stats.counts["resolution/dropped/low_resolution"] == 1 and f.stats.counts["resolution/kept"] == 2
    assert ResolutionFilter(0, 0).check(rec("e", 1, 1000)) is None  # 0 turns both rules off


def test_face_policy_for_person_categories_only():
    faces = {
        "one": FaceInfo(1, [100, 50, 220, 170], 0.99, [[100, 50, 220, 170, 0.99]]),
        "none": FaceInfo(0, None, None, []),
        "tiny": FaceInfo(1, [10, 10, 20, 20], 0.99, [[10, 10, 20, 20, 0.99]]),
        "weak": FaceInfo(1, [100, 50, 220, 170], 0.2, [[100, 50, 220, 170, 0.2]]),
        "crowd": FaceInfo(2, [100, 50, 220, 170], 0.99, [[100, 50, 220, 170, 0.99], [250, 60, 350, 160, 0.9]]),
        "bystander": FaceInfo(2, [100, 50, 220, 170], 0.99, [[100, 50, 220, 170, 0.99], [300, 60, 320, 80, 0.9]]),
    }
    f = FaceFilter(FilterConfig(face_min_area=0.01, face_min_score=0.5, face_max_other=0.5), ["celebrity", "character"], faces)
    records = [rec(k) for k in faces] + [rec("none", category="style"), rec("unchecked")]
    got = [(r.id, r.category, r.status) for r in f(records)]
    assert got == [
        ("one", "celebrity", "ok"), ("none", "celebrity", "no_face"), ("tiny", "celebrity", "face_too_small"),
        ("weak", "celebrity", "face_low_score"), ("crowd", "celebrity", "multiple_faces"),
        ("bystander", "celebrity", "ok"),  # a far smaller second face does not compete with the dominant one
        ("none", "style", "ok"),  # styles have no face requirement
        ("unchecked", "celebrity", "ok"),  # the face encoder did not run on it: counted, not dropped
    ]
    assert f.stats.counts["face/unchecked"] == 1


def test_object_filter_and_chaining_keeps_the_first_reason(tmp_path):
    cfg = CurateConfig()
    classes = TagClasses(cfg)
    dets = {"cup_ok": (["cup", "person"], [0.8, 0.9]), "cup_weak": (["cup"], [0.3]), "no_cup": (["dog"], [0.9])}
    f = ObjectFilter(classes, dets, min_score=0.5)
    records = [rec(k, category="subject", tags=["coffee cup"]) for k in dets] + [
        rec("art", category="style", tags=["pixel art"]), rec("small", 30, 30, category="subject", tags=["coffee cup"])]
    out = list(chain([ResolutionFilter(64, 0), f], records))
    assert [(r.id, r.status) for r in out] == [
        ("cup_ok", "ok"), ("cup_weak", "object_missing"), ("no_cup", "object_missing"), ("art", "ok"),
        ("small", "low_resolution"),  # dropped by the first filter; the object filter never sees it as ok
    ]
    assert "best 0.300" in out[1].error_message


def test_filter_task_drops_images_the_embed_step_could_not_read(tmp_path):
    import pyarrow as pa

    from mrbench.curation.embed import FEATURE_SCHEMA
    from mrbench.curation.filters import FILTERS_STEP, read_drops
    from mrbench.shards import ShardSet, records_to_table, write_parquet_atomic

    records = [rec("good"), rec("broken"), rec("small", 30, 30)]
    write_parquet_atomic(records_to_table(records), ShardSet(tmp_path / "download", "shard").output(0))
    features = [
        {"id": "good", "width": 400, "height": 300, "status": "ok", "error_message": ""},
        {"id": "broken", "width": 400, "height": 300, "status": "embed_decode_error", "error_message": "OSError: truncated"},
        {"id": "small", "width": 30, "height": 30, "status": "ok", "error_message": ""},
    ]
    write_parquet_atomic(pa.Table.from_pylist(features, schema=FEATURE_SCHEMA), ShardSet(tmp_path / "embed", "shard").output(0))
    cfg = CurateConfig()
    cfg.filters.min_side = 64
    task = FILTERS_STEP.task(cfg, str(tmp_path))
    task(0)
    assert read_drops(tmp_path / "filters", "drops", 1) == {
        "broken": ("embed_decode_error", "OSError: truncated"),  # no features: no later rule could judge it
        "small": ("low_resolution", "30x30: shorter side < 64"),
    }
    assert task.is_done(0)
