"""Calibrating cosine thresholds: plant known near-duplicates, score labelled pairs, pick an operating point.

``mrbench calibrate`` (:mod:`mrbench.curation.calibrate`) embeds a labelled folder and measures here, for every
threshold, the pair precision / recall / F1 of "same label" (or "listed near-duplicate") against every other pair,
and the threshold a criterion recommends. ``bench/dedup_curve.py`` and the real-data tests use the planted
near-duplicates to check the near-duplicate default.
"""

from __future__ import annotations

import io
import random
from collections.abc import Hashable, Sequence
from typing import Any
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
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


# --- Threshold calibration on a labelled folder (``mrbench calibrate``) -------------------------------------------

CRITERIA = ("max_f1", "precision>=P")


@dataclass
class PairScores:
    """Cosines of the pairs that should be "same" (same label, or listed near-duplicates) and of the rest."""

    same: np.ndarray
    different: np.ndarray
    hardest: list[tuple[str, str, float, bool]] = field(default_factory=list)  # (a, b, cosine, same): worst cases


@dataclass
class Curve:
    """Pair precision, recall, F1 and false-match rate (different pairs at or above) along the thresholds."""

    thresholds: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    false_match_rate: np.ndarray
    positives: int
    negatives: int


@dataclass
class Recommendation:
    """The recommended threshold and its measured operating point."""

    threshold: float
    precision: float
    recall: float
    f1: float
    false_match_rate: float
    criterion: str


def _hardest(sim: np.ndarray, i: np.ndarray, j: np.ndarray, same: np.ndarray, names: Sequence[str],
             n: int) -> list[tuple[str, str, float, bool]]:
    """The ``n`` least similar "same" pairs and the ``n`` most similar "different" pairs."""
    out = []
    for want, order in ((True, np.argsort(sim, kind="stable")), (False, np.argsort(-sim, kind="stable"))):
        picked = [k for k in order if bool(same[k]) == want][:n]
        out += [(names[i[k]], names[j[k]], float(sim[k]), want) for k in picked]
    return out


def label_pair_scores(emb: np.ndarray, labels: Sequence[Hashable], names: Sequence[str] | None = None,
                      hardest: int = 6) -> PairScores:
    """Cosines of every pair of rows of ``emb`` (L2-normalised), split by whether their labels agree."""
    i, j = np.triu_indices(len(labels), 1)
    sim = np.einsum("ij,ij->i", emb[i].astype(np.float64), emb[j].astype(np.float64))
    lab = np.asarray([str(x) for x in labels])
    same = lab[i] == lab[j]
    names = list(names) if names is not None else [str(k) for k in range(len(labels))]
    return PairScores(sim[same], sim[~same], _hardest(sim, i, j, same, names, hardest))


def near_duplicate_pair_scores(emb: np.ndarray, pairs: set[tuple[int, int]], names: Sequence[str] | None = None,
                               hardest: int = 6) -> PairScores:
    """Cosines of the listed near-duplicate ``pairs`` (index pairs, i < j) against every other pair of images."""
    i, j = np.triu_indices(len(emb), 1)
    sim = np.einsum("ij,ij->i", emb[i].astype(np.float64), emb[j].astype(np.float64))
    listed = np.zeros(len(i), bool)
    if pairs:
        n = len(emb)
        wanted = np.array(sorted(a * n + b for a, b in pairs), np.int64)
        listed = np.isin(i.astype(np.int64) * n + j, wanted)
    names = list(names) if names is not None else [str(k) for k in range(len(emb))]
    return PairScores(sim[listed], sim[~listed], _hardest(sim, i, j, listed, names, hardest))


def threshold_curve(scores: PairScores, step: float = 0.001) -> Curve:
    """Pair precision / recall / F1 at every threshold on a ``step`` grid over the observed cosines.

    A pair at or above the threshold is predicted "same". Precision is 1.0 where nothing is predicted.
    """
    allv = np.concatenate([scores.same, scores.different])
    if allv.size == 0:
        raise ValueError("no pairs to calibrate on")
    lo = max(-1.0, np.floor((allv.min() - step) / step) * step)
    hi = min(1.0, np.ceil((allv.max() + step) / step) * step)  # cosines: the grid stays in [-1, 1]
    t = np.round(np.arange(lo, hi + step / 2, step), 6)
    pos, neg = np.sort(scores.same), np.sort(scores.different)
    tp = pos.size - np.searchsorted(pos, t, side="left")
    fp = neg.size - np.searchsorted(neg, t, side="left")
    predicted = tp + fp
    precision = np.where(predicted > 0, tp / np.maximum(predicted, 1), 1.0)
    recall = tp / pos.size if pos.size else np.ones_like(t)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    fmr = fp / neg.size if neg.size else np.zeros_like(t)
    return Curve(t, precision, recall, f1, fmr, int(pos.size), int(neg.size))


