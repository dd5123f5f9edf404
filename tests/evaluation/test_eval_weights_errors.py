"""Missing weights: every one of a run listed in one error, after the name checks and before anything loads."""

from __future__ import annotations

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
