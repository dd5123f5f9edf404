"""Rerunning a finished eval re-reads its rows: the generator's weights are not loaded again, and the tiny
profile's option defaults (few sampling steps) name the run."""

from __future__ import annotations

from pathlib import Path

import pytest

from mrbench.evaluation import runner
from mrbench.evaluation.runner import run_eval


def test_finished_run_is_not_loaded_again(tmp_path: Path, mini_release: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    args = dict(model="ip-adapter", benchmark=f"mrbench:{mini_release}", out=tmp_path, profile="tiny", limit=1,
                images_per_prompt=1, metrics=["image_sim@dino-tiny"])
    first = run_eval(**args)
    assert first.timing["generated_images"] == 1
    assert "-4steps-" in first.run_dir.name  # the tiny profile's default, not the paper's 30

    def no_build(*a: object, **k: object) -> None:
        raise AssertionError("the generator was built for a finished run")

    monkeypatch.setattr(runner, "build_generator", no_build)
    again = run_eval(**args)
    assert again.run_dir == first.run_dir and again.timing["resumed_rows"] == 1
    assert again.rows == first.rows
