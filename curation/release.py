"""Release: parquet shards with image bytes and metadata, ``manifest.json``, a dataset card, EasyRef JSON.

Layout of a release folder::

    data/{split}-{shard:05d}-of-{num_shards:05d}.parquet   # ok images only, sorted by id
    easyref/{train,held_in,held_out}.json                  # EasyRef's record shapes (paths images/<id>.<ext>)
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
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mrbench.config import CurateConfig, to_dict
from mrbench.curation.split import SPLITS
from mrbench.provenance import package_versions
from mrbench.shards import ShardSet, atomic_write_text, write_parquet_atomic
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
        sliced = run / "groups" / "by_shard" / f"assign_{shard:05d}.parquet"
        if sliced.exists():  # this shard's slice of the assignments (written by the grouping step)
            assign_table = pq.read_table(sliced)
        else:  # a run folder grouped before slices existed
            ids = pq.read_table(download.output(shard), columns=["id"]).column("id").to_pylist()
            wanted = pa.array(ids, pa.string())
            assign_table = pq.read_table(run / "groups" / "assignments.parquet", filters=[("id", "in", wanted)]) if ids else ASSIGN_SCHEMA.empty_table()
        # Whole columns, no record objects: the download shard joined with its assignments by id.
        table = pq.read_table(download.output(shard))
        ids = table.column("id")
        where = pc.index_in(ids, value_set=assign_table.column("id"))
        found = where.is_valid().to_numpy(zero_copy_only=False)
        take = where.fill_null(0)

        def joined(name: str) -> list[Any]:
            col = assign_table.column(name)
            return col.take(take).to_pylist() if len(col) else [None] * len(ids)

        a_status, a_error = joined("status"), joined("error_message")
        a_group, a_split, a_role = joined("group"), joined("split"), joined("role")
        status = table.column("status").to_pylist()
        error = table.column("error_message").to_pylist()
        stats = Stats()
        ok_rows: dict[str, list[int]] = {s: [] for s in SPLITS}
        bad: list[int] = []
        for k, st in enumerate(status):  # the rule of each row (cheap: strings only, no image bytes)
            if st == "ok":
                if not found[k]:
                    status[k], error[k] = "unassigned", "not in group assignments"
                elif a_status[k] != "ok":
                    status[k], error[k] = a_status[k], a_error[k]
            stats.inc(f"status/{status[k]}")
            if status[k] != "ok":
                bad.append(k)
                continue
            ok_rows[a_split[k]].append(k)
            stats.inc(f"release/{a_split[k]}")
        metadata = table.column("metadata")
        for split, rows in ok_rows.items():
            path = run / "release" / release_file(split, shard, n)
            if not rows:
                if path.exists():
                    path.unlink()
                continue
            at = pa.array(rows, pa.int64())
            meta = metadata.take(at).to_pylist()
            cols: dict[str, Any] = {name: table.column(name).take(at).combine_chunks()
                                    for name in ("id", "url", "caption", "category", "image", "width", "height", "sha256")}
            tags = table.column("tags").take(at).combine_chunks()
            cols["tags"] = tags.fill_null(pa.scalar([], tags.type)) if tags.null_count else tags  # as ImageRecord: []
            cols["group"] = pa.array([a_group[k] for k in rows], pa.string())
            cols["split"] = pa.array([a_split[k] for k in rows], pa.string())
            cols["role"] = pa.array([a_role[k] for k in rows], pa.string())
            cols["format"] = pa.array([(json.loads(m) if m else {}).get("format", "") for m in meta], pa.string())
            write_parquet_atomic(pa.table({name: cols[name] for name in RELEASE_SCHEMA.names}, schema=RELEASE_SCHEMA),
                                 path, self.config.release.compression)
        rejects = {
            "id": ids.take(pa.array(bad, pa.int64())).to_pylist(),
            "url": table.column("url").take(pa.array(bad, pa.int64())).to_pylist(),
            "status": [status[k] for k in bad], "error_message": [error[k] for k in bad],
        }
        write_parquet_atomic(pa.table(rejects, schema=REJECT_SCHEMA), run / "rejects" / f"rejects_{shard:05d}.parquet")
        self.state.complete(shard, stats)


def write_easyref_json(release_dir: Path) -> dict[str, int]:
    """EasyRef's three training record shapes (SPEC): single reference, face crop, group.

    ``train.json`` holds train groups (group records: references -> target; single records: each image as its
    own reference) plus the references of held-in groups as single records, as in the paper. ``held_in.json``
    and ``held_out.json`` hold one group record per test group. Image paths are ``images/<id>.<format>``;
    ``mrbench release extract-images`` writes them.
    """
    rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for f in sorted((release_dir / "data").glob("*.parquet")):
        cols = ["id", "caption", "group", "split", "role", "format"]
        rows_f = pq.read_table(f, columns=cols).to_pylist()
        for r in rows_f:
            rows[r["group"]].append(r)
    out: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    for gid in sorted(rows):
        members = sorted(rows[gid], key=lambda r: (r["role"] != "target", r["id"]))
        target = members[0]
        refs = members[1:]
        split = target["split"]

        def path(r: dict[str, Any]) -> str:
            return f"images/{r['id']}.{r['format'] or 'jpg'}"

        group_rec = {"image_file": [path(r) for r in refs], "text": [target["caption"]], "target": path(target)}
        if split == "train":
            out["train"].append(group_rec)
            out["train"].extend({"image_file": [path(r)], "text": [r["caption"]], "target": path(r)} for r in members)
        else:
            out[split].append(group_rec)
            if split == "held_in":
                out["train"].extend({"image_file": [path(r)], "text": [r["caption"]], "target": path(r)} for r in refs)
    (release_dir / "easyref").mkdir(parents=True, exist_ok=True)
    for split, recs in out.items():
        atomic_write_text(release_dir / "easyref" / f"{split}.json", json.dumps(recs, indent=1, ensure_ascii=False))
    return {s: len(v) for s, v in out.items()}


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
