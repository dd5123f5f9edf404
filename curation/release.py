"""Release: parquet shards with image bytes and metadata, ``manifest.json``, a dataset card, EasyRef JSON.

Layout of a release folder::

    data/{split}-{shard:05d}-of-{num_shards:05d}.parquet   # ok images only, sorted by id
    easyref/stage1-2_single.json                           # EasyRef training records, one shape per file
    easyref/stage1-2_face.json                             #   (write_easyref_json); image paths are relative to
    easyref/stage3_group.json                              #   the image root `mrbench release extract-images`
    easyref/{held_in,held_out}.json                        #   writes: <root>/images/<id>.<ext>
    README.md                                              # dataset card: counts per category and split
    manifest.json                                          # files, rows, sha256 per file, config, versions, seed

Nothing in a release depends on time or on the run folder's location, so two runs with the same inputs and seed
give byte-identical releases.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mrbench.config import CurateConfig, to_dict
from mrbench.curation.split import SPLITS
from mrbench.provenance import package_versions
from mrbench.shards import ShardSet, atomic_write_text, read_records, write_parquet_atomic
from mrbench.stats import Stats

RELEASE_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("url", pa.string()),
        ("caption", pa.string()),
        ("tags", pa.list_(pa.string())),
        ("category", pa.string()),
        ("group", pa.string()),
        ("split", pa.string()),
        ("role", pa.string()),
        ("image", pa.binary()),
        ("format", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("sha256", pa.string()),
    ]
)
REJECT_SCHEMA = pa.schema(
    [("id", pa.string()), ("url", pa.string()), ("status", pa.string()), ("error_message", pa.string())]
)
ASSIGN_SCHEMA = pa.schema(
    [("id", pa.string()), ("group", pa.string()), ("split", pa.string()), ("role", pa.string()),
     ("status", pa.string()), ("error_message", pa.string())]
)
MANIFEST = "manifest.json"


def release_file(split: str, shard: int, num_shards: int) -> str:
    return f"data/{split}-{shard:05d}-of-{num_shards:05d}.parquet"


@dataclass
class ReleaseTask:
    """Per download shard: join group/split assignments, write release rows per split and the rejects."""

    config: CurateConfig
    run_dir: str
    name: str = "release"

    @property
    def state(self) -> ShardSet:
        return ShardSet(Path(self.run_dir) / "state", "release", suffix=".unused")

    def is_done(self, shard: int) -> bool:
        return self.state.is_done(shard)

    def __call__(self, shard: int) -> None:
        run = Path(self.run_dir)
        n = self.config.num_shards
        download = ShardSet(run / "download", "shard")
        ids = pq.read_table(download.output(shard), columns=["id"]).column("id").to_pylist()
        wanted = pa.array(ids, pa.string())
        assign_table = pq.read_table(run / "groups" / "assignments.parquet", filters=[("id", "in", wanted)]) if ids else ASSIGN_SCHEMA.empty_table()
        assign = {row["id"]: row for row in assign_table.to_pylist()}
        stats = Stats()
        per_split: dict[str, dict[str, list]] = {s: {n_: [] for n_ in RELEASE_SCHEMA.names} for s in SPLITS}
        rejects: dict[str, list] = {n_: [] for n_ in REJECT_SCHEMA.names}
        for rec in read_records(download.output(shard)):
            a = assign.get(rec.id)
            if rec.ok and a is not None and a["status"] != "ok":
                rec.fail(a["status"], a["error_message"])
            if rec.ok and a is None:
                rec.fail("unassigned", "not in group assignments")
            stats.inc(f"status/{rec.status}")
            if not rec.ok:
                for k in REJECT_SCHEMA.names:
                    rejects[k].append(getattr(rec, k))
                continue
            rec.group, rec.split, rec.role = a["group"], a["split"], a["role"]
            cols = per_split[rec.split]
            for k in RELEASE_SCHEMA.names:
                cols[k].append(rec.metadata.get("format", "") if k == "format" else getattr(rec, k))
            stats.inc(f"release/{rec.split}")
        for split, cols in per_split.items():
            path = run / "release" / release_file(split, shard, n)
            if cols["id"]:
                write_parquet_atomic(pa.table(cols, schema=RELEASE_SCHEMA), path, self.config.release.compression)
            elif path.exists():
                path.unlink()
        write_parquet_atomic(pa.table(rejects, schema=REJECT_SCHEMA), run / "rejects" / f"rejects_{shard:05d}.parquet")
        self.state.complete(shard, stats)


EASYREF_FILES = {
    "single": "stage1-2_single.json",  # {"image_file": [t], "text": [caption], "target": t}
    "face": "stage1-2_face.json",      # {"face": [[x1, y1, x2, y2, score]], "text": [caption], "target": t}
    "group": "stage3_group.json",      # {"image_file": [refs...], "text": [target caption], "target": t}
}


def easyref_image_path(image_id: str, fmt: str | None) -> str:
    """An image's path in the EasyRef JSON, relative to the image root: ``images/<id>.<ext>``, where
    ``mrbench release extract-images RELEASE --out ROOT`` writes it (the authors' ``image_root_path`` is ROOT)."""
    return f"images/{image_id}.{fmt or 'jpg'}"


def easyref_faces(run_dir: Path) -> dict[str, list[float]]:
    """Image id -> its largest detected face ``[x1, y1, x2, y2, score]``, from the embed step's features (pixels of
    the stored image as PIL decodes it, without EXIF rotation: the frame the authors' loader crops in); empty when
    no face encoder ran."""
    faces: dict[str, list[float]] = {}
    cols = ["id", "num_faces", "face_box", "face_score"]
    for f in sorted((Path(run_dir) / "embed").glob("shard_*.parquet")):
        if not set(cols) <= set(pq.ParquetFile(f).schema_arrow.names):
            continue
        for r in pq.read_table(f, columns=cols).to_pylist():
            if r["num_faces"] and r["face_box"] is not None and len(r["face_box"]) == 4:
                faces[r["id"]] = [round(float(x), 2) for x in r["face_box"]] + [round(float(r["face_score"] or 0.0), 4)]
    return faces


def write_easyref_json(release_dir: Path, faces: dict[str, list[float]] | None = None) -> dict[str, int]:
    """EasyRef's training data, one record shape per file, for the stage that reads it [C: finetune_sdxl.py]:

    - ``stage1-2_single.json``: single-reference records (the image is its own reference) for the alignment
      pre-training and single-reference fine-tuning stages, whose loader truncates to 256 tokens and stacks
      fixed-size tensors, so a group record would break it. Every image of a train group, and the references of
      held-in groups (the paper trains on held-in references, never on their targets).
    - ``stage1-2_face.json``: face-crop records in the authors' flat shape ``{"face": [[x1, y1, x2, y2, score]],
      "text": [caption], "target": t}`` (their loader reads ``item["face"][0]``) for the same images, where the
      embed step detected a face (``faces``; the largest face, in pixels of the decoded image).
    - ``stage3_group.json``: group records (references -> target) of the train groups, for the multi-reference
      stage (batch 1 per GPU).
    - ``held_in.json`` / ``held_out.json``: one group record per test group (evaluation, not training).

    Paths are :func:`easyref_image_path` values relative to the image root that ``mrbench release extract-images
    RELEASE --out ROOT`` fills (pass ROOT as the authors' ``image_root_path``). Returns records per file.
    """
    faces = faces or {}
    rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for f in sorted((release_dir / "data").glob("*.parquet")):
        cols = ["id", "caption", "group", "split", "role", "format"]
        for r in pq.read_table(f, columns=cols).to_pylist():
            rows[r["group"]].append(r)
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in [*EASYREF_FILES.values(), "held_in.json", "held_out.json"]}

    def path(r: dict[str, Any]) -> str:
        return easyref_image_path(r["id"], r["format"])

    def single(r: dict[str, Any]) -> None:
        out[EASYREF_FILES["single"]].append({"image_file": [path(r)], "text": [r["caption"]], "target": path(r)})
        if r["id"] in faces:
            out[EASYREF_FILES["face"]].append({"face": [faces[r["id"]]], "text": [r["caption"]], "target": path(r)})

    for gid in sorted(rows):
        members = sorted(rows[gid], key=lambda r: (r["role"] != "target", r["id"]))
        target, refs = members[0], members[1:]
        split = target["split"]
        group_rec = {"image_file": [path(r) for r in refs], "text": [target["caption"]], "target": path(target)}
        if split == "train":
            if refs:
                out[EASYREF_FILES["group"]].append(group_rec)
            for r in members:
                single(r)
        else:
            out[f"{split}.json"].append(group_rec)
            if split == "held_in":
                for r in refs:
                    single(r)
    (release_dir / "easyref").mkdir(parents=True, exist_ok=True)
    for name, recs in out.items():
        atomic_write_text(release_dir / "easyref" / name, json.dumps(recs, indent=1, ensure_ascii=False))
    return {name: len(v) for name, v in out.items()}


