"""Acceptance (real data): near-duplicates planted among DreamBench photos are found at the default threshold."""

from __future__ import annotations

import numpy as np
import pytest

from mrbench.curation.dedup import DEFAULT_THRESHOLD, dedup
from mrbench.curation.calibration import pair_precision_recall, plant_near_duplicates
from realdata import dreambench, encoder

pytestmark = pytest.mark.slow


def test_planted_near_duplicates_precision_recall_at_default_threshold():
    paths, _, originals = dreambench()
    variants, owner, _ = plant_near_duplicates(paths, 40, seed=0)
    emb = np.concatenate([originals, encoder().embed_images(variants)])
    truth = list(range(len(paths))) + owner  # a variant belongs with its original; everything else stands alone
    ids = [f"{k:04d}" for k in range(len(emb))]
    curve = {}
    for t in (0.90, 0.92, DEFAULT_THRESHOLD, 0.96, 0.98):
        res = dedup(emb, ids, None, t)
        kept_as = np.where(res.keep, np.arange(len(emb)), res.duplicate_of)  # each image -> its cluster's kept image
        curve[t] = pair_precision_recall(kept_as.tolist(), truth)
    print("threshold  pair-precision  pair-recall")
    for t, (p, r) in curve.items():
        print(f"{t:9.2f}  {p:14.3f}  {r:11.3f}")
    p, r = curve[DEFAULT_THRESHOLD]
    assert p >= 0.95 and r >= 0.95
    # the curve has the expected shape: a low threshold over-merges, a high one misses crops
    assert curve[0.90][0] < p and curve[0.98][1] < r
