"""CLIP scores from our code equal torchmetrics' CLIPScore on the same model and inputs; local open_clip checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mrbench.backends import BackendInfo, get_encoder
from mrbench.backends.clip import HFClipEncoder, build_tiny_hf_clip

# Captions within CLIP's 77 tokens; test_long_caption_sliced_as_torchmetrics covers longer ones.
TEXTS = ["a photo of a dog", "a red backpack", "an old teapot on a wooden table", "a cat"]
SEED = 2  # with this seed the random model gives one negative and three positive pairs: the clamp is exercised


def _tensor_features_clip(model: torch.nn.Module) -> torch.nn.Module:
    """torchmetrics 1.9 expects ``get_*_features`` to return tensors; transformers 5 returns ModelOutputs.

    Same model, same weights: only the return value is unwrapped to the projected features (``pooler_output``).
    """
    cls = type(model)

    class TensorFeatures(cls):  # type: ignore[misc, valid-type]
        def get_image_features(self, *a, **k):  # noqa: ANN002, ANN003, ANN202
            out = super().get_image_features(*a, **k)
            return out if isinstance(out, torch.Tensor) else out.pooler_output

        def get_text_features(self, *a, **k):  # noqa: ANN002, ANN003, ANN202
            out = super().get_text_features(*a, **k)
            return out if isinstance(out, torch.Tensor) else out.pooler_output

    model.__class__ = TensorFeatures
    return model


@pytest.fixture(scope="module")
def pairs() -> tuple[list[Image.Image], list[str]]:
    rng = np.random.default_rng(3)
    images = [Image.fromarray(rng.integers(0, 256, (48 + 5 * i, 40 + 3 * i, 3), dtype=np.uint8)) for i in range(len(TEXTS))]
    return images, TEXTS


def test_clip_score_equals_torchmetrics(pairs: tuple[list[Image.Image], list[str]]) -> None:
    from torchmetrics.functional.multimodal.clip_score import _clip_score_update
    from torchmetrics.multimodal.clip_score import CLIPScore

    images, texts = pairs
    model, processor = build_tiny_hf_clip(SEED)
    ours = HFClipEncoder.from_objects(model, processor, BackendInfo("clip-tiny", f"random(seed={SEED})", random_weights=True))
    raw = ours.clip_scores(images, texts)
    assert raw.shape == (len(texts),) and raw.dtype == np.float32
    assert (raw < 0).any() and raw.mean() > 0

    # torchmetrics runs its own copy of the same weights through its own preprocessing and feature code.
    tm_model, tm_processor = build_tiny_hf_clip(SEED)
    tm_model = _tensor_features_clip(tm_model)
    tensors = [torch.from_numpy(np.array(im)).permute(2, 0, 1).contiguous() for im in images]
    per_pair, n = _clip_score_update(tensors, texts, tm_model, tm_processor)  # 100 * cosine, before the clamp
    assert n == len(texts)
    np.testing.assert_allclose(100 * raw, per_pair.detach().numpy(), atol=1e-3)
    for i in range(len(texts)):  # the public metric: 100 * max(mean cosine, 0)
        metric = CLIPScore(model_name_or_path=lambda: (tm_model, tm_processor))
        metric.update(tensors[i], texts[i])
        assert 100 * max(float(raw[i]), 0.0) == pytest.approx(float(metric.compute()), abs=1e-3)
    metric = CLIPScore(model_name_or_path=lambda: (tm_model, tm_processor))
    metric.update(tensors, texts)
    assert 100 * float(raw.mean()) == pytest.approx(float(metric.compute()), abs=1e-3)


def test_registry_tiny_hf_clip_matches_direct_build(pairs: tuple[list[Image.Image], list[str]]) -> None:
    images, texts = pairs
    via_registry = get_encoder("clip-tiny", impl="hf", seed=0)
    model, processor = build_tiny_hf_clip(0)
    direct = HFClipEncoder.from_objects(model, processor, via_registry.info)
    assert np.array_equal(via_registry.clip_scores(images, texts), direct.clip_scores(images, texts))
    assert via_registry.info.random_weights


def test_open_clip_local_checkpoint_loads_same_weights(tmp_path: Path, pairs: tuple[list[Image.Image], list[str]]) -> None:
    """A local open_clip export (``local-dir:``, safetensors) goes through the ``clip`` backend's loader."""
    import json

    from safetensors.torch import save_file

    from mrbench.backends.clip import TINY_OPEN_CLIP_CFG

    images, texts = pairs
    tiny = get_encoder("clip-tiny", seed=0)
    (tmp_path / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": TINY_OPEN_CLIP_CFG, "preprocess_cfg": {"size": 32}}))
    save_file({k: v.contiguous() for k, v in tiny.model.state_dict().items()}, str(tmp_path / "open_clip_model.safetensors"))
    loaded = get_encoder("clip", model=f"local-dir:{tmp_path}")
    assert not loaded.info.random_weights and loaded.dim == 16
    np.testing.assert_allclose(loaded.embed_images(images), tiny.embed_images(images), atol=1e-6)
    np.testing.assert_allclose(loaded.embed_texts(texts), tiny.embed_texts(texts), atol=1e-6)
    assert loaded.preprocess_cfg["mean"] == pytest.approx((0.48145466, 0.4578275, 0.40821073))


LONG = ("a very long caption about a small red toy robot standing on a wooden kitchen table next to a cup of coffee, "
        "a plate of cookies, a folded newspaper, an old brass lamp, three green apples, a blue ceramic vase with "
        "yellow tulips, a pair of reading glasses and a sleeping grey cat, photographed in warm morning light through a tall window "
        "with white curtains, while outside the garden shows a wet lawn, a wooden fence and two children on bicycles")


def test_long_caption_sliced_as_torchmetrics(pairs: tuple[list[Image.Image], list[str]]) -> None:
    """A caption over 77 tokens: ids are sliced to 77 (end-of-text token cut), exactly as torchmetrics does."""
    from torchmetrics.functional.multimodal.clip_score import _clip_score_update

    images, _ = pairs
    texts = [LONG, "a cat"]  # one long and one short caption in the same padded batch
    model, processor = build_tiny_hf_clip(SEED)
    assert processor.tokenizer(LONG, return_tensors="pt")["input_ids"].shape[-1] > 77
    ours = HFClipEncoder.from_objects(model, processor, BackendInfo("clip-tiny", f"random(seed={SEED})", random_weights=True))
    raw = ours.clip_scores(images[:2], texts)
    tm_model, tm_processor = build_tiny_hf_clip(SEED)
    tm_model = _tensor_features_clip(tm_model)
    tensors = [torch.from_numpy(np.array(im)).permute(2, 0, 1).contiguous() for im in images[:2]]
    per_pair, _ = _clip_score_update(tensors, texts, tm_model, tm_processor)
    np.testing.assert_allclose(100 * raw, per_pair.detach().numpy(), atol=1e-3)
    # Truncating in the tokenizer instead (end-of-text token kept at slot 77) scores another text.
    enc = processor(text=[LONG], return_tensors="pt", padding=True, truncation=True, max_length=77)
    with torch.no_grad():
        kept_eot = model.get_text_features(**enc)
    kept_eot = kept_eot if isinstance(kept_eot, torch.Tensor) else kept_eot.pooler_output
    kept_eot = (kept_eot / kept_eot.norm(dim=-1, keepdim=True)).numpy()[0]
    assert not np.allclose(ours.embed_texts([LONG])[0], kept_eot, atol=1e-4)

    # open_clip (the default ``clip`` backend): the same 77 ids torchmetrics keeps, no end-of-text token moved in.
    tiny = get_encoder("clip-tiny", seed=0)
    sliced = processor.tokenizer(LONG, return_tensors="pt")["input_ids"][0, :77]
    captured: list[torch.Tensor] = []
    encode_text = tiny.model.encode_text
    tiny.model.encode_text = lambda tokens, *a, **k: (captured.append(tokens.clone()), encode_text(tokens, *a, **k))[1]
    try:
        tiny.embed_texts([LONG])
    finally:
        tiny.model.encode_text = encode_text
    assert captured[0].shape == (1, 77) and torch.equal(captured[0][0].cpu(), sliced)
    assert int(captured[0][0, -1]) != processor.tokenizer.eos_token_id