def parse_criterion(text: str) -> tuple[str, float | None]:
    """``max_f1`` or ``precision>=0.99`` -> (kind, P)."""
    text = text.replace(" ", "")
    if text == "max_f1":
        return "max_f1", None
    if text.startswith("precision>="):
        try:
            p = float(text.split(">=", 1)[1])
        except ValueError:
            p = -1.0
        if 0.0 < p <= 1.0:
            return "precision>=", p
    raise ValueError(f"criterion must be max_f1 or precision>=P with 0 < P <= 1, got {text!r}")


def recommend(curve: Curve, criterion: str = "max_f1") -> Recommendation:
    """The threshold the criterion picks: ``max_f1`` (best F1) or ``precision>=P`` (best recall among thresholds
    whose precision is at least P; when none reaches P, the highest precision). Among the thresholds that tie on
    the criterion, the middle of the widest run is taken: the margin to both distributions is then largest."""
    kind, p = parse_criterion(criterion)
    if kind == "max_f1":
        value = curve.f1
    else:
        ok = curve.precision >= p - 1e-12
        value = np.where(ok, curve.recall, -1.0) if ok.any() else curve.precision
    best = value.max()
    hit = np.flatnonzero(value >= best - 1e-12)
    runs = np.split(hit, np.flatnonzero(np.diff(hit) > 1) + 1)
    run = max(runs, key=len)
    k = int(run[len(run) // 2])
    return Recommendation(round(float(curve.thresholds[k]), 3), float(curve.precision[k]), float(curve.recall[k]),
                          float(curve.f1[k]), float(curve.false_match_rate[k]), criterion.replace(" ", ""))


def at_threshold(curve: Curve, threshold: float) -> tuple[float, float]:
    """(precision, recall) of ``curve`` at ``threshold`` (the grid point at or just below it)."""
    k = int(np.clip(np.searchsorted(curve.thresholds, threshold + 1e-9, side="right") - 1, 0, len(curve.thresholds) - 1))
    return float(curve.precision[k]), float(curve.recall[k])


# --- Photos that installed packages ship: the data the shipped thresholds were measured on ------------------------

SHIPPED_FACES = {  # person -> (package, file inside it)
    "eileen_collins": ("skimage", "data/astronaut.png"),
    "cameraman": ("skimage", "data/camera.png"),
    "grace_hopper": ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
    "tom_hanks": ("insightface", "data/images/Tom_Hanks_54745.png"),
}
SHIPPED_GROUP_PHOTO = ("insightface", "data/images/t1.jpg")  # five people


def package_file(package: str, relative: str) -> Path | None:
    """A data file inside an installed package (found without importing it), or None."""
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    return path if path.is_file() else None


def face_crops(image: Image.Image, boxes: Sequence[Sequence[float]], margin: float = 0.5) -> list[Image.Image]:
    """Each face box of a group photo cropped with ``margin`` face sizes of surroundings on every side."""
    out = []
    for x1, y1, x2, y2, *_ in boxes:
        w, h = x2 - x1, y2 - y1
        out.append(image.crop((round(max(0, x1 - margin * w)), round(max(0, y1 - margin * h)),
                               round(min(image.width, x2 + margin * w)), round(min(image.height, y2 + margin * h)))))
    return out


def shipped_faces(face_encoder: Any) -> dict[str, Image.Image]:
    """One real face photo per person from installed packages: :data:`SHIPPED_FACES` and the five people of
    insightface's group photo (``t1_person_<k>``, cropped around the boxes ``face_encoder`` finds)."""
    out = {}
    for person, (pkg, rel) in SHIPPED_FACES.items():
        path = package_file(pkg, rel)
        if path is not None:
            out[person] = Image.open(path).convert("RGB")
    group = package_file(*SHIPPED_GROUP_PHOTO)
    if group is not None:
        im = Image.open(group).convert("RGB")
        for k, crop in enumerate(face_crops(im, face_encoder.faces([im])[0].all_boxes)):
            out[f"t1_person_{k}"] = crop
    return out
