"""Weights resolution: missing weights fail fast (no network, a message saying what and how); the pretrained
loaders load checkpoints from local folders (tiny models saved in-process stand in for real ones)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mrbench.backends import MissingWeightsError, get_detector, get_encoder

MISSING = [
    ("encoder", "clip", {}, ["ViT-L-14/openai", "checkpoint="]),
    ("encoder", "clip", {"model": "ViT-B-32/laion2b_s34b_b79k"}, ["ViT-B-32/laion2b_s34b_b79k", "hf download"]),
    ("encoder", "clip", {"checkpoint": "/nonexistent/ckpt.safetensors"}, ["/nonexistent/ckpt.safetensors"]),
    ("encoder", "clip-hf", {}, ["openai/clip-vit-large-patch14", "hf download"]),
    ("encoder", "dino", {}, ["facebook/dinov2-small", "model=/local/folder"]),
    ("encoder", "dino-v1", {}, ["facebook/dino-vits16"]),
    ("encoder", "insightface", {}, ["antelopev2", ".insightface/models"]),
    ("encoder", "insightface", {"pack": "buffalo_l", "root": "/nonexistent"}, ["buffalo_l", "/nonexistent/models"]),
    ("encoder", "dlib", {"models_dir": "/nonexistent"}, ["mmod_human_face_detector.dat", "models_dir="]),
    ("detector", "rtdetr", {}, ["PekingU/rtdetr_r50vd"]),
]


@pytest.mark.parametrize(("kind", "name", "kwargs", "says"), MISSING, ids=[f"{m[1]}-{i}" for i, m in enumerate(MISSING)])
def test_missing_weights_fail_fast_offline(offline_env: Path, kind: str, name: str, kwargs: dict, says: list[str]) -> None:
    build = get_encoder if kind == "encoder" else get_detector
    with pytest.raises(MissingWeightsError) as err:
        build(name, **kwargs)
    # failing fast: no connection (the fixture refuses any), and nothing fetched or written into the empty caches
    assert [p for p in offline_env.rglob("*") if p.is_file()] == []
    message = str(err.value)
    assert "not available offline" in message and "To supply them" in message
    for s in says:
        assert s in message


def _mirror(offline_env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    mirror = offline_env / "mirror"
    monkeypatch.setenv("MRBENCH_WEIGHTS_DIR", str(mirror))
    return mirror


@pytest.mark.parametrize("variant", ["v2", "v1"])
def test_dino_loads_checkpoint_from_mirror(offline_env: Path, monkeypatch: pytest.MonkeyPatch, variant: str,
                                           small_images: list[Image.Image]) -> None:
    mirror = _mirror(offline_env, monkeypatch)
    tiny = get_encoder("dino-tiny", seed=0, variant=variant)
    repo = "facebook/dinov2-small" if variant == "v2" else "facebook/dino-vits16"
    tiny.model.save_pretrained(mirror / repo)  # safetensors
    crop = tiny.model.config.image_size
    name = "dino" if variant == "v2" else "dino-v1"
    real = get_encoder(name, resize=crop * 8 // 7, crop=crop)
    assert not real.info.random_weights and repo in real.info.weights
    np.testing.assert_allclose(real.embed_images(small_images), tiny.embed_images(small_images), atol=1e-6)


def test_clip_hf_loads_local_folder(offline_env: Path, small_images: list[Image.Image]) -> None:
    from mrbench.backends.clip import build_tiny_hf_clip

    model, processor = build_tiny_hf_clip(0)
    folder = offline_env / "my-clip"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    real = get_encoder("clip-hf", model=str(folder))
    tiny = get_encoder("clip-tiny", impl="hf", seed=0)
    np.testing.assert_allclose(real.embed_images(small_images), tiny.embed_images(small_images), atol=1e-6)
    np.testing.assert_allclose(real.embed_texts(["a dog", "two cats"]), tiny.embed_texts(["a dog", "two cats"]), atol=1e-6)


def test_rtdetr_loads_local_folder(offline_env: Path, small_images: list[Image.Image]) -> None:
    tiny = get_detector("rtdetr-tiny", seed=0)
    folder = offline_env / "my-rtdetr"
    tiny.model.save_pretrained(folder)
    tiny.processor.save_pretrained(folder)
    real = get_detector("rtdetr", model=str(folder))
    for a, b in zip(real.detect(small_images), tiny.detect(small_images)):
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
        assert a.labels == b.labels


def test_insightface_loads_pack_from_root(offline_env: Path, small_images: list[Image.Image]) -> None:
    from mrbench.backends.insightface_face import TINY_PACK_CFG, build_tiny_arcface, build_tiny_scrfd

    pack = offline_env / "home" / ".insightface" / "models" / "antelopev2"
    pack.mkdir(parents=True)
    cfg = {**TINY_PACK_CFG, "det_size": (64, 64)}
    (pack / "scrfd_tiny.onnx").write_bytes(build_tiny_scrfd(0, cfg))
    (pack / "glintr_tiny.onnx").write_bytes(build_tiny_arcface(0, cfg))
    real = get_encoder("insightface", det_size=(64, 64))  # found in ~/.insightface/models/antelopev2
    tiny = get_encoder("insightface-tiny", seed=0)
    assert not real.info.random_weights and "antelopev2" in real.info.weights
    for a, b in zip(real.faces(small_images), tiny.faces(small_images)):
        assert a.num_faces == b.num_faces
        np.testing.assert_allclose(a.embedding, b.embedding, atol=1e-6)


def test_insightface_explicit_root_never_falls_back(offline_env: Path) -> None:
    """An explicit root that lacks the pack fails, even when ~/.insightface holds one (no silent weight swap)."""
    from mrbench.backends.insightface_face import TINY_PACK_CFG, build_tiny_arcface, build_tiny_scrfd

    pack = offline_env / "home" / ".insightface" / "models" / "antelopev2"
    pack.mkdir(parents=True)
    cfg = {**TINY_PACK_CFG, "det_size": (64, 64)}
    (pack / "scrfd_tiny.onnx").write_bytes(build_tiny_scrfd(0, cfg))
    (pack / "glintr_tiny.onnx").write_bytes(build_tiny_arcface(0, cfg))
    elsewhere = offline_env / "elsewhere"
    with pytest.raises(MissingWeightsError) as err:
        get_encoder("insightface", root=str(elsewhere), det_size=(64, 64))
    searched = str(err.value).split("To supply them")[0]
    assert str(elsewhere / "models") in searched and ".insightface" not in searched


def test_mobilenet_seeds_torch_hub_cache(offline_env: Path) -> None:
    target = offline_env / "torch" / "hub" / "checkpoints" / "mobilenet_v2-b0353104.pth"
    assert not target.exists()
    enc = get_encoder("mobilenet_v2")
    assert target.is_file() and enc.dim == 1280 and not enc.info.random_weights
    assert "IMAGENET1K_V1" in enc.info.weights


def test_torch_load_refuses_pickled_objects(tmp_path: Path) -> None:
    """Checkpoints are read with weights_only=True: a pickle carrying an arbitrary object is refused."""
    import torch

    from mrbench.backends.mmdet_backend import load_state_dict_safely

    good = tmp_path / "good.pth"
    torch.save({"state_dict": {"w": torch.ones(2)}, "meta": {"epoch": 3}}, good)
    assert torch.equal(load_state_dict_safely(good)["w"], torch.ones(2))
    bad = tmp_path / "bad.pth"
    torch.save({"state_dict": {"w": torch.ones(2)}, "hook": _Evil()}, bad)
    with pytest.raises(ValueError, match="weights_only=True"):
        load_state_dict_safely(bad)


class _Evil:
    def __reduce__(self) -> tuple:
        return (print, ("this must never run",))


def test_importing_the_backends_changes_no_environment() -> None:
    """Only the command line switches the hub libraries offline; importing MRBench leaves os.environ alone."""
    import subprocess
    import sys

    code = ("import os; before = dict(os.environ); import mrbench.backends, mrbench.backends.weights, mrbench.config; "
            "print(sorted(set(os.environ.items()) ^ set(before.items())))")
    env = {k: v for k, v in __import__("os").environ.items()
           if not k.startswith(("HF_", "TRANSFORMERS_", "NO_ALBUMENTATIONS"))}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.strip() == "[]"
