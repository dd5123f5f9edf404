"""Missing weights: every one of a run listed in one error, after the name checks and before anything loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mrbench.cli import app


@pytest.fixture()
def no_weights_env(tmp_path: Path) -> dict[str, str]:
    """Every weights location this run looks at points into an empty folder (whatever this machine has cached)."""
    home = tmp_path / "home"
    home.mkdir()
    return {"HOME": str(home), "HF_HOME": str(home / "hf"), "HF_HUB_CACHE": str(home / "hf" / "hub"),
            "TORCH_HOME": str(home / "torch"), "XDG_CACHE_HOME": str(home / "cache"),
            "MRBENCH_WEIGHTS_DIR": str(home / "mirror")}


def test_easyref_lists_every_missing_weight_at_once(mini_dreambench: Path, tmp_path: Path, no_weights_env) -> None:
    res = CliRunner().invoke(app, ["eval", "--model", "easyref", "--benchmark", f"dreambench:{mini_dreambench}",
                                   "--out", str(tmp_path / "runs"), "--metrics", "image_sim@dino-tiny,face@insightface"],
                             env=no_weights_env)
    assert res.exit_code == 3, res.output
    out = res.output
    assert "4 weights are missing; all of them" in out
    for what in ("insightface model pack 'antelopev2'", "SDXL (", "Qwen2-VL (", "EasyRef checkpoint ("):
        assert what in out, what
    assert "hf download" in out and "huggingface-cli" not in out  # one download tool
    assert "--encoder-arg" not in out  # eval has no such option
    assert "--profile tiny" in out and "$MRBENCH_WEIGHTS_DIR" in out
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # nothing started


def test_a_model_name_typo_comes_before_missing_weights(mini_dreambench: Path, tmp_path: Path, no_weights_env) -> None:
    res = CliRunner().invoke(app, ["eval", "--model", "easyrf", "--benchmark", f"dreambench:{mini_dreambench}",
                                   "--out", str(tmp_path), "--metrics", "face@insightface"], env=no_weights_env)
    assert res.exit_code == 2 and "did you mean 'easyref'" in res.output and "weights" not in res.output
    res = CliRunner().invoke(app, ["eval", "--model", "easyref", "--benchmark", f"dreambench:{mini_dreambench}",
                                   "--out", str(tmp_path), "--metrics", "fase@insightface"], env=no_weights_env)
    assert res.exit_code == 2 and "did you mean 'face'" in res.output and "weights" not in res.output


def test_default_metrics_adapt_to_the_weights_on_the_machine(mini_release: Path, tmp_path: Path,
                                                             no_weights_env) -> None:
    """`eval --model reference` with no weights cached: the default metrics that can run offline run (their offline
    alternatives stand in), and the output says which were replaced or skipped and why."""
    res = CliRunner().invoke(app, ["eval", "--model", "reference", "--benchmark", f"mrbench:{mini_release}",
                                   "--out", str(tmp_path / "runs"), "--limit", "2", "--images-per-prompt", "1"],
                             env=no_weights_env)
    assert res.exit_code == 0, res.output
    assert "note: clip_t skipped: open_clip ViT-L-14/openai not available offline (no offline alternative)" in res.output
    assert "note: clip_i: open_clip ViT-L-14/openai not available offline; measured with image_sim@mobilenet_v2" in res.output
    assert "measured with face@dlib instead" in res.output
    (run,) = (tmp_path / "runs").glob("reference-*")
    summary = json.loads((run / "summary.json").read_text())
    assert len(summary["metric_notes"]) == 4
    metrics = summary["splits"]["held_out"]["metrics"]
    assert "image_sim@mobilenet_v2.target" in metrics and "face@dlib.detected" in metrics
    assert not any(k.startswith(("clip", "dino")) for k in metrics)


def test_named_metrics_fail_naming_each_weight_once_with_its_metrics(mini_release: Path, tmp_path: Path,
                                                                     no_weights_env) -> None:
    res = CliRunner().invoke(app, ["eval", "--model", "reference", "--benchmark", f"mrbench:{mini_release}",
                                   "--out", str(tmp_path / "runs"), "--metrics", "clip_t,clip_i,face"],
                             env=no_weights_env)
    assert res.exit_code == 3, res.output
    out = res.output
    assert "2 weights are missing" in out and out.count("weights for open_clip ViT-L-14/openai") == 1
    assert ("needed by metric clip_t, metric clip_i (offline alternative: image_sim@mobilenet_v2): weights for "
            "open_clip ViT-L-14/openai") in out
    assert "needed by metric face (offline alternative: face@dlib)" in out
    assert "loading" not in out  # no progress bar before the error
