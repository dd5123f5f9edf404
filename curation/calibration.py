"""Calibrating a near-duplicate threshold on your own photos: plant known near-duplicates, score pairs.

``bench/dedup_curve.py`` uses these to measure the precision/recall curve behind ``dedup.DEFAULT_THRESHOLD``; the
real-data tests use them to check that default.
"""

from __future__ import annotations

import io
import random
from collections.abc import Hashable, Sequence
from pathlib import Path

from PIL import Image, ImageOps

EDITS = ("crop", "mirror", "jpeg", "resize")


def plant_near_duplicates(paths: Sequence[Path], n: int, seed: int) -> tuple[list[Image.Image], list[int], list[str]]:
    """For ``n`` seeded originals among ``paths``: a crop (80-95% of each side), a mirror image, a JPEG re-encode
    (quality 20-60) and a resize (50-90%). Returns the variants, the index in ``paths`` of each one's original, and
    the edit (one of :data:`EDITS`)."""
    rng = random.Random(seed)
    variants: list[Image.Image] = []
    owner: list[int] = []
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
        owner += [i] * len(EDITS)
    return variants, owner, list(EDITS) * n


def cluster_pairs(labels: Sequence[Hashable]) -> set[tuple[int, int]]:
    """All index pairs ``(i, j)``, ``i < j``, of items sharing a label."""
    by: dict[Hashable, list[int]] = {}
    for i, lab in enumerate(labels):
        by.setdefault(lab, []).append(i)
    return {(a, b) for m in by.values() for k, a in enumerate(m) for b in m[k + 1:]}


def pair_precision_recall(predicted: Sequence[Hashable], truth: Sequence[Hashable]) -> tuple[float, float]:
    """Pair precision and recall of a predicted clustering against the true one (1.0 where a side has no pairs)."""
    p, t = cluster_pairs(predicted), cluster_pairs(truth)
    tp = len(p & t)
    return (tp / len(p) if p else 1.0), (tp / len(t) if t else 1.0)
