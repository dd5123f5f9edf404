"""flux2, qwen-image-edit, omnigen through the harness (tiny profiles): a release, a DreamBench subset via the CLI,
resume after SIGKILL with identical rows, and `mrbench ls`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from evalhelpers import kill_run_eval_after, shared
from typer.testing import CliRunner

from mrbench.cli import app
from mrbench.evaluation.results import read_jsonl
from mrbench.evaluation.runner import run_eval

REPO = Path(__file__).resolve().parents[2]
NEW_MODELS = ["flux2", "qwen-image-edit", "omnigen"]
STEPS = {"num_inference_steps": 2}

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("model", NEW_MODELS)
def test_tiny_release_end_to_end(tmp_path: Path, mini_release: Path, model: str) -> None:
    res = run_eval(model, f"mrbench:{mini_release}", tmp_path, split="held-out", profile="tiny", model_args=STEPS,
                   images_per_prompt=1, n_boot=50)
    rows = res.rows
    assert len(rows) == 2 and {r["status"] for r in rows} == {"ok"}
    guidance = {"flux2": "4", "qwen-image-edit": "4", "omnigen": "2.5"}[model]
    assert res.run_dir.name.startswith(f"{model}-mrbench-held_out-2steps-cfg{guidance}-seed0-tiny-")
    for r in rows:
        assert (res.run_dir / r["image"]).is_file()
        assert r["random_weights"] is True and r["model_random_weights"] is True
        assert r["info"]["references_used"] == r["reference_ids"] and r["info"]["reference_policy"] == "all"
        assert "clip_i@clip-tiny.refs" in r["metrics"]
    cfg = json.loads((res.run_dir / "config.json").read_text())
    assert cfg["model"]["random_weights"] is True and cfg["model"]["sampling"]["steps"] == 2
    assert cfg["model"]["weights"]["pipeline"].startswith("random(")


@pytest.mark.parametrize("model", NEW_MODELS)
def test_cli_on_a_dreambench_subset(tmp_path: Path, model: str) -> None:
    """``mrbench eval --model M --profile tiny`` on the real DreamBench folder (its subjects have 4-6 photos, so a
    sample has up to 5 references: qwen-image-edit and omnigen subsample them to 3)."""
    bench = shared("dreambench")
    res = CliRunner().invoke(app, ["eval", "--model", model, "--profile", "tiny", "--benchmark", f"dreambench:{bench}",
                                   "--out", str(tmp_path), "--limit", "2", "--images-per-prompt", "1",
                                   "--metrics", "clip_t,image_sim@dino-tiny", "--model-args", "num_inference_steps=2"])
    assert res.exit_code == 0, res.output
    (run_dir,) = [p for p in tmp_path.iterdir() if p.name.startswith(f"{model}-dreambench-test-")]
    rows = read_jsonl(run_dir / "samples.jsonl")
    assert len(rows) == 2 and {r["status"] for r in rows} == {"ok"}
    for r in rows:
        n, used = len(r["reference_ids"]), r["info"]["references_used"]
        cap = 6 if model == "flux2" else 3
        assert r["info"]["num_references"] == n and len(used) == min(n, cap) and set(used) <= set(r["reference_ids"])
        assert r["info"]["reference_policy"] == ("all" if n <= cap else
                                                 f"seeded subsample of {cap} of {n} (reference_seed=0)")


@pytest.mark.parametrize("model", NEW_MODELS)
def test_same_seed_same_rows_and_resume_after_sigkill(tmp_path: Path, mini_dreambench: Path, model: str) -> None:
    """A run killed mid-way completes without regenerating; its rows equal a fresh run's, byte for byte."""
    args = dict(model=model, benchmark=f"dreambench:{mini_dreambench}", profile="tiny", limit=1, images_per_prompt=3,
                model_args=STEPS, metrics=["clip_t", "image_sim@dino-tiny"], n_boot=50)
    killed_out = tmp_path / "killed"
    cached = kill_run_eval_after(killed_out, args, 1, REPO)
    assert cached == 1  # killed right after its first generation

    resumed = run_eval(out=killed_out, **args)
    assert resumed.timing["generated_images"] == 3 - cached  # finished images are not generated again
    fresh = run_eval(out=tmp_path / "fresh", **args)
    assert fresh.timing["generated_images"] == 3 and resumed.run_dir.name == fresh.run_dir.name
    assert (resumed.run_dir / "samples.jsonl").read_text() == (fresh.run_dir / "samples.jsonl").read_text()
    for r in read_jsonl(fresh.run_dir / "samples.jsonl"):  # same seed, same image: PNG bytes equal across the runs
        assert (resumed.run_dir / r["image"]).read_bytes() == (fresh.run_dir / r["image"]).read_bytes()


@pytest.mark.parametrize("model,repo", [("flux2", "black-forest-labs/FLUX.2-dev"),
                                        ("qwen-image-edit", "Qwen/Qwen-Image-Edit-2509"),
                                        ("omnigen", "Shitao/OmniGen-v1-diffusers")])
def test_missing_weights_fail_before_any_work(tmp_path: Path, mini_dreambench: Path, model: str, repo: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("MRBENCH_WEIGHTS_DIR", str(tmp_path / "mirror"))
    res = CliRunner().invoke(app, ["eval", "--model", model, "--benchmark", f"dreambench:{mini_dreambench}",
                                   "--out", str(tmp_path / "out"), "--metrics", "image_sim@dino-tiny"])
    assert res.exit_code == 3, res.output
    out = " ".join(res.output.split())  # rich may wrap long lines
    assert "weights for" in out and repo in out and f"hf download {repo}" in out and "--profile tiny" in out
    assert not (tmp_path / "out").exists()  # nothing was written: the run never started


def test_ls_lists_new_models_and_the_judge() -> None:
    cli = CliRunner()
    models = cli.invoke(app, ["ls", "models"]).output.splitlines()
    for name in NEW_MODELS:
        (line,) = [ln for ln in models if ln.split()[0] == name]
        assert "diffusers" in line
    metrics = cli.invoke(app, ["ls", "metrics"]).output.splitlines()
    (line,) = [ln for ln in metrics if ln.split()[0] == "judge"]
    assert "0-10" in line
