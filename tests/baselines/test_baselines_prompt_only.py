"""The prompt-only row (tiny profile): base SDXL from the prompt alone; the references change nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from baselinehelpers import make_sample, photo, pixels, request

from mrbench.backends.base import MissingWeightsError
from mrbench.baselines.prompt_only import PromptOnlyGenerator, TinyPromptOnlyGenerator
from mrbench.baselines.sdxl import generators_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gen() -> PromptOnlyGenerator:
    return TinyPromptOnlyGenerator(num_inference_steps=2)


def test_prompt_alone_decides_the_image(gen: PromptOnlyGenerator) -> None:
    s = make_sample(n_refs=3, seed=0)
    other_refs = make_sample(n_refs=1, seed=5)  # same prompt, other references
    a, b = gen.generate([request(s, 3), request(other_refs, 3)])
    assert a.status == "ok" and a.info == {"num_references": 0}
    assert np.abs(pixels(a.image) - pixels(b.image)).max() <= 1
    with torch.no_grad():
        direct = gen.pipe(prompt=s.prompt, negative_prompt=gen.config.negative_prompt, num_inference_steps=2,
                          guidance_scale=gen.config.guidance_scale, height=64, width=64,
                          generator=generators_for([3])).images[0]
    assert np.abs(pixels(a.image) - pixels(direct)).max() <= 1
    (c,) = gen.generate([request(make_sample(prompt="a blue can in the snow"), 3)])
    assert np.abs(pixels(c.image) - pixels(a.image)).max() > 1  # the prompt is what it follows
    assert gen.describe()["random_weights"] is True and "sdxl" in gen.weights()


def test_registered_and_evaluated(tmp_path: Path) -> None:
    from mrbench.evaluation.registry import models
    from mrbench.evaluation.runner import run_eval

    assert models().get("prompt-only") is PromptOnlyGenerator
    for group in ("toy", "can"):
        (tmp_path / "photos" / group).mkdir(parents=True)
        for k in range(2):
            photo(k + (10 if group == "can" else 0)).save(tmp_path / "photos" / group / f"{k}.png")
    run = run_eval("prompt-only", f"folder:{tmp_path / 'photos'}", tmp_path / "runs", profile="tiny",
                   metrics="image_sim", images_per_prompt=1, model_args={"num_inference_steps": 2}, n_boot=10)
    assert [r["status"] for r in run.rows] == ["ok"] * 4 and run.summary["model"] == "prompt-only"
    assert run.run_dir.name.startswith("prompt-only-folder-test-2steps-cfg")


def test_missing_sdxl_named(tmp_path: Path) -> None:
    with pytest.raises(MissingWeightsError, match="SDXL") as e:
        PromptOnlyGenerator(base_model=str(tmp_path / "no-sdxl"))
    assert "no-sdxl" in str(e.value)
