"""Per-group LoRA (tiny profile): it really trains, adapters are cached per reference set, sampling is seeded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from baselinehelpers import make_sample, photo, pixels, request

from mrbench.baselines.lora import LoRAGenerator, TinyLoRAGenerator
from mrbench.evaluation.generator import ImageRef, Sample

pytestmark = pytest.mark.slow

OPTS = dict(num_inference_steps=2, train_steps=12, lr=2e-3, rank=8, eval_timesteps=4)


def test_defaults_follow_the_paper_and_the_diffusers_recipe() -> None:
    cfg = LoRAGenerator.config_cls()
    assert cfg.rank == 32 and cfg.num_inference_steps == 30 and cfg.guidance_scale == 7.5 and cfg.scheduler == "ddim"
    assert cfg.target_modules == ["to_q", "to_k", "to_v", "to_out.0"]
    # diffusers examples/dreambooth/train_dreambooth_lora_sdxl.py with its README_sdxl.md command.
    assert (cfg.train_batch_size, cfg.gradient_accumulation_steps, cfg.train_steps, cfg.lr) == (1, 4, 500, 1e-4)
    assert (cfg.weight_decay, cfg.adam_betas, cfg.adam_epsilon, cfg.max_grad_norm) == (1e-4, [0.9, 0.999], 1e-8, 1.0)
    assert cfg.init_lora_weights == "gaussian" and cfg.alpha == cfg.rank
    assert cfg.center_crop is False and cfg.random_flip is False


def _wide_sample(group: str = "wide") -> Sample:
    """References of different, non-square sizes (so crops and original sizes are visible in time_ids)."""
    sizes = [(96, 64), (64, 80), (120, 72)]
    refs = [ImageRef(f"{group}/{k}", group, (lambda k=k, sz=sz: photo(40 + k, size=64).resize(sz)))
            for k, sz in enumerate(sizes)]
    return Sample(id=f"{group}/0", group=group, split="test", prompt="a toy", references=refs,
                  target=ImageRef(f"{group}/t", group, lambda: photo(39)), class_token="toy",
                  identifier_prompt="a sks toy")


def test_recipe_accumulation_init_and_micro_conditioning(tmp_path: Path) -> None:
    import torch

    gen = TinyLoRAGenerator(adapter_dir=str(tmp_path), num_inference_steps=2, train_steps=2, rank=8,
                        eval_timesteps=2, gradient_accumulation_steps=4)  # the recipe's (tiny's default is 1)
    # Gaussian init (peft: A ~ N(0, 1/r), B = 0), not peft's default Kaiming-uniform A.
    a = torch.cat([v.flatten() for k, v in gen.lora_state().items() if "lora_A" in k])
    assert abs(float(a.std()) - 1 / 8) < 0.02 and float(a.abs().max()) > 0.3  # a uniform(+-1/sqrt(fan_in)) stays small
    assert all(float(v.abs().sum()) == 0 for k, v in gen.lora_state().items() if "lora_B" in k)

    forwards = []
    hook = gen.pipe.unet.register_forward_hook(lambda m, i, o: forwards.append(m.training))
    try:
        info = gen.train([r.load() for r in _wide_sample().references], "a photo of sks toy")
    finally:
        hook.remove()
    # 2 optimiser steps, batch 1, accumulation 4, 3 references: each epoch (3 images) ends in a step of its own, as
    # the diffusers script's accelerate loop does; 2 x 4 = 8 images would be a step across the epoch end.
    assert forwards.count(True) == 2 * 3
    assert info["images_seen"] == 6 and len(info["train_losses"]) == 2
    res = gen.size[0]
    rows = info["time_ids"]
    assert [tuple(r[:2]) for r in rows] == [(64, 96), (80, 64), (72, 120)]  # real original (height, width)
    for h, w, top, left, th, tw in rows:
        scale = res / min(h, w)
        assert (th, tw) == (res, res)
        assert 0 <= top <= round(h * scale) - res and 0 <= left <= round(w * scale) - res
    assert any(r[2] + r[3] > 0 for r in rows)  # a crop offset on the long side
    # Random crops depend on the seed; the centre-crop option puts them in the middle.
    centre = TinyLoRAGenerator(num_inference_steps=2, train_steps=0, rank=8, center_crop=True, eval_timesteps=1)
    imgs = [r.load() for r in _wide_sample().references]
    seeds = [gen.training_batch(imgs, "p", torch.Generator().manual_seed(s))["time_ids"][:, 2:4].tolist() for s in range(6)]
    assert len({str(x) for x in seeds}) > 1
    c = centre.train(imgs, "p")["time_ids"]
    assert [r[2:4] for r in c] == [[0, round((round(96 * res / 64) - res) / 2)], [round((round(80 * res / 64) - res) / 2), 0],
                                   [0, round((round(120 * res / 72) - res) / 2)]]


def test_class_noun_never_the_identity(tmp_path: Path) -> None:
    """A celebrity group from a release trains and samples with "person", never the identity's name (its tag)."""
    import hashlib

    from mrbench.curation.release_format import release_file, release_table
    from mrbench.evaluation.benchmarks import build_benchmark
    from mrbench.evaluation.generator import image_bytes
    from mrbench.shards import write_parquet_atomic

    rows = []
    for k in range(3):
        im = photo(k)
        data = image_bytes(im)
        rows.append({"id": f"g0_{k}", "url": f"http://127.0.0.1/{k}.png", "caption": "a woman at a press conference",
                     "tags": ["Eileen Collins"], "category": "celebrity", "group": "g0", "split": "held_out",
                     "role": "target" if k == 0 else "reference", "image": data, "format": "png", "width": 64,
                     "height": 64, "sha256": hashlib.sha256(data).hexdigest(), "encoding": "original"})
    write_parquet_atomic(release_table(rows), tmp_path / "rel" / release_file("held_out", 0, 1))
    (s,) = build_benchmark(f"mrbench:{tmp_path / 'rel'}").samples()
    assert s.class_token == "person"
    gen = TinyLoRAGenerator(adapter_dir=str(tmp_path / "ad"), num_inference_steps=2, train_steps=1, rank=4,
                        gradient_accumulation_steps=1, eval_timesteps=1)
    (res,) = gen.generate([request(s, 0)])
    assert res.status == "ok" and gen.last_training["prompt"] == "a photo of sks person"
    assert "Eileen" not in gen.prompt_for(s) and gen.prompt_for(s) == "a woman at a press conference, sks person"


def test_lora_trains_on_the_references_and_caches(tmp_path: Path) -> None:
    gen = TinyLoRAGenerator(adapter_dir=str(tmp_path), **OPTS)
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
    again = TinyLoRAGenerator(adapter_dir=str(tmp_path), **OPTS)
    again.train = None  # type: ignore[assignment]  # would raise if called
    (res2,) = again.generate([request(s, 5)])
    assert np.array_equal(pixels(res.image), pixels(res2.image))
    # Another reference set is another adapter.
    other = make_sample(group="toy", seed=3, n_refs=2)
    assert gen.adapter_key(other) != gen.adapter_key(s)
    (res3,) = gen.generate([request(other, 5)])
    assert res3.info["adapter"] != res.info["adapter"] and len(list(tmp_path.glob("*.safetensors"))) == 2
    assert not np.array_equal(pixels(res3.image), pixels(res.image))