def write_card(release_dir: Path, config: CurateConfig) -> None:
    counts: Counter[tuple[str, str]] = Counter()
    groups: dict[str, set[str]] = defaultdict(set)
    for f in sorted((release_dir / "data").glob("*.parquet")):
        for r in pq.read_table(f, columns=["category", "split", "group"]).to_pylist():
            counts[(r["category"] or "-", r["split"])] += 1
            groups[r["split"]].add(r["group"])
    cats = sorted({c for c, _ in counts})
    lines = [
        f"# {config.release.name}",
        "",
        "A grouped multi-reference image dataset curated with MRBench (`mrbench curate`).",
        "Splits are by group: no group appears in two splits. Each group has one `target` image and its",
        "`reference` images (column `role`).",
        "",
        "## Images per category and split",
        "",
        "| category | " + " | ".join(SPLITS) + " | total |",
        "|---|" + "---|" * (len(SPLITS) + 1),
    ]
    for c in cats:
        vals = [counts[(c, s)] for s in SPLITS]
        lines.append(f"| {c} | " + " | ".join(str(v) for v in vals) + f" | {sum(vals)} |")
    tot = [sum(counts[(c, s)] for c in cats) for s in SPLITS]
    lines.append("| **all** | " + " | ".join(str(v) for v in tot) + f" | {sum(tot)} |")
    lines.append("| groups | " + " | ".join(str(len(groups[s])) for s in SPLITS) + f" | {sum(len(g) for g in groups.values())} |")
    lines += [
        "",
        "## Loading",
        "",
        "```python",
        "import datasets",
        'ds = datasets.load_dataset("parquet", data_files={"train": "data/train-*.parquet",',
        '    "held_in": "data/held_in-*.parquet", "held_out": "data/held_out-*.parquet"})',
        "```",
        "",
        f"Seed {config.seed}; held-out groups requested {config.split.held_out_groups}, held-in "
        f"{config.split.held_in_groups}. `mrbench release verify .` checks every file against `manifest.json`.",
        "",
        "Image rights stay with their publishers; this release records each image's source URL.",
        "",
    ]
    atomic_write_text(release_dir / "README.md", "\n".join(lines))


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _release_files(release_dir: Path) -> list[Path]:
    return sorted(p for p in release_dir.rglob("*") if p.is_file() and p.name != MANIFEST and not p.name.endswith(".tmp"))


