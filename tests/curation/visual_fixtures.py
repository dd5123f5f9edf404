"""Photo folders for the model-based curation tests, built from the shared DreamBench and face photos.

``photo_folder(root)`` writes one sub-folder per tag (the folder name is the tag), with real, distinct photos of
four DreamBench subjects, and three planted problems:

* ``candle/copy.jpg``: a JPEG re-encode (quality 40) of ``candle/00.jpg``: dedup drops one of the two;
* ``dog7/intruder.jpg``: a teapot among the dog photos: the consistency rule drops it;
* ``fancy_boot/tiny.png``: a 50x40 copy of a boot photo: ``low_resolution`` once ``filters.min_side`` is 64.

``face_folder(root)`` writes a ``Barack Obama`` folder with the six Obama photos and the Biden photo.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from shared_paths import shared_data

SUBJECTS = ("candle", "bear_plushie", "dog7", "fancy_boot")
PLANTED = {"candle/copy.jpg": "near_duplicate", "dog7/intruder.jpg": "inconsistent", "fancy_boot/tiny.png": "low_resolution"}


def photo_folder(root: Path) -> Path:
    """Write the tagged photo folder described in the module docstring; returns ``root``."""
    db = shared_data("dreambench")
    for subject in SUBJECTS:
        (root / subject).mkdir(parents=True, exist_ok=True)
        for f in sorted((db / subject).glob("*.jpg")):
            shutil.copyfile(f, root / subject / f.name)
    Image.open(db / "candle" / "00.jpg").save(root / "candle" / "copy.jpg", quality=40)
    shutil.copyfile(db / "teapot" / "00.jpg", root / "dog7" / "intruder.jpg")
    Image.open(db / "fancy_boot" / "01.jpg").resize((50, 40)).save(root / "fancy_boot" / "tiny.png")
    return root


def untagged_folder(root: Path, subjects: tuple[str, ...] = ("candle", "dog7", "fancy_boot")) -> tuple[Path, dict[str, str]]:
    """All photos of ``subjects`` in one flat folder (no tags); returns it and file name -> true subject."""
    db = shared_data("dreambench")
    root.mkdir(parents=True, exist_ok=True)
    truth = {}
    for subject in subjects:
        for f in sorted((db / subject).glob("*.jpg")):
            name = f"{subject}_{f.name}"
            shutil.copyfile(f, root / name)
            truth[name] = subject
    return root, truth


def face_folder(root: Path) -> Path:
    """``root/Barack Obama/``: the six Obama photos (incl. two partial faces) and biden.jpg."""
    faces = shared_data("faces")
    folder = root / "Barack Obama"
    folder.mkdir(parents=True, exist_ok=True)
    for f in sorted(faces.iterdir()):
        if f.suffix in (".jpg", ".png"):
            shutil.copyfile(f, folder / f.name)
    return root


def folder_config(root: Path, photos: Path, **sections: dict) -> Path:
    """A curation config over a photo folder with the model steps on (``mobilenet_v2``); returns its path.

    ``sections`` update config sections, e.g. ``embed={"face_encoder": "dlib"}``; ``sources=[...]`` replaces them.
    """
    cfg: dict = {
        "seed": 3,
        "num_shards": 2,
        "sources": [{"kind": "folder", "paths": [str(photos)]}],
        "split": {"held_out_groups": 1, "held_in_groups": 1},
        "embed": {"encoder": "mobilenet_v2"},
        "filters": {"min_side": 64, "max_aspect": 4.0},
        "executor": {"name": "local", "workers": 1},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key].update(value)
        else:
            cfg[key] = value
    root.mkdir(parents=True, exist_ok=True)
    path = root / "curate.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def names_by_id(run_dir: Path, num_shards: int) -> dict[str, str]:
    """Record id -> ``folder/file`` name, from the download shards of a run over a folder source."""
    import pyarrow.parquet as pq
    from urllib.parse import unquote

    out = {}
    for i in range(num_shards):
        for r in pq.read_table(run_dir / "download" / f"shard_{i:05d}.parquet", columns=["id", "url"]).to_pylist():
            out[r["id"]] = "/".join(unquote(r["url"]).split("/")[-2:])
    return out


def write_index(run_dir: Path, rows: list[dict], vectors: np.ndarray, faces: np.ndarray | None = None) -> None:
    """A hand-made ``index/`` (as the index step writes it): ``rows`` have id, tag, category, width, height,
    row (into ``vectors``, -1: none) and face_row (into ``faces``, -1: none)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mrbench.curation.index import META_SCHEMA

    folder = run_dir / "index"
    folder.mkdir(parents=True, exist_ok=True)
    table = pa.table({n: [r[n] for r in rows] for n in META_SCHEMA.names}, schema=META_SCHEMA)
    pq.write_table(table, folder / "meta.parquet")
    np.save(folder / "vectors.npy", np.asarray(vectors, np.float32))
    np.save(folder / "faces.npy", np.zeros((0, 4), np.float32) if faces is None else np.asarray(faces, np.float32))
    (folder / "_SUCCESS").write_text("")
