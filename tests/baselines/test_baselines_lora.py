"""Per-group LoRA (tiny profile): it really trains, adapters are cached per reference set, sampling is seeded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from baselinehelpers import make_sample, pixels, request

from mrbench.baselines.lora import LoRAGenerator

pytestmark = pytest.mark.slow

OPTS = dict(num_inference_steps=2, train_steps=12, lr=2e-3, rank=8, eval_timesteps=4)


def test_defaults_follow_the_paper() -> None:
    cfg = LoRAGenerator.config_cls()
    assert cfg.rank == 32 and cfg.num_inference_steps == 30 and cfg.guidance_scale == 7.5 and cfg.scheduler == "ddim"
    assert cfg.target_modules == ["to_q", "to_k", "to_v", "to_out.0"]


def test_lora_trains_on_the_references_and_caches(tmp_path: Path) -> None:
    gen = LoRAGenerator(profile="tiny", adapter_dir=str(tmp_path), **OPTS)
    names = gen._lora_names
    assert names and all(any(t in n for t in ("to_q", "to_k", "to_v", "to_out.0")) for n in names)
    s = make_sample(n_refs=3)
    (res,) = gen.generate([request(s, 5)])
    info = gen.last_training
    assert res.status == "ok" and len(info["train_losses"]) == 12
    # The held-fixed denoising loss on the references falls after training (loss before = the base model's).
    assert info["loss_after"] < info["loss_before"] * 0.98, info
    assert any(float(v.abs().sum()) > 0 for k, v in gen.lora_state().items() if "lora_B" in k)  # B started at 0
    assert gen.prompt_for(s) == "a sks toy on a table"
    assert len(list(tmp_path.glob("*.safetensors"))) == 1

    # A new generator finds the cached adapter: no training, the same image.
    again = LoRAGenerator(profile="tiny", adapter_dir=str(tmp_path), **OPTS)
    again.train = None  # type: ignore[assignment]  # would raise if called
    (res2,) = again.generate([request(s, 5)])
    assert np.array_equal(pixels(res.image), pixels(res2.image))
    # Another reference set is another adapter.
    other = make_sample(group="toy", seed=3, n_refs=2)
    assert gen.adapter_key(other) != gen.adapter_key(s)
    (res3,) = gen.generate([request(other, 5)])
    assert res3.info["adapter"] != res.info["adapter"] and len(list(tmp_path.glob("*.safetensors"))) == 2
    assert not np.array_equal(pixels(res3.image), pixels(res.image))
