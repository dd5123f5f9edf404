"""IP-Adapter (tiny profile): multi-reference averaging against a manual computation, concatenation, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from baselinehelpers import make_sample, pixels, request

from mrbench.baselines.ip_adapter import IPAdapterGenerator, TinyIPAdapterGenerator
from mrbench.baselines.sdxl import generators_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ip() -> IPAdapterGenerator:
    return TinyIPAdapterGenerator(num_inference_steps=2)


def _manual_clip_embeds(gen: IPAdapterGenerator, images: list) -> torch.Tensor:
    """Each reference through the CLIP image processor and encoder on its own: pooled projected embeddings (N, D)."""
    rows = []
    with torch.no_grad():
        for im in images:
            px = gen.pipe.feature_extractor(im, return_tensors="pt").pixel_values
            rows.append(gen.pipe.image_encoder(px).image_embeds[0])
    return torch.stack(rows)


def test_mean_of_clip_embeddings_before_projection(ip: IPAdapterGenerator) -> None:
    s = make_sample(n_refs=3)
    images = [r.load() for r in s.references]
    manual = _manual_clip_embeds(ip, images)
    got = ip.reference_embeds(images)
    assert got.shape == (1, 1, manual.shape[1])
    assert torch.allclose(got[0, 0], manual.mean(0), atol=1e-5)
    # The projection sees the average: 4 tokens = LayerNorm(Linear(mean)), as the IP-Adapter checkpoint defines it.
    proj = ip.pipe.unet.encoder_hid_proj.image_projection_layers[0]
    with torch.no_grad():
        tokens = ip.pipe.unet.encoder_hid_proj([got])[0]
        lin = manual.mean(0) @ proj.image_embeds.weight.T + proj.image_embeds.bias
        expected = torch.nn.functional.layer_norm(lin.reshape(4, -1), (lin.shape[0] // 4,), proj.norm.weight, proj.norm.bias)
    assert tokens.shape == (1, 1, 4, expected.shape[-1])
    assert torch.allclose(tokens[0, 0], expected, atol=1e-5)


def test_generation_uses_the_average(ip: IPAdapterGenerator) -> None:
    s = make_sample(n_refs=2)
    (res,) = ip.generate([request(s, 7)])
    manual = _manual_clip_embeds(ip, [r.load() for r in s.references]).mean(0)[None, None]
    with torch.no_grad():
        direct = ip.pipe(prompt=s.prompt, negative_prompt=ip.config.negative_prompt, num_inference_steps=2,
                         guidance_scale=7.5, height=64, width=64, generator=generators_for([7]),
                         ip_adapter_image_embeds=[torch.cat([torch.zeros_like(manual), manual])]).images[0]
    assert np.abs(pixels(res.image) - pixels(direct)).max() <= 1
    # Reordering references does not change an average.
    s_rev = make_sample(n_refs=2)
    s_rev.references = list(reversed(s_rev.references))
    assert np.abs(pixels(ip.generate([request(s_rev, 7)])[0].image) - pixels(res.image)).max() <= 1


def test_concatenation_option() -> None:
    gen = TinyIPAdapterGenerator(num_inference_steps=2, aggregation="concat")
    s = make_sample(n_refs=3)
    embeds = gen.reference_embeds([r.load() for r in s.references])
    assert embeds.shape[:2] == (1, 3)
    with torch.no_grad():
        tokens = gen.pipe.unet.encoder_hid_proj([embeds])[0]
    assert tokens.shape[:3] == (1, 3, 4)  # 4 tokens per reference, concatenated by the attention processors
    a, b = gen.generate([request(s, 1), request(s, 1)])
    assert np.array_equal(pixels(a.image), pixels(b.image))


def test_no_references_is_a_failed_row(ip: IPAdapterGenerator) -> None:
    (res,) = ip.generate([request(make_sample(n_refs=0))])
    assert res.status == "no_references" and res.image is None
