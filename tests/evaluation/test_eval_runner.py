"""run_eval end to end: scale rows on real data, determinism, resume after SIGKILL, tiny profiles, fail-fast."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from evalhelpers import kill_run_eval_after, require_encoder, shared

from mrbench.backends.base import MissingWeightsError
from mrbench.config import ConfigError
from mrbench.evaluation.results import read_jsonl
from mrbench.evaluation.runner import parse_model_args, run_eval
from mrbench.registry import UnknownEntryError

REPO = Path(__file__).resolve().parents[2]


def _metric(result: object, key: str, split: str = "test") -> dict:
    return result.summary["splits"][split]["metrics"][key]  # type: ignore[attr-defined]


@pytest.mark.slow
def test_reference_beats_chance_on_dreambench_mobilenet(tmp_path: Path) -> None:
    bench = f"dreambench:{shared('dreambench')}"
    require_encoder("mobilenet_v2")
    kw = dict(metrics="image_sim@mobilenet_v2", limit=60, images_per_prompt=1)
    ref = run_eval("reference", bench, tmp_path, **kw)
    chance = run_eval("chance", bench, tmp_path, **kw)
    r, c = _metric(ref, "image_sim@mobilenet_v2.target"), _metric(chance, "image_sim@mobilenet_v2.target")
    assert r["n_groups"] == c["n_groups"] == 30
    assert r["ci"][0] > c["ci"][1] + 0.1, (r, c)  # a clear margin: the CIs are far apart
    assert ref.summary["random_weights"] is False and ref.rows[0]["encoders"]["image_sim@mobilenet_v2"]["random_weights"] is False
    # The ceiling row returned another image of the group (leave-one-out): never the target, never a reference it
    # was scored against.
    assert all(row["source_id"] not in row["reference_ids"] and row["source_id"] != row["target_id"]
               and row["source_id"].split("/")[0] == row["group"] for row in ref.rows)
    assert all(row["source_id"].split("/")[0] != row["group"] for row in chance.rows)


@pytest.mark.slow
def test_reference_beats_chance_on_faces_dlib(tmp_path: Path) -> None:
    faces = shared("faces")
    require_encoder("dlib")
    root = tmp_path / "faces"
    for group, files in {"obama": ["obama.jpg", "obama2.jpg", "obama3.jpg", "obama_partial_face.jpg",
                                   "obama_partial_face2.jpg", "32bit.png"], "biden": ["biden.jpg"]}.items():
        (root / group).mkdir(parents=True)
        for f in files:
            shutil.copy(faces / f, root / group / f)  # copies: links out of a benchmark are not followed
    bench = f"folder:{root}"
    ref = run_eval("reference", bench, tmp_path / "runs", metrics="face@dlib", images_per_prompt=2)
    chance = run_eval("chance", bench, tmp_path / "runs", metrics="face@dlib", images_per_prompt=2)
    r, c = _metric(ref, "face@dlib.target"), _metric(chance, "face@dlib.target")
    assert r["mean"] > c["mean"] + 0.05, (r, c)
    # biden has no second image: the ceiling row reports it as a failed row, not as a score.
    assert {row["status"] for row in ref.rows if row["group"] == "biden"} == {"no_candidate"}
    assert _metric(ref, "face@dlib.detected")["mean"] > 0.5


@pytest.mark.slow
def test_deterministic_and_resumes_after_sigkill(tmp_path: Path, mini_dreambench: Path) -> None:
    """Same command twice -> identical samples.jsonl; a run killed mid-way completes without regenerating."""
    args = dict(model="easyref", benchmark=f"dreambench:{mini_dreambench}", profile="tiny", limit=4, images_per_prompt=2,
                model_args={"num_inference_steps": 2}, metrics=["clip_t", "image_sim@dino-tiny"])
    killed_out = tmp_path / "killed"
    cached = kill_run_eval_after(killed_out, args, 3, REPO)
    assert cached == 3  # killed right after its third generation

    resumed = run_eval(out=killed_out, **args)
    assert resumed.timing["generated_images"] == 8 - cached  # finished samples are not generated again
    assert resumed.timing["cached_images"] + resumed.timing["resumed_rows"] == cached
    fresh = run_eval(out=tmp_path / "fresh", **args)
    assert fresh.timing["generated_images"] == 8
    assert resumed.run_dir.name == fresh.run_dir.name
    a = (resumed.run_dir / "samples.jsonl").read_text()
    b = (fresh.run_dir / "samples.jsonl").read_text()
    assert a == b  # identical rows, metric values included
    assert len(read_jsonl(fresh.run_dir / "samples.jsonl")) == 8
    again = run_eval(out=tmp_path / "fresh", **args)
    assert again.timing["resumed_rows"] == 8 and again.timing["generated_images"] == 0
    assert (again.run_dir / "samples.jsonl").read_text() == b
    assert not (again.run_dir / "samples.partial.jsonl").exists()


@pytest.mark.slow
@pytest.mark.parametrize("model", ["easyref", "ip-adapter", "lora", "reference", "chance"])
def test_tiny_profile_end_to_end(tmp_path: Path, mini_release: Path, model: str) -> None:
    args = {"num_inference_steps": 2} if model not in ("reference", "chance") else {}
    if model == "lora":
        args.update(train_steps=2, rank=4)
    res = run_eval(model, f"mrbench:{mini_release}", tmp_path, split="held-out", profile="tiny", model_args=args,
                   images_per_prompt=1)
    rows = res.rows
    assert len(rows) == 2 and {r["status"] for r in rows} == {"ok"}
    diffusion = model not in ("reference", "chance")
    assert res.run_dir.name.startswith(f"{model}-mrbench-held_out-" + ("2steps-cfg7.5" if diffusion else "real-nocfg"))
    assert "-seed0-tiny-" in res.run_dir.name
    for r in rows:
        assert (res.run_dir / r["image"]).is_file()
        assert r["random_weights"] is True and r["model_random_weights"] is diffusion
        assert set(r["metrics"]) == {"clip_t@clip-tiny", "clip_i@clip-tiny.target", "clip_i@clip-tiny.refs",
                                     "clip_i@clip-tiny.all", "dino_i@dino-tiny.target", "dino_i@dino-tiny.refs",
                                     "dino_i@dino-tiny.all", "face@insightface-tiny.target",
                                     "face@insightface-tiny.target_zero", "face@insightface-tiny.refs",
                                     "face@insightface-tiny.refs_zero", "face@insightface-tiny.detected"}
        assert r["encoders"]["clip_i@clip-tiny"]["random_weights"] is True
    cfg = json.loads((res.run_dir / "config.json").read_text())
    assert cfg["model"]["profile"] == "tiny" and cfg["benchmark"]["split"] == "held_out"
    assert {"versions", "git", "hardware"} <= set(cfg["provenance"])
    summary = json.loads((res.run_dir / "summary.json").read_text())
    assert summary["splits"]["held_out"]["groups"] == 2


def test_fails_fast_before_any_work(tmp_path: Path, mini_dreambench: Path) -> None:
    bench = f"dreambench:{mini_dreambench}"
    with pytest.raises(MissingWeightsError, match="Qwen2-VL|SDXL|EasyRef"):
        run_eval("easyref", bench, tmp_path / "a", metrics="image_sim@dino-tiny")
    assert not (tmp_path / "a").exists()
    with pytest.raises(UnknownEntryError, match="did you mean 'easyref'"):
        run_eval("easyrf", bench, tmp_path / "b", metrics="image_sim@dino-tiny")
    with pytest.raises(ConfigError, match="scal"):
        run_eval("ip-adapter", bench, tmp_path / "c", profile="tiny", model_args="scal=0.5", metrics="image_sim@dino-tiny")


def test_errors_are_rows(tmp_path: Path, mini_dreambench: Path) -> None:
    root = tmp_path / "folder"
    (root / "single").mkdir(parents=True)
    shutil.copy(mini_dreambench / "red_toy" / "00.jpg", root / "single" / "only.jpg")
    shutil.copytree(mini_dreambench / "blue_can", root / "blue_can")
    res = run_eval("reference", f"folder:{root}", tmp_path / "runs", metrics="image_sim@dino-tiny", images_per_prompt=1)
    by_group = {r["group"]: r for r in res.rows}
    assert by_group["single"]["status"] == "no_candidate" and by_group["single"]["image"] is None
    assert res.summary["splits"]["test"]["rows_per_status"] == {"no_candidate": 1, "ok": 3}


def test_parse_model_args() -> None:
    assert parse_model_args(["scale=0.5,use_lora=true", "target_modules=[to_q, to_k],height=64"]) == {
        "scale": 0.5, "use_lora": True, "target_modules": ["to_q", "to_k"], "height": 64}
    with pytest.raises(ConfigError):
        parse_model_args("scale")


def test_ok_without_an_image_is_a_failed_row(tmp_path: Path, mini_dreambench: Path) -> None:
    """A generator that claims success but returns no image yields a generation_error row, not a crash."""
    from mrbench.baselines.reference import ReferenceRow
    from mrbench.evaluation.generator import GenerationResult

    class Forgetful(ReferenceRow):
        """Drops the first image of each batch (a built generator: nothing is registered)."""

        name = "forgetful-reference"

        def generate(self, requests):  # noqa: ANN001, ANN201
            out = super().generate(requests)
            return [GenerationResult(None, source_id=r.source_id) if i == 0 else r for i, r in enumerate(out)]

    res = run_eval(Forgetful(), f"dreambench:{mini_dreambench}", tmp_path / "runs",
                   metrics="image_sim@dino-tiny", images_per_prompt=1, batch_size=100)
    statuses = [r["status"] for r in res.rows]
    assert statuses.count("generation_error") == 1 and statuses.count("ok") == len(statuses) - 1
    bad = next(r for r in res.rows if r["status"] == "generation_error")
    assert bad["image"] is None and "without an image" in bad["error_message"]
