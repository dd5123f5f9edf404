"""EasyRef (tiny profile): architecture as the paper and code describe, determinism, authors' checkpoint layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from baselinehelpers import make_sample, pixels, request

from mrbench.baselines.attention import EasyRefAttnProcessor
from mrbench.baselines.easyref import (
    EasyRefGenerator, MLPProjector, TinyEasyRefGenerator, mllm_key_to_current, pixel_bounds,
)
from mrbench.baselines.tiny import tiny_qwen2vl

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def easyref() -> EasyRefGenerator:
    return TinyEasyRefGenerator(num_inference_steps=2)


def test_architecture(easyref: EasyRefGenerator) -> None:
    full = tiny_qwen2vl(easyref.config.tiny_seed + 20)
    n = full.config.text_config.num_hidden_layers
    assert len(easyref.multimodal_llm.model.language_model.layers) == n - 1  # the MLLM without its last layer
    # The final layer starts as a copy of the MLLM's last layer.
    last = full.model.language_model.layers[-1].state_dict()
    for k, v in easyref.mllm_final_layer.layers[0].state_dict().items():
        assert torch.equal(v, last[k])
    tokens = easyref.mllm_final_layer.reference_tokens
    assert tuple(tokens.shape) == (64, 64) and 0.05 < float(tokens.std()) < 0.15  # 0.1 * N(0, 1)
    proj = easyref.image_proj_model
    assert isinstance(proj, MLPProjector)
    assert [type(m).__name__ for m in proj.proj] == ["Linear", "GELU", "Linear", "LayerNorm"]
    assert (proj.proj[0].in_features, proj.proj[0].out_features, proj.proj[2].out_features) == (64, 64, 64)
    procs = easyref.pipe.unet.attn_processors
    cross = [p for n, p in procs.items() if n.endswith("attn2.processor")]
    assert cross and all(isinstance(p, EasyRefAttnProcessor) and hasattr(p, "to_k_ip") for p in cross)
    assert not any(isinstance(p, EasyRefAttnProcessor) for n, p in procs.items() if n.endswith("attn1.processor"))
    assert pixel_bounds(336) == (94864, 113680)  # SPEC: cond_image_size 336


def _final_layer_outputs(layer, hidden: torch.Tensor, mask: torch.Tensor, bump_index: int):
    """The layer's output, and its output after adding 1.0 to the reference token at ``bump_index``."""
    base = layer(hidden, mask)
    with torch.no_grad():
        saved = layer.reference_tokens[bump_index].clone()
        layer.reference_tokens[bump_index] += 1.0
        moved = layer(hidden, mask)
        layer.reference_tokens[bump_index].copy_(saved)
    return base, moved


def test_final_layer_is_causal_by_default(easyref: EasyRefGenerator) -> None:
    # Evidence (issue 12): the authors set is_causal=False, but their pinned transformers 4.45.2 SDPA path never reads
    # it and builds a causal mask, so the released checkpoints were trained causal. A later token therefore cannot
    # change an earlier position's output, while an earlier one changes every later one.
    assert easyref.config.final_layer_attention == "causal"
    layer = easyref.mllm_final_layer
    hidden = torch.randn(1, 7, 64, generator=torch.Generator().manual_seed(0))
    mask = torch.ones(1, 7, dtype=torch.long)
    base, moved = _final_layer_outputs(layer, hidden, mask, bump_index=-1)
    assert base.shape == (1, 64, 64)
    assert torch.equal(base[0, :-1], moved[0, :-1])  # the last reference token is seen by no earlier position
    assert not torch.allclose(base[0, -1], moved[0, -1])
    base, moved = _final_layer_outputs(layer, hidden, mask, bump_index=10)
    assert torch.equal(base[0, :10], moved[0, :10]) and not torch.allclose(base[0, 11:], moved[0, 11:])
    # The MLLM sequence precedes every reference token: it changes all of them.
    other = hidden.clone()
    other[0, -1] += 1.0
    assert not torch.allclose(layer(other, mask)[0, 0], base[0, 0])
    # Padding is masked: changing a padded position changes nothing.
    padded = torch.cat([hidden, torch.randn(1, 2, 64)], dim=1)
    pmask = torch.tensor([[1] * 7 + [0, 0]])
    out1 = layer(padded, pmask)
    padded[:, -1] += 5.0
    assert torch.allclose(out1, layer(padded, pmask), atol=1e-6)


def test_final_layer_bidirectional_option() -> None:
    gen = TinyEasyRefGenerator(num_inference_steps=2, final_layer_attention="bidirectional")
    layer = gen.mllm_final_layer
    hidden = torch.randn(1, 7, 64, generator=torch.Generator().manual_seed(0))
    mask = torch.ones(1, 7, dtype=torch.long)
    base, moved = _final_layer_outputs(layer, hidden, mask, bump_index=-1)
    # The first reference token sees the last one: attention is bidirectional among the appended tokens.
    assert not torch.allclose(base[0, 0], moved[0, 0])
    padded = torch.cat([hidden, torch.randn(1, 2, 64)], dim=1)
    pmask = torch.tensor([[1] * 7 + [0, 0]])
    out1 = layer(padded, pmask)
    padded[:, -1] += 5.0
    assert torch.allclose(out1, layer(padded, pmask), atol=1e-6)
    # Same weights (same seeds), different masks: different reference tokens.
    causal = TinyEasyRefGenerator(num_inference_steps=2)
    assert torch.equal(causal.mllm_final_layer.reference_tokens, layer.reference_tokens)
    assert not torch.allclose(causal.mllm_final_layer(hidden, mask), base)
    with pytest.raises(Exception, match="final_layer_attention"):
        TinyEasyRefGenerator(final_layer_attention="full")


