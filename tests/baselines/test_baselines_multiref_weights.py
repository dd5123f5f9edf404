"""flux2, qwen-image-edit, omnigen with pretrained weights (off by default: MRBENCH_WEIGHTS=1 with the diffusers
repos in the HF cache or $MRBENCH_WEIGHTS_DIR; a GPU with room for them, or offload=true)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from baselinehelpers import make_sample, pixels, request

from mrbench.evaluation.runner import build_generator

pytestmark = [pytest.mark.weights, pytest.mark.slow]

SMALL = dict(num_inference_steps=4, height=512, width=512, offload=os.environ.get("MRBENCH_OFFLOAD") == "1")


@pytest.mark.parametrize("name,args", [("flux2", {}), ("flux2", {"variant": "klein"}), ("qwen-image-edit", {}),
                                       ("omnigen", {})], ids=["flux2-dev", "flux2-klein", "qwen-image-edit", "omnigen"])
def test_pretrained_same_seed_same_image(name: str, args: dict) -> None:
    gen = build_generator(name, "default", dict(args, **SMALL))
    assert not gen.random_weights
    s = make_sample(n_refs=4)
    (a,) = gen.generate([request(s, 1)])
    (b,) = gen.generate([request(s, 1)])
    assert a.status == "ok" and a.image.size == (512, 512)
    assert a.info["num_references"] == 4 and len(a.info["references_used"]) == min(4, gen.max_references)
    if gen.device == "cpu":
        assert np.array_equal(pixels(a.image), pixels(b.image))
    else:  # GPU kernels may differ in the last bits between calls
        assert np.abs(pixels(a.image) - pixels(b.image)).mean() < 1.0
