"""mm-diff through the harness: the tiny profile on a release and on the DreamBench folder, and missing real weights
named before any work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from evalhelpers import shared
from typer.testing import CliRunner

from mrbench.cli import app
from mrbench.evaluation.results import read_jsonl
from mrbench.evaluation.runner import run_eval

pytestmark = pytest.mark.slow


def test_tiny_release_end_to_end(tmp_path: Path, mini_release: Path) -> None:
    res = run_eval("mm-diff", f"mrbench:{mini_release}", tmp_path, split="held-out", profile="tiny",
                   model_args={"num_inference_steps": 2}, images_per_prompt=1, metrics=["clip_t"], n_boot=50)
    assert res.run_dir.name.startswith("mm-diff-mrbench-held_out-2steps-cfg5-seed0-tiny-")
    assert len(res.rows) == 2 and {r["status"] for r in res.rows} == {"ok"}
    for r in res.rows:
        assert (res.run_dir / r["image"]).is_file() and r["model_random_weights"] is True
        assert r["info"]["face_references"] == r["reference_ids"]  # the tiny detector finds a "face" in each
        assert r["info"]["prompt"].endswith(", object<|subj|>")  # release category 'subject' -> class noun 'object'
    cfg = json.loads((res.run_dir / "config.json").read_text())
    assert cfg["model"]["weights"]["mm_diff"].startswith("random(") and cfg["model"]["options"]["fuse_scale"] == 0.8


def test_cli_on_a_dreambench_subset(tmp_path: Path) -> None:
    bench = shared("dreambench")
    res = CliRunner().invoke(app, ["eval", "--model", "mm-diff", "--profile", "tiny", "--benchmark", f"dreambench:{bench}",
                                   "--out", str(tmp_path), "--limit", "2", "--images-per-prompt", "1",
                                   "--metrics", "clip_t", "--model-args", "num_inference_steps=2"])
    assert res.exit_code == 0, res.output
    (run_dir,) = [p for p in tmp_path.iterdir() if p.name.startswith("mm-diff-dreambench-test-")]
    rows = read_jsonl(run_dir / "samples.jsonl")
    assert len(rows) == 2 and {r["status"] for r in rows} == {"ok"}
    for r in rows:  # every reference of the sample is used: MM-Diff takes them all
        assert r["info"]["num_references"] == len(r["reference_ids"]) >= 3
        assert "<|subj|>" in r["info"]["prompt"] and r["info"]["prompt"].replace("<|subj|>", "") == r["prompt"]


def test_missing_weights_are_all_named_before_any_work(tmp_path: Path, mini_dreambench: Path) -> None:
    home = tmp_path / "home"
    env = {"HOME": str(home), "HF_HOME": str(home / "hf"), "HF_HUB_CACHE": str(home / "hf" / "hub"),
           "TORCH_HOME": str(home / "torch"), "XDG_CACHE_HOME": str(home / "cache"),
           "MRBENCH_WEIGHTS_DIR": str(home / "mirror")}
    res = CliRunner().invoke(app, ["eval", "--model", "mm-diff", "--benchmark", f"dreambench:{mini_dreambench}",
                                   "--out", str(tmp_path / "out"), "--metrics", "clip_t@clip-tiny"], env=env)
    assert res.exit_code == 3, res.output
    out = " ".join(res.output.split())  # rich may wrap long lines
    assert "5 weights are missing; all of them" in out
    for what in ("SDXL (stabilityai/stable-diffusion-xl-base-1.0)", "SDXL fp16-fix VAE (madebyollin/sdxl-vae-fp16-fix)",
                 "CLIP ViT-L/14 (openai/clip-vit-large-patch14)", "insightface model pack 'buffalo_l'",
                 "MM-Diff checkpoint (mm-diff/portrait_generation"):
        assert what in out, what
    assert f"{home / 'mirror' / 'mm-diff' / 'portrait_generation'} (no unet_adapter_weights.bin" in out
    assert "hf download madebyollin/sdxl-vae-fp16-fix" in out and "checkpoints.tar.gz" in out
    # Each "how" names mm-diff's own option (not the shared helpers' backend spellings).
    assert "--model-args face_root=" in out and "--model-args image_encoder=" in out and "pass root=" not in out
    assert not (tmp_path / "out").exists()  # nothing was written: the run never started