def write_manifest(release_dir: Path, config: CurateConfig) -> dict[str, Any]:
    files = []
    for p in _release_files(release_dir):
        rel = p.relative_to(release_dir).as_posix()
        entry: dict[str, Any] = {"path": rel, "bytes": p.stat().st_size, "sha256": _sha256_file(p)}
        if p.suffix == ".parquet":
            entry["rows"] = pq.ParquetFile(p).metadata.num_rows
        files.append(entry)
    cfg = to_dict(config)
    # Paths of the inputs are machine-specific; the manifest keeps their names so releases compare across machines.
    for src in cfg["sources"]:
        src["paths"] = [Path(p).name for p in src["paths"]]
    cfg["crawl"]["tag_list"] = Path(cfg["crawl"]["tag_list"]).name if cfg["crawl"]["tag_list"] else ""
    manifest = {
        "name": config.release.name,
        "format": "mrbench-release/1",
        "seed": config.seed,
        "files": files,
        "rows": sum(f.get("rows", 0) for f in files if f["path"].startswith("data/")),
        "config": cfg,
        "versions": package_versions(("mrbench", "img2dataset", "pyarrow", "pillow")),
    }
    atomic_write_text(release_dir / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))
    return manifest


def verify_release(release_dir: str | Path) -> list[str]:
    """Check every file against the manifest; returns problems (empty when the release is intact)."""
    release_dir = Path(release_dir)
    mpath = release_dir / MANIFEST
    if not mpath.is_file():
        return [f"{mpath}: manifest missing"]
    try:
        manifest = json.loads(mpath.read_text())
        listed = {f["path"]: f for f in manifest["files"]}
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        return [f"{mpath}: unreadable manifest ({e})"]
    problems = []
    present = {p.relative_to(release_dir).as_posix() for p in _release_files(release_dir)}
    for rel in sorted(set(listed) - present):
        problems.append(f"{rel}: missing")
    for rel in sorted(present - set(listed)):
        problems.append(f"{rel}: extra file not in manifest")
    for rel in sorted(set(listed) & present):
        entry = listed[rel]
        p = release_dir / rel
        if p.stat().st_size != entry["bytes"] or _sha256_file(p) != entry["sha256"]:
            problems.append(f"{rel}: altered (sha256 mismatch)")
            continue
        if "rows" in entry and pq.ParquetFile(p).metadata.num_rows != entry["rows"]:
            problems.append(f"{rel}: row count differs from manifest")
    return problems
