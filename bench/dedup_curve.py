"""Precision/recall curve of near-duplicate detection on real photos (how ``DEFAULT_THRESHOLD`` was chosen).

Near-duplicates are planted among the DreamBench photos: for ``--originals`` seeded photos, a crop (80-95% of each
side), a mirror image, a JPEG re-encode (quality 20-60) and a resize (50-90%). All photos and variants are embedded
(``--encoder``, with the curation defaults for it) and deduplicated at each threshold; a variant belongs with its
original, every other photo stands alone. Pair precision/recall count pairs of images put in one cluster (a kept
image and the images pointing at it) against the true pairs. Distinct DreamBench photos that are mirror images or
burst shots of each other count against precision.

Run: ``python bench/dedup_curve.py [--data ../shared/data/dreambench] [--seeds 0 1 2]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from mrbench.curation.calibration import cluster_pairs, plant_near_duplicates
from mrbench.curation.dedup import DEFAULT_THRESHOLD, dedup
from mrbench.curation.embed import build_encoder

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dreambench"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--encoder", default="mobilenet_v2")
    ap.add_argument("--originals", type=int, default=40)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--thresholds", type=float, nargs="+",
                    default=[0.88, 0.90, 0.91, 0.92, 0.93, 0.94, 0.95, 0.96, 0.97, 0.98])
    args = ap.parse_args(argv)
    paths = sorted(args.data.glob("*/*.jpg"))
    if not paths:
        print(f"no photos under {args.data}", file=sys.stderr)
        return 2
    enc = build_encoder(args.encoder)
    base = enc.embed_images([Image.open(p).convert("RGB") for p in paths])
    print(f"{len(paths)} photos, {args.originals} originals x 4 near-duplicates per seed, encoder {enc.info.name} "
          f"({enc.info.weights}); default threshold {DEFAULT_THRESHOLD}")
    table: dict[float, list[tuple[float, float]]] = {t: [] for t in args.thresholds}
    for seed in args.seeds:
        variants, owner, _ = plant_near_duplicates(paths, args.originals, seed)
        emb = np.concatenate([base, enc.embed_images(variants)])
        truth = cluster_pairs(list(range(len(paths))) + owner)
        ids = [f"{k:05d}" for k in range(len(emb))]
        for t in args.thresholds:
            res = dedup(emb, ids, None, t)
            got = cluster_pairs(np.where(res.keep, np.arange(len(emb)), res.duplicate_of).tolist())
            tp = len(got & truth)
            table[t].append((tp / len(got) if got else 1.0, tp / len(truth)))
    print("threshold  " + "  ".join(f"seed {s}: P     R    " for s in args.seeds) + "  mean P  mean R")
    for t, rows in table.items():
        cells = "  ".join(f"        {p:.3f} {r:.3f}" for p, r in rows)
        mark = "  <- default" if abs(t - DEFAULT_THRESHOLD) < 1e-9 else ""
        print(f"{t:9.2f}  {cells}  {np.mean([p for p, _ in rows]):6.3f}  {np.mean([r for _, r in rows]):6.3f}{mark}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