def test_same_seed_same_image(easyref: EasyRefGenerator) -> None:
    s = make_sample()
    a, b = easyref.generate([request(s, 3), request(s, 4)])
    (a2,) = easyref.generate([request(s, 3)])
    (a3,) = easyref.generate([request(s, 3)])
    assert a.status == "ok" and a.image.size == (64, 64)
    assert np.array_equal(pixels(a2.image), pixels(a3.image))  # same request, same batch: bit-identical
    easyref._last_refs = None  # the seeds of a sample reuse its reference tokens: a fresh encoding is identical
    (a4,) = easyref.generate([request(s, 3)])
    assert np.array_equal(pixels(a2.image), pixels(a4.image))
    # In a batch with another request, the same seed gives the same image up to float rounding of batched kernels.
    assert np.abs(pixels(a.image) - pixels(a2.image)).max() <= 2
    assert np.abs(pixels(a.image) - pixels(b.image)).mean() > 5  # another seed, another image
    # The references matter: other references, other tokens.
    other = make_sample(seed=5)
    t1 = easyref.reference_tokens([r.load() for r in s.references], s.prompt)
    t2 = easyref.reference_tokens([r.load() for r in other.references], s.prompt)
    assert t1.shape == (1, 64, 64) and not torch.allclose(t1, t2)


def _perturb(gen: EasyRefGenerator) -> None:
    g = torch.Generator().manual_seed(123)
    with torch.no_grad():
        for module in (gen.image_proj_model, gen.mllm_final_layer, gen.multimodal_llm, gen.pipe.unet):
            for p in module.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=g).to(p.dtype))
    gen._uncond = gen._last_refs = None  # cached encodings of the old weights


def test_checkpoint_round_trip_in_authors_layout(easyref: EasyRefGenerator, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    s = make_sample()
    refs = [r.load() for r in s.references]
    tokens0 = easyref.reference_tokens(refs, s.prompt)
    (image0,) = easyref.generate([request(s, 1)])
    sd = easyref.authors_state_dict()
    prefixes = {k.split(".")[0] for k in sd}
    assert prefixes == {"image_proj_model", "mllm_final_layer", "multimodal_llm", "unet"}
    assert "mllm_final_layer.reference_tokens" in sd and "image_proj_model.proj.3.weight" in sd
    assert any(k.startswith("multimodal_llm.model.layers.0.") for k in sd)  # transformers < 4.50 names
    assert any(k.startswith("multimodal_llm.visual.") for k in sd)
    assert not any("language_model" in k for k in sd)
    assert any(k.endswith("attn2.processor.to_k_ip.weight") for k in sd)
    assert mllm_key_to_current("model.layers.0.mlp.up_proj.weight") == "model.language_model.layers.0.mlp.up_proj.weight"

    st = tmp_path / "easyref.safetensors"
    save_file(sd, str(st))
    pt = tmp_path / "easyref_deepspeed.pt"
    torch.save({"module": sd, "ds_version": "0.14"}, str(pt))
    for path in (st, pt):
        _perturb(easyref)
        assert not torch.allclose(easyref.reference_tokens(refs, s.prompt), tokens0)
        report = easyref.load_checkpoint(path)
        assert report["unet"]["loaded"] > 0 and report["multimodal_llm"]["loaded"] > 0
        assert torch.equal(easyref.reference_tokens(refs, s.prompt), tokens0)
        (image1,) = easyref.generate([request(s, 1)])
        assert np.array_equal(pixels(image1.image), pixels(image0.image))


def test_lora_layout_and_detection(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    gen = TinyEasyRefGenerator(num_inference_steps=2, use_lora=True, lora_rank=4)
    procs = gen.pipe.unet.attn_processors
    assert all(isinstance(p, EasyRefAttnProcessor) and p.lora_rank == 4 for p in procs.values())
    sd = gen.authors_state_dict()
    assert any(k.endswith("attn1.processor.to_q_lora.down.weight") for k in sd)
    assert any(k.endswith("attn2.processor.to_out_lora.up.weight") for k in sd)
    path = tmp_path / "lora.safetensors"
    save_file(sd, str(path))
    auto = TinyEasyRefGenerator(num_inference_steps=2, ckpt=str(path), lora_rank=4)
    assert auto.use_lora is True  # detected from the checkpoint's keys
    s = make_sample()
    assert np.array_equal(pixels(auto.generate([request(s, 2)])[0].image), pixels(gen.generate([request(s, 2)])[0].image))
    with pytest.raises(ValueError, match="use_lora"):
        TinyEasyRefGenerator(num_inference_steps=2, ckpt=str(path), use_lora=False)
