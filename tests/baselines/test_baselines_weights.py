"""Pretrained weights (off by default: MRBENCH_WEIGHTS=1 with SDXL, Qwen2-VL-2B-Instruct, h94/IP-Adapter and the
EasyRef checkpoint in the HF cache, or passed as paths through MRBENCH_EASYREF_CKPT etc.)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from baselinehelpers import make_sample, pixels, request

pytestmark = [pytest.mark.weights, pytest.mark.slow]

SMALL = dict(num_inference_steps=4, height=512, width=512)


def test_easyref_pretrained() -> None:
    from mrbench.baselines.easyref import EasyRefGenerator

    ckpt = os.environ.get("MRBENCH_EASYREF_CKPT", "zongzhuofan/EasyRef")
    gen = EasyRefGenerator(ckpt=ckpt, **SMALL)
    assert gen.multimodal_llm.config.text_config.hidden_size == 1536
    assert len(gen.multimodal_llm.model.language_model.layers) == 27  # 28 layers without the last
    assert tuple(gen.mllm_final_layer.reference_tokens.shape) == (64, 1536)
    assert gen.image_proj_model.proj[2].out_features == 2048
    s = make_sample(n_refs=3)
    a, b = gen.generate([request(s, 1), request(s, 1)])
    assert a.status == "ok" and a.image.size == (512, 512)
    assert np.array_equal(pixels(a.image), pixels(b.image))


def test_ip_adapter_pretrained() -> None:
    from mrbench.baselines.ip_adapter import IPAdapterGenerator

    gen = IPAdapterGenerator(**SMALL)
    s = make_sample(n_refs=3)
    embeds = gen.reference_embeds([r.load() for r in s.references])
    assert embeds.shape[:2] == (1, 1) and embeds.shape[-1] == 1280  # ViT-bigG projection
    (res,) = gen.generate([request(s, 0)])
    assert res.status == "ok"


def test_lora_pretrained(tmp_path) -> None:
    from mrbench.baselines.lora import LoRAGenerator

    gen = LoRAGenerator(adapter_dir=str(tmp_path), train_steps=10, resolution=512, **SMALL)
    (res,) = gen.generate([request(make_sample(n_refs=3), 0)])
    assert res.status == "ok" and gen.last_training["loss_after"] < gen.last_training["loss_before"]
