"""Real-photo helpers shared by the slow real-data tests (embeddings cached for the test session)."""

from __future__ import annotations

import functools
import io
import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

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


def near_duplicates(paths: tuple[Path, ...], n: int, seed: int) -> tuple[list[Image.Image], list[int], list[str]]:
    """For ``n`` seeded originals: a crop (80-95% of each side), a mirror, a JPEG re-encode (quality 20-60) and a
    resize (50-90%). Returns the variants, the index of each one's original, and the kind of edit."""
    rng = random.Random(seed)
    variants, owner, kinds = [], [], []
    for i in sorted(rng.sample(range(len(paths)), n)):
        im = Image.open(paths[i]).convert("RGB")
        w, h = im.size
        fw, fh = rng.uniform(0.8, 0.95), rng.uniform(0.8, 0.95)
        x0, y0 = rng.uniform(0, 1 - fw) * w, rng.uniform(0, 1 - fh) * h
        variants.append(im.crop((round(x0), round(y0), round(x0 + fw * w), round(y0 + fh * h))))
        variants.append(ImageOps.mirror(im))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=rng.randint(20, 60))
        variants.append(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
        s = rng.uniform(0.5, 0.9)
        variants.append(im.resize((round(w * s), round(h * s)), Image.BICUBIC))
        owner += [i] * 4
        kinds += ["crop", "mirror", "jpeg", "resize"]
    return variants, owner, kinds


def cluster_pairs(labels) -> set[tuple[int, int]]:
    """All pairs (i < j) of items sharing a label."""
    by: dict = {}
    for i, lab in enumerate(labels):
        by.setdefault(lab, []).append(i)
    return {(a, b) for m in by.values() for k, a in enumerate(m) for b in m[k + 1:]}


def pair_precision_recall(predicted, truth) -> tuple[float, float]:
    p, t = cluster_pairs(predicted), cluster_pairs(truth)
    tp = len(p & t)
    return (tp / len(p) if p else 1.0), (tp / len(t) if t else 1.0)
