"""Metrics (values against manual computations) and aggregation (per-group means, bootstrap CIs over groups)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from evalhelpers import require_encoder, shared, subject_image
from PIL import Image

from mrbench.config import ConfigError
from mrbench.evaluation.benchmarks import load_image_file
from mrbench.evaluation.generator import ImageRef, Sample
from mrbench.evaluation.metrics import MetricInput, MetricSpec, build_metrics, metric_fields, parse_metric_specs
from mrbench.evaluation.results import bootstrap_ci, estimate, read_jsonl, summarize


def _ref(image: Image.Image, rid: str, group: str = "g") -> ImageRef:
    return ImageRef(rid, group, lambda: image)


def _sample(target: Image.Image, refs: list[Image.Image], prompt: str = "a red toy", tag: str = "") -> Sample:
    """Image ids are unique per image (metrics cache real-image embeddings by id, as benchmarks guarantee)."""
    return Sample(id="s", group="g", split="test", prompt=prompt,
                  references=[_ref(r, f"{tag}r{i}") for i, r in enumerate(refs)], target=_ref(target, f"{tag}t"))


def test_image_similarity_matches_manual_cosines() -> None:
    (m,) = build_metrics([MetricSpec("image_sim", "dino-tiny")])
    assert m.key == "image_sim@dino-tiny" and m.info["random_weights"] is True
    target, refs = subject_image("red_toy", 0), [subject_image("red_toy", 1), subject_image("blue_can", 2)]
    gen = subject_image("red_toy", 3)
    (row,) = m.compute([MetricInput(gen, _sample(target, refs))])
    e = m.encoder.embed_images([gen, target, *refs])
    assert row["image_sim@dino-tiny.target"] == pytest.approx(float(e[0] @ e[1]), abs=1e-5)
    assert row["image_sim@dino-tiny.refs"] == pytest.approx(float((e[0] @ e[2] + e[0] @ e[3]) / 2), abs=1e-5)
    # The generation identical to the target scores 1 against it.
    (same,) = m.compute([MetricInput(target, _sample(target, refs))])
    assert same["image_sim@dino-tiny.target"] == pytest.approx(1.0, abs=1e-5)
    # A real-image row that returned reference r0: r0 is left out of the reference mean.
    (loo,) = m.compute([MetricInput(refs[0], _sample(target, refs), source_id="r0")])
    assert loo["image_sim@dino-tiny.refs"] == pytest.approx(float(e[2] @ e[3]), abs=1e-5)


def test_clip_t_is_raw_cosine_and_scaled_in_summary() -> None:
    (m,) = build_metrics([MetricSpec("clip_t")], profile="tiny")
    assert m.key == "clip_t@clip-tiny"
    gen = subject_image("blue_can", 0)
    (row,) = m.compute([MetricInput(gen, _sample(gen, [], prompt="a blue can"))])
    manual = float(m.encoder.embed_images([gen])[0] @ m.encoder.embed_texts(["a blue can"])[0])
    assert row["clip_t@clip-tiny"] == pytest.approx(manual, abs=1e-5)
    rows = [{"split": "test", "group": "g", "sample_id": "s", "status": "ok", "metrics": row}]
    est = summarize(rows, metric_fields([m]))["test"]["metrics"]["clip_t@clip-tiny"]
    assert est["scaled"]["factor"] == 2.5 and est["scaled"]["mean"] == pytest.approx(2.5 * manual)


def test_face_similarity_with_dlib_on_real_faces() -> None:
    faces = shared("faces")
    require_encoder("dlib")
    (m,) = build_metrics([MetricSpec("face", "dlib")])
    obama = [load_image_file(faces / f) for f in ("obama.jpg", "obama2.jpg", "obama3.jpg")]
    biden = load_image_file(faces / "biden.jpg")
    blank = Image.new("RGB", (200, 200), (128, 128, 128))
    sample = _sample(obama[0], [obama[1], biden])
    same, other, none = m.compute([MetricInput(obama[2], sample), MetricInput(biden, sample), MetricInput(blank, sample)])
    k = "face@dlib"
    assert same[f"{k}.detected"] == 1.0 and none[f"{k}.detected"] == 0.0
    assert same[f"{k}.target"] > other[f"{k}.target"] + 0.05
    assert same[f"{k}.target_zero"] == same[f"{k}.target"]
    # No face in the generation: excluded under one policy, 0 under the other.
    assert none[f"{k}.target"] is None and none[f"{k}.target_zero"] == 0.0
    assert none[f"{k}.refs"] is None and none[f"{k}.refs_zero"] == 0.0
    # No face in the target: the row carries no target value under either policy.
    (no_target,) = m.compute([MetricInput(obama[2], _sample(blank, [obama[1]], tag="blank-"))])
    assert no_target[f"{k}.target"] is None and no_target[f"{k}.target_zero"] is None
    assert no_target[f"{k}.refs"] is not None


def test_metric_specs() -> None:
    specs = parse_metric_specs("clip_t,clip_i,dino_i,face@dlib", image_encoder="mobilenet_v2")
    assert [(s.metric, s.encoder) for s in specs] == [("clip_t", None), ("face", "dlib"), ("image_sim", "mobilenet_v2")]
    with pytest.raises(ConfigError):
        parse_metric_specs("clip_t,clip_t")
    with pytest.raises(ConfigError, match="face encoder"):
        build_metrics([MetricSpec("face", "dino-tiny")])


def test_group_means_then_split_mean() -> None:
    rows = [{"split": "t", "group": "a", "sample_id": f"a{i}", "status": "ok", "metrics": {"x": 1.0}} for i in range(10)]
    rows += [{"split": "t", "group": "b", "sample_id": "b0", "status": "ok", "metrics": {"x": 0.0}},
             {"split": "t", "group": "b", "sample_id": "b1", "status": "ok", "metrics": {"x": None}},
             {"split": "t", "group": "c", "sample_id": "c0", "status": "no_candidate", "metrics": {}}]
    est = estimate([r for r in rows if r["status"] == "ok"], "x")
    assert est.mean == pytest.approx(0.5) and est.n_groups == 2 and est.n_rows == 11
    summary = summarize(rows, {"x": {"direction": "higher"}})["t"]
    assert summary["rows_per_status"] == {"no_candidate": 1, "ok": 12} and summary["groups"] == 3
    assert summary["metrics"]["x"]["mean"] == pytest.approx(0.5)


def test_bootstrap_ci() -> None:
    vals = list(np.random.default_rng(0).normal(0.7, 0.1, 40))
    lo, hi = bootstrap_ci(vals)
    assert lo < np.mean(vals) < hi and (lo, hi) == bootstrap_ci(vals)
    assert hi - lo == pytest.approx(2 * 1.96 * np.std(vals) / np.sqrt(40), rel=0.25)
    assert bootstrap_ci([0.3]) == (0.3, 0.3)


def test_read_jsonl_skips_truncated_line(tmp_path: Path) -> None:
    p = tmp_path / "rows.jsonl"
    p.write_text(json.dumps({"a": 1}) + "\n" + '{"a": 2, "b"')
    assert read_jsonl(p) == [{"a": 1}]


def test_dino_i_follows_the_benchmark_convention(tmp_path: Path, mini_dreambench: Path, mini_release: Path) -> None:
    """DINO-I: DINO v1 ViT-S/16 on DreamBench (its published numbers), DINOv2-S on MRBench releases (the paper)."""
    from mrbench.evaluation.benchmarks import DreamBench, MRBenchRelease
    from mrbench.evaluation.metrics import apply_benchmark_encoders
    from mrbench.evaluation.runner import run_eval

    specs = parse_metric_specs("clip_t,dino_i")
    dream = apply_benchmark_encoders(specs, DreamBench.metric_encoders)
    release = apply_benchmark_encoders(specs, MRBenchRelease.metric_encoders)
    assert [(s.metric, s.encoder) for s in dream] == [("clip_t", None), ("dino_i", "dino-v1")]
    assert [(s.metric, s.encoder) for s in release] == [("clip_t", None), ("dino_i", "dino")]
    explicit = apply_benchmark_encoders(parse_metric_specs("dino_i@dino"), DreamBench.metric_encoders)
    assert explicit[0].encoder == "dino"  # an explicit encoder wins

    # In a run (tiny profile: the tiny DINO with the matching architecture), the encoder is in the run config.
    kw = dict(profile="tiny", metrics="dino_i", images_per_prompt=1, limit=2, n_boot=10)
    runs = {"dreambench": run_eval("reference", f"dreambench:{mini_dreambench}", tmp_path, **kw),
            "mrbench": run_eval("reference", f"mrbench:{mini_release}", tmp_path, **kw)}
    for name, variant in (("dreambench", "v1"), ("mrbench", "v2")):
        config = json.loads((runs[name].run_dir / "config.json").read_text())
        (m,) = config["metrics"]
        assert m["key"] == "dino_i@dino-tiny" and f"'variant': '{variant}'" in m["encoder_info"]["weights"]
        assert config["benchmark"]["metric_encoders"]["dino_i"] == ("dino-v1" if variant == "v1" else "dino")


def test_dreambench_all_field_is_the_mean_over_every_real_photo(tmp_path: Path) -> None:
    """``.all`` (DreamBooth's convention, DreamBench's headline column) by hand with the real mobilenet_v2 encoder on a
    2-subject DreamBench copy: each row's cosine with every photo of its subject, less the image a real-image row
    returned."""
    import shutil

    from evalhelpers import write_prompts_file

    from mrbench.backends import get_encoder
    from mrbench.evaluation.runner import run_eval

    require_encoder("mobilenet_v2")
    source = shared("dreambench")
    root = tmp_path / "db"
    for subject in ("cat", "clock"):
        (root / subject).mkdir(parents=True)
        for f in sorted((source / subject).glob("*.jpg"))[:3]:
            shutil.copy(f, root / subject / f.name)
    write_prompts_file(root / "prompts_and_classes.txt", {"cat": "cat", "clock": "clock"})
    photos = {f"{p.parent.name}/{p.name}": p for p in sorted(root.glob("*/*.jpg"))}
    enc = get_encoder("mobilenet_v2")
    emb = dict(zip(photos, enc.embed_images([load_image_file(p) for p in photos.values()])))

    def cos(a: str, b: str) -> float:
        x, y = np.asarray(emb[a], np.float64), np.asarray(emb[b], np.float64)
        return float(x @ y / np.linalg.norm(x) / np.linalg.norm(y))

    key = "image_sim@mobilenet_v2"
    for model in ("reference", "chance"):
        run = run_eval(model, f"dreambench:{root}", tmp_path / "runs", metrics=key, images_per_prompt=2, n_boot=10)
        assert run.summary["benchmark"]["headline_field"] == "all"
        fields = json.loads((run.run_dir / "config.json").read_text())["metrics"][0]["fields"]
        assert fields[0] == f"{key}.all"  # the headline column comes first on the leaderboard
        rows = [r for r in run.rows if r["status"] == "ok"]
        assert len(rows) == 12
        for r in rows:
            subject = [p for p in photos if p.split("/")[0] == r["group"] and p != r["source_id"]]
            want = float(np.mean([cos(r["source_id"], p) for p in subject]))
            assert r["metrics"][f"{key}.all"] == pytest.approx(want, abs=1e-5), (model, r["sample_id"])
            assert len(subject) == (2 if model == "reference" else 3)
