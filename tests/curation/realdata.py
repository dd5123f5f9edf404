"""Real-photo helpers shared by the slow real-data tests (embeddings cached for the test session)."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from PIL import Image

from shared_paths import shared_data

@functools.lru_cache(maxsize=None)
def encoder(name: str = "mobilenet_v2"):
    from mrbench.curation.embed import build_encoder

    return build_encoder(name)

@functools.lru_cache(maxsize=None)
def dreambench() -> tuple[tuple[Path, ...], tuple[str, ...], np.ndarray]:
    """All DreamBench photos, their subjects (folder names; never shown to the code under test) and embeddings."""
    paths = tuple(sorted(shared_data("dreambench").glob("*/*.jpg")))
    images = [Image.open(p).convert("RGB") for p in paths]
    return paths, tuple(p.parent.name for p in paths), encoder().embed_images(images)

