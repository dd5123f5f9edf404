"""Regenerate the calibrated thresholds shipped in ``mrbench.thresholds.CALIBRATED`` (and check them elsewhere).

Fitting data (shipped by installed packages or by the project's shared test data, never DreamBench):

* ``dlib`` identity: real face photos. The face_recognition package's test photos (``../shared/data/faces``: six of
  Barack Obama, one of Joe Biden) and the face photos other installed packages ship: scikit-image's ``astronaut``
  (Eileen Collins) and ``camera``, matplotlib's ``grace_hopper``, insightface's ``Tom_Hanks_54745`` and the five
  people of insightface's group photo ``t1.jpg`` (each face cropped with half a face of surroundings). 12 people; the
  same-person pairs are Obama's only.
* ``mobilenet_v2`` near-duplicates: the photos scikit-image, scikit-learn, matplotlib and insightface ship (the
  stereo view ``motorcycle_right`` left out: it is a near-duplicate of ``motorcycle_left`` without being listed),
  each with four planted near-duplicates (crop, mirror, JPEG, resize; ``curation.calibration``).

Check data: DreamBench (``../shared/data/dreambench``) with planted near-duplicates, printed with ``--check``: it is
why the package photos' own max-F1 point for ``mobilenet_v2`` (their planted near-duplicates separate from everything
above ~0.72, as they hold no distinct photos of one subject) is printed but not shipped.

Run: ``python bench/calibrate_defaults.py [--work /tmp/calib] [--check]``; paste the printed ``CALIBRATED`` lines
into ``mrbench/thresholds.py``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from mrbench.curation.calibrate import calibrate
from mrbench.curation.calibration import at_threshold, shipped_faces
from mrbench.thresholds import resolve

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _site() -> Path:
    import skimage

    return Path(skimage.__file__).resolve().parents[1]


PHOTO_FILES = [
    "skimage/data/astronaut.png", "skimage/data/camera.png", "skimage/data/coffee.png", "skimage/data/chelsea.png",
    "skimage/data/rocket.jpg", "skimage/data/motorcycle_left.png", "skimage/data/horse.png", "skimage/data/coins.png",
    "skimage/data/moon.png", "skimage/data/page.png", "skimage/data/text.png", "skimage/data/brick.png",
    "skimage/data/grass.png", "skimage/data/gravel.png", "skimage/data/hubble_deep_field.jpg",
    "skimage/data/retina.jpg", "skimage/data/cell.png", "skimage/data/ihc.png", "skimage/data/immunohistochemistry.png",
    "skimage/data/logo.png", "skimage/data/color.png", "skimage/data/clock_motion.png",
    "skimage/data/microaneurysms.png", "sklearn/datasets/images/china.jpg", "sklearn/datasets/images/flower.jpg",
    "matplotlib/mpl-data/sample_data/grace_hopper.jpg", "insightface/data/images/t1.jpg",
    "insightface/data/images/Tom_Hanks_54745.png", "insightface/data/images/mask_white.jpg",
]
def build_face_folder(root: Path) -> Path:
    """``root/faces/<person>/*``: the real face photos listed in the module docstring."""
    from mrbench.curation.embed import build_encoder

    folder = root / "faces"
    shutil.rmtree(folder, ignore_errors=True)
    for p in sorted((SHARED / "faces").glob("*")):
        if p.suffix.lower() in (".jpg", ".png"):
            person = "joe_biden" if p.stem.startswith("biden") else "barack_obama"
            (folder / person).mkdir(parents=True, exist_ok=True)
            shutil.copy(p, folder / person / p.name)
    for person, image in shipped_faces(build_encoder("dlib")).items():
        (folder / person).mkdir(parents=True, exist_ok=True)
        image.save(folder / person / "face.png")
    return folder


def build_photo_folder(root: Path) -> Path:
    """``root/photos/all/*``: the photos installed packages ship (one folder: no labels)."""
    site, folder = _site(), root / "photos" / "all"
    shutil.rmtree(folder.parent, ignore_errors=True)
    folder.mkdir(parents=True)
    for rel in PHOTO_FILES:
        src = site / rel
        if src.is_file():
            shutil.copy(src, folder / f"{rel.split('/')[0]}_{src.name}")
    return folder.parent


# Earlier values, shown on the same curve: dlib's documented 0.6 Euclidean (~0.82 cosine), the 0.85 used before
# the calibration; the audit's 0.90 and dedup's 0.94 for near-duplicates.
EARLIER = {"identity": (0.82, 0.85), "near_duplicate": (0.90, 0.94)}


def _print(results: list, title: str) -> None:
    print(f"\n== {title}")
    for r in results:
        rec = r.recommendation
        print(f"{r.encoder} {r.task}: recommended {rec.threshold:.3f} ({rec.criterion}) precision {rec.precision:.3f} "
              f"recall {rec.recall:.3f} F1 {rec.f1:.3f} FMR {rec.false_match_rate:.4f}; {r.data}")
        print(f"  same pairs: min cosine {r.scores.same.min():.3f}; different pairs: max cosine "
              f"{r.scores.different.max():.3f}")
        for t in EARLIER.get(r.task, ()):
            p, rc = at_threshold(r.curve, t)
            print(f"  at {t:.2f}: precision {p:.3f} recall {rc:.3f}")


def check_dreambench(thresholds: dict[str, float], originals: int, seeds: list[int]) -> None:
    """DreamBench (held aside): planted near-duplicate pair precision/recall (dedup clusters) and grouping ARI."""
    from sklearn.metrics import adjusted_rand_score

    from mrbench.curation.calibration import cluster_pairs, plant_near_duplicates
    from mrbench.curation.cluster import cluster_embeddings
    from mrbench.curation.dedup import dedup
    from mrbench.curation.embed import build_encoder

    paths = sorted((SHARED / "dreambench").glob("*/*.jpg"))
    enc = build_encoder("mobilenet_v2")
    base = enc.embed_images([Image.open(p).convert("RGB") for p in paths])
    subjects = [p.parent.name for p in paths]
    given = cluster_embeddings(base, num_clusters=30)
    inferred = cluster_embeddings(base)
    print(f"\n== DreamBench check ({len(paths)} photos, mobilenet_v2)\ngrouping ARI: K=30 given "
          f"{adjusted_rand_score(subjects, given.labels):.3f}; K inferred ({inferred.num_clusters}) "
          f"{adjusted_rand_score(subjects, inferred.labels):.3f} (no threshold involved)")
    for name, t in thresholds.items():
        ps, rs = [], []
        for seed in seeds:
            variants, owner, _ = plant_near_duplicates(paths, originals, seed)
            emb = np.concatenate([base, enc.embed_images(variants)])
            truth = cluster_pairs(list(range(len(paths))) + owner)
            res = dedup(emb, [f"{k:05d}" for k in range(len(emb))], None, t)
            got = cluster_pairs(np.where(res.keep, np.arange(len(emb)), res.duplicate_of).tolist())
            tp = len(got & truth)
            ps.append(tp / len(got) if got else 1.0)
            rs.append(tp / len(truth))
        print(f"dedup at {name} {t:.3f}: planted near-duplicates pair precision {np.mean(ps):.3f} recall "
              f"{np.mean(rs):.3f} (mean of seeds {seeds}, {originals} originals x 4)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("calibration-defaults"))
    ap.add_argument("--criterion", default="max_f1")
    ap.add_argument("--check", action="store_true", help="also measure DreamBench at the previous and new defaults")
    args = ap.parse_args(argv)
    if not (SHARED / "faces").is_dir():
        print(f"no shared data at {SHARED}", file=sys.stderr)
        return 2
    faces = calibrate(build_face_folder(args.work), ["dlib"], args.work / "out-faces", criterion=args.criterion)
    _print(faces, "faces, dlib")
    photos_dir = build_photo_folder(args.work)
    n = len(list((photos_dir / "all").iterdir()))
    photos = calibrate(photos_dir, ["mobilenet_v2"], args.work / "out-photos", labels="none", plant=n,
                       criterion=args.criterion)
    _print(photos, "package photos + planted near-duplicates, mobilenet_v2")
    print("\nCALIBRATED entries:")
    for r in faces + photos:
        rec = r.recommendation
        print(f'    ("{r.encoder}", "{r.task}"): OperatingPoint({rec.threshold}, True, {rec.precision:.3f}, '
              f'{rec.recall:.3f}, "{rec.criterion}", "{r.data}"),')
    if args.check:
        shipped = resolve("mobilenet_v2", "near_duplicate").threshold
        check_dreambench({"the shipped threshold": shipped, "the audit's earlier": 0.90,
                          "the package photos' max-F1 point": photos[0].recommendation.threshold}, 40, [0, 1, 2])
    print(f"\npages: {args.work / 'out-faces' / 'calibration.html'}, {args.work / 'out-photos' / 'calibration.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
