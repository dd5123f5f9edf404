"""Benchmarks: DreamBench parsing and sample construction, MRBench release splits, folder benchmarks, specs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from evalhelpers import MINI_SUBJECTS, shared

from mrbench.config import ConfigError
from mrbench.evaluation.benchmarks import build_benchmark, parse_benchmark_arg, parse_dreambench_prompts
from mrbench.registry import UnknownEntryError


def test_parse_real_dreambench_prompts() -> None:
    parsed = parse_dreambench_prompts(shared("dreambench") / "prompts_and_classes.txt")
    assert len(parsed.classes) == 30
    assert parsed.classes["bear_plushie"] == "stuffed animal"
    assert len(parsed.object_prompts) == 25 and len(parsed.live_prompts) == 25
    assert parsed.object_prompts[0] == "a {0} {1} in the jungle"
    assert parsed.live_prompts[10] == "a {0} {1} wearing a red hat"
    assert sum(parsed.is_live(s) for s in parsed.classes) == 9  # DreamBench: 21 objects, 9 live subjects


def test_real_dreambench_samples() -> None:
    bench = build_benchmark(f"dreambench:{shared('dreambench')}")
    samples = bench.all_samples()
    assert len(samples) == 30 * 25
    assert len({s.group for s in samples}) == 30
    s = next(x for x in samples if x.id == "dog/10")
    assert s.prompt == "a dog wearing a red hat" and s.identifier_prompt == "a sks dog wearing a red hat"
    assert s.class_token == "dog" and s.category == "live"
    t = next(x for x in samples if x.id == "can/20")
    assert t.prompt == "a red can" and t.category == "object"
    for x in samples:
        assert x.target is not None and x.target.id not in {r.id for r in x.references}
        assert len(x.references) >= 1
    # The first 30 samples (round robin) cover all 30 subjects.
    assert len({x.group for x in samples[:30]}) == 30
    assert bench.spec().num_samples == 750 and bench.spec().seeds == [0, 1, 2, 3]


def test_rotating_target_covers_every_photo(mini_dreambench: Path) -> None:
    bench = build_benchmark(f"dreambench:{mini_dreambench}")
    targets = {s.target.id for s in bench.all_samples() if s.group == "red_toy"}
    assert targets == {f"red_toy/{k:02d}.jpg" for k in range(3)}
    dog = [s for s in bench.all_samples() if s.group == "dog9"]
    assert dog[1].prompt == "a dog wearing a red hat"  # live-subject templates for the dog


def test_limit_and_spec(mini_dreambench: Path) -> None:
    bench = build_benchmark(f"dreambench:{mini_dreambench}", limit=4, seed=7, images_per_prompt=2)
    samples = bench.samples()
    assert len(samples) == 4 and len({s.group for s in samples[:3]}) == 3
    spec = bench.spec()
    assert spec.version == "dreambench/2" and spec.seeds == [7, 8] and spec.num_samples == 4
    again = build_benchmark(f"dreambench:{mini_dreambench}", limit=4, seed=7, images_per_prompt=2)
    assert again.spec().fingerprint == spec.fingerprint


def test_mrbench_release_splits(mini_release: Path) -> None:
    held_out = build_benchmark(f"mrbench:{mini_release}")
    assert held_out.split == "held_out"
    samples = held_out.samples()
    assert [s.group for s in samples] == ["held_out_g0", "held_out_g1"]
    s = samples[0]
    assert s.target.id == "held_out_g0_img0" and [r.id for r in s.references] == ["held_out_g0_img1", "held_out_g0_img2"]
    # The class noun of the category ("subject" -> object), never the group's tag (an identity's name for people).
    assert s.prompt == "photo 0 of a toy" and s.class_token == "object" and "red toy" not in s.identifier_prompt
    assert s.target.load().size == (64, 64)
    held_in = build_benchmark(f"mrbench:{mini_release}", split="held-in")
    assert held_in.split == "held_in" and {x.group for x in held_in.samples()} == {"held_in_g0", "held_in_g1"}
    with pytest.raises(ConfigError):
        build_benchmark(f"mrbench:{mini_release}", split="train")
    assert parse_benchmark_arg(str(mini_release)) == ("mrbench", str(mini_release))


def test_folder_benchmark_leave_one_out(tmp_path: Path, mini_dreambench: Path) -> None:
    for s in MINI_SUBJECTS:  # copies: a link out of the benchmark folder is never followed
        shutil.copytree(mini_dreambench / s, tmp_path / s)
    (tmp_path / "classes.csv").write_text("group,class\nred_toy,toy robot\n")
    bench = build_benchmark(f"folder:{tmp_path}")
    samples = bench.all_samples()
    assert len(samples) == 9
    toy = [s for s in samples if s.group == "red_toy"]
    assert toy[0].prompt == "a photo of a toy robot" and len(toy[0].references) == 2


def test_bad_benchmarks(tmp_path: Path) -> None:
    with pytest.raises(UnknownEntryError, match="did you mean"):
        build_benchmark(f"dreambenc:{tmp_path}")
    with pytest.raises(ConfigError):
        build_benchmark(f"dreambench:{tmp_path / 'missing'}")
    with pytest.raises(ConfigError, match="prompts_and_classes"):
        build_benchmark(f"dreambench:{tmp_path}").all_samples()


def _coco_fixture(root: Path, n: int = 8, missing: int = 1) -> dict[int, str]:
    """A COCO-format captions file over ``n`` seeded images (``missing`` of them absent from val2017/).

    Returns image id -> the caption the benchmark must use (the one with the lowest annotation id)."""
    import json

    from evalhelpers import subject_image

    (root / "annotations").mkdir(parents=True)
    (root / "val2017").mkdir()
    images, annotations, expected = [], [], {}
    subjects = sorted(MINI_SUBJECTS)
    for k in range(n):
        iid = 1000 + 7 * k
        name = f"{iid:012d}.jpg"
        images.append({"id": iid, "file_name": name, "width": 64, "height": 64})
        if k >= missing:
            subject_image(subjects[k % len(subjects)], k).save(root / "val2017" / name, quality=95)
        # Two captions, the later-listed one with the lower annotation id (the benchmark takes that one).
        annotations.append({"id": 50 + 2 * k + 1, "image_id": iid, "caption": f"second caption {k}"})
        annotations.append({"id": 50 + 2 * k, "image_id": iid, "caption": f"A  photo\nof thing {k} "})
        expected[iid] = f"A photo of thing {k}"
    (root / "annotations" / "captions_val2017.json").write_text(json.dumps(
        {"info": {}, "licenses": [], "images": images, "annotations": annotations}))
    return expected


def test_coco_benchmark(tmp_path: Path) -> None:
    from mrbench.evaluation.runner import run_eval

    root = tmp_path / "coco"
    expected = _coco_fixture(root)
    bench = build_benchmark(f"coco:{root}")
    samples = bench.samples()
    assert bench.split == "val2017" and len(samples) == 7  # the image missing from val2017/ is left out
    assert {s.id for s in samples} == {f"coco/{i}" for i in list(expected)[1:]}
    for s in samples:
        iid = int(s.id.split("/")[1])
        # IP-Adapter's protocol: the image alone, CLIP-T against the caption (the lowest annotation id, cleaned)
        assert s.prompt == "" and s.caption == s.score_text == expected[iid]
        assert [r.id for r in s.references] == [s.target.id] == [s.id]  # one reference: the target image itself
        assert s.target.load().size == (64, 64)
    # A seeded order (not the id order), identical on every build: --limit N is a seeded subsample of N images.
    ids = [s.id for s in samples]
    assert ids != sorted(ids) and ids == [s.id for s in build_benchmark(f"coco:{root}").samples()]
    sub = build_benchmark(f"coco:{root}", limit=3)
    assert [s.id for s in sub.samples()] == ids[:3] and sub.spec().fingerprint == bench.spec().fingerprint
    assert sub.spec().metric_encoders == {"dino_i": "dino"} and sub.spec().prompt == "image-only"
    raw = build_benchmark(f"coco:{root}", prompt="raw")  # the other mode: the caption is the text prompt too
    assert all(s.prompt == s.score_text == expected[int(s.id.split("/")[1])] and not s.caption for s in raw.samples())
    assert raw.spec().prompt == "raw" and raw.spec().fingerprint != bench.spec().fingerprint

    # Both modes run; CLIP-T scores the same caption in both, so the chance row (same draws) scores the same.
    res = run_eval("chance", f"coco:{root}", tmp_path / "runs", profile="tiny", metrics="clip_t,image_sim",
                   images_per_prompt=1, limit=4, n_boot=10)
    assert [r["status"] for r in res.rows] == ["ok"] * 4 and all(r["source_id"] != r["target_id"] for r in res.rows)
    assert res.summary["benchmark"]["prompt"] == "image-only" and {r["prompt"] for r in res.rows} == {""}
    res_raw = run_eval("chance", f"coco:{root}", tmp_path / "runs", profile="tiny", metrics="clip_t,image_sim",
                       images_per_prompt=1, limit=4, n_boot=10, prompt="raw")
    assert res_raw.run_dir != res.run_dir and res_raw.summary["benchmark"]["prompt"] == "raw"
    assert json.loads((res_raw.run_dir / "config.json").read_text())["benchmark"]["prompt"] == "raw"
    assert [r["source_id"] for r in res_raw.rows] == [r["source_id"] for r in res.rows]
    assert [r["metrics"]["clip_t@clip-tiny"] for r in res_raw.rows] == pytest.approx(
        [r["metrics"]["clip_t@clip-tiny"] for r in res.rows], abs=1e-6)
    # COCO's single reference is its target: .all is that one image
    for r in res.rows:
        assert r["metrics"]["image_sim@dino-tiny.all"] == pytest.approx(r["metrics"]["image_sim@dino-tiny.target"])
    ceiling = run_eval("reference", f"coco:{root}", tmp_path / "runs", profile="tiny", metrics="image_sim",
                       images_per_prompt=1, limit=2, n_boot=10)
    assert {r["status"] for r in ceiling.rows} == {"no_candidate"}  # a group of one image has no other real image

    (root / "annotations" / "captions_val2017.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not a COCO captions file"):
        build_benchmark(f"coco:{root}").samples()
    with pytest.raises(ConfigError, match="captions_val2017.json not found"):
        build_benchmark(f"coco:{tmp_path}").samples()
