"""Release: parquet shards with image bytes and metadata, ``manifest.json``, a dataset card, EasyRef JSON.

Layout of a release folder::

    data/{split}-{i:05d}-of-{k:05d}.parquet                 # ok images only, sorted by id; i = 0..k-1 per split
    easyref/stage1-2_single.json                           # EasyRef training records, one shape per file
    easyref/stage1-2_face.json                             #   (write_easyref_json); image paths are relative to
    easyref/stage3_group.json                              #   the image root `mrbench release extract-images`
    easyref/{held_in,held_out}.json                        #   writes: <root>/images/<id>.<ext>
    README.md                                              # dataset card (curation.card): Hub YAML header,
    card/examples/{id}.jpg                                 #   columns, settings, drops, group sizes, examples
    manifest.json                                          # files, rows, sha256 per file, config, versions, seed

Nothing in a release depends on time or on the run folder's location, so two runs with the same inputs and seed
give byte-identical releases.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import stat
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mrbench.config import ConfigError, to_dict
from mrbench.curation.card import write_card
from mrbench.curation.config import CurateConfig
from mrbench.curation.crawl import KEPT
from mrbench.curation.group import ASSIGN_SCHEMA
from mrbench.curation.inputs import kept_fields
from mrbench.curation.release_format import (  # noqa: F401
    IMAGE_TYPE, KEPT_TYPES, MANIFEST, REJECT_SCHEMA, RELEASE_FILE, RELEASE_FORMAT, RELEASE_SCHEMA, RELEASE_SCHEMA_V1,
    RELEASE_SCHEMA_V2, RELEASE_SCHEMAS, image_bytes, image_cells, kept_fields_of, release_file, release_kept_fields,
    release_schema, release_table, schema_problem)
from mrbench.curation.sources import LOCAL_PATH
from mrbench.curation.split import SPLITS
from mrbench.curation.tags import leak_free_prompts, load_matcher
from mrbench.layout import REJECTS, RELEASE, RELEASE_PARTS, STATE, RunLayout
from mrbench.provenance import package_versions
from mrbench.shards import atomic_write_text, sha256_file, temporary_path, write_parquet_atomic
from mrbench.stage import ShardedStep, Step, run_global_step
from mrbench.stats import Stats

# The release step writes one file per (split, download shard) in RunLayout.release_parts (RELEASE_PARTS); finalize
# links them into the release with contiguous names (a split present in 3 of 4 download shards gets files
# 00000..00002 of 00003).


def publish_release_data(run_dir: Path, release_dir: Path) -> list[str]:
    """Link every split's part files (``RUN/release_parts``, one per download shard that has rows of the split)
    into ``release/data`` as ``{split}-{i:05d}-of-{k:05d}.parquet``, i = 0..k-1 in shard order, and remove any other
    data file. Hard links (a copy where the file system has none): no image is written twice. Deterministic and
    safe to repeat, so a finalize killed half-way redoes it the same way.

    Returns:
        The release-relative paths of the data files.
    """
    parts = RunLayout(run_dir).release_parts
    if not parts.is_dir() and any((release_dir / "data").glob("*.parquet")):
        # The release step of this run folder ran under mrbench < format 2: it wrote release/data itself (binary
        # images, per-shard names). Linking nothing would empty the release; its files are of the old format.
        raise ConfigError(f"{run_dir}: its release step ran under an older mrbench (no {RELEASE_PARTS}/); remove "
                          f"{Path(run_dir) / 'state'}/release_*.done and {release_dir}, then rerun `mrbench curate` "
                          "with the same --out: only the release step is redone")
    wanted: dict[str, Path] = {}
    for split in SPLITS:
        files = sorted(parts.glob(f"{split}-*.parquet"))  # zero-padded shard numbers: sorted = shard order
        for i, f in enumerate(files):
            wanted[release_file(split, i, len(files))] = f
    data = release_dir / "data"
    data.mkdir(parents=True, exist_ok=True)
    for p in sorted(data.iterdir()):
        if p.relative_to(release_dir).as_posix() not in wanted:
            p.unlink()
    for rel, src in wanted.items():
        dst = release_dir / rel
        if dst.exists() and os.path.samefile(dst, src):
            continue
        tmp = temporary_path(dst)
        try:
            try:
                os.link(src, tmp)
            except OSError:  # no hard links here (some network or FAT file systems)
                shutil.copyfile(src, tmp)
            os.replace(tmp, dst)
        finally:
            tmp.unlink(missing_ok=True)
    return sorted(wanted)


class ReleaseTask(ShardedStep):
    """Per download shard: join group/split assignments, write release rows per split and the rejects."""

    def process(self, shard: int) -> tuple[None, Stats]:
        layout = self.layout
        n = self.config.num_shards
        download = layout.download
        sliced = layout.assignment_slice(shard)
        if sliced.exists():  # this shard's slice of the assignments (written by the grouping step)
            assign_table = pq.read_table(sliced)
        else:  # a run folder grouped before slices existed
            ids = pq.read_table(download.output(shard), columns=["id"]).column("id").to_pylist()
            wanted = pa.array(ids, pa.string())
            assign_table = pq.read_table(layout.assignments, filters=[("id", "in", wanted)]) if ids else ASSIGN_SCHEMA.empty_table()
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
        _, matcher = load_matcher(self.config.crawl.tag_list)  # the crawl's matcher: the same mentions, masked
        kept = kept_fields(self.config)
        for split, rows in ok_rows.items():
            path = layout.release_parts / Path(release_file(split, shard, n)).name
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
            cols["prompt"] = pa.array(leak_free_prompts(matcher, cols["caption"].to_pylist(), cols["tags"].to_pylist(),
                                                        cols["category"].to_pylist()), pa.string())
            cols["group"] = pa.array([a_group[k] for k in rows], pa.string())
            cols["split"] = pa.array([a_split[k] for k in rows], pa.string())
            cols["role"] = pa.array([a_role[k] for k in rows], pa.string())
            meta = [json.loads(m) if m else {} for m in meta]
            for key in ("format", "encoding"):  # what the downloader recorded per row (original bytes or a re-encode)
                cols[key] = pa.array([m.get(key, "") for m in meta], pa.string())
            cols["image"] = image_cells(cols["image"], cols["id"].to_pylist(), cols["format"].to_pylist())
            for f in kept:  # the sources' keep_columns, from each row's metadata (null where its source has none)
                values = [m.get(KEPT, {}).get(f.name) for m in meta]
                if f.type == pa.string():
                    values = [v if v is None or isinstance(v, str) else json.dumps(v) for v in values]
                cols[f.name] = pa.array(values, f.type)
            if any(LOCAL_PATH in m for m in meta):  # folder sources: the path under the folder, not the curator's disk
                urls = cols["url"].to_pylist()
                cols["url"] = pa.array([m.get(LOCAL_PATH, u) for m, u in zip(meta, urls)], pa.string())
            schema = release_schema(kept)
            write_parquet_atomic(pa.table({name: cols[name] for name in schema.names}, schema=schema),
                                 path, self.config.release.compression)
        at_bad = pa.array(bad, pa.int64())
        rejects = {
            "id": ids.take(at_bad).to_pylist(),
            "url": table.column("url").take(at_bad).to_pylist(),
            "status": [status[k] for k in bad], "error_message": [error[k] for k in bad],
            # what the row was selected for: its caption and tags (why a subject lost its images)
            "caption": table.column("caption").take(at_bad).to_pylist(),
            "tags": [t or [] for t in table.column("tags").take(at_bad).to_pylist()],
        }
        write_parquet_atomic(pa.table(rejects, schema=REJECT_SCHEMA), layout.rejects.output(shard))
        return None, stats


def finalize_step(config: CurateConfig, run_dir: Path) -> Stats:
    """Global step after the release shards: EasyRef JSON, card, manifest, then the release checks itself."""
    release = RunLayout(run_dir).release
    publish_release_data(run_dir, release)  # the release step's part files, named without gaps per split
    if config.release.easyref_json:
        write_easyref_json(release, easyref_faces(run_dir))
    write_card(release, config, run_dir)
    write_manifest(release, config)
    problems = verify_release(release)
    if problems:
        raise RuntimeError(f"release failed its own verification: {problems[:5]}")
    return Stats()


def finalize_release(config: CurateConfig, run_dir: Path) -> dict[str, Any]:
    """Finish the release (:func:`finalize_step`, skipped when done); returns its manifest."""
    run_global_step(FINALIZE_STEP, config, run_dir)
    return json.loads(RunLayout(run_dir).manifest.read_text())


# Release shards write several files (release_parts/, rejects/), so their markers and stats live in state/ beside an
# output name nothing writes.
RELEASE_STEP = Step("release", ReleaseTask, after="group", reads=("download", "group"),
                    settings=("num_shards", "release.compression"), folder=STATE, prefix="release", suffix=".unused",
                    owns=(RELEASE_PARTS, REJECTS))
# The card and the manifest record the whole config: every setting but the free ones. Its marker is in state/: the
# release folder holds only the release.
FINALIZE_STEP = Step("finalize", finalize_step, after="release", reads=("release",), settings=None, folder=RELEASE,
                     owns=(RELEASE,), marker=f"{STATE}/release_final.done")


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
    """Image id -> its largest detected face ``[x1, y1, x2, y2, score]``, from the embed step's features: pixels of
    the oriented image (EXIF applied, as every model step decodes; :func:`faces_in_stored_frame` turns them into the
    stored bytes' frame); empty when no face encoder ran."""
    faces: dict[str, list[float]] = {}
    cols = ["id", "num_faces", "face_box", "face_score"]
    for f in RunLayout(run_dir).embed.existing():
        if not set(cols) <= set(pq.ParquetFile(f).schema_arrow.names):
            continue
        for r in pq.read_table(f, columns=cols).to_pylist():
            if r["num_faces"] and r["face_box"] is not None and len(r["face_box"]) == 4:
                faces[r["id"]] = [round(float(x), 2) for x in r["face_box"]] + [round(float(r["face_score"] or 0.0), 4)]
    return faces


def faces_in_stored_frame(release_dir: Path, faces: dict[str, list[float]]) -> dict[str, list[float]]:
    """``faces`` (boxes on the oriented images) in the frame of the release's stored, unrotated bytes: the authors'
    loader opens an image with ``PIL.Image.open`` and crops without applying EXIF orientation."""
    from mrbench.images import box_to_stored_frame, orientation_of

    if not faces:
        return {}
    out = dict(faces)
    wanted = pa.array(sorted(faces), pa.string())
    for f in sorted((release_dir / "data").glob("*.parquet")):
        t = pq.read_table(f, columns=["id", "image"], filters=[("id", "in", wanted)])
        for rid, data in zip(t.column("id").to_pylist(), image_bytes(t.column("image"))):
            orientation, size = orientation_of(data)
            if orientation not in (None, 1):
                box = box_to_stored_frame(faces[rid][:4], orientation, size)
                out[rid] = [round(v, 2) for v in box] + faces[rid][4:]
    return out


def write_easyref_json(release_dir: Path, faces: dict[str, list[float]] | None = None) -> dict[str, int]:
    """EasyRef's training data, one record shape per file, for the stage that reads it [C: finetune_sdxl.py]:

    - ``stage1-2_single.json``: single-reference records (the image is its own reference) for the alignment
      pre-training and single-reference fine-tuning stages, whose loader truncates to 256 tokens and stacks
      fixed-size tensors, so a group record would break it. Every image of a train group, and the references of
      held-in groups (the paper trains on held-in references, never on their targets).
    - ``stage1-2_face.json``: face-crop records in the authors' flat shape ``{"face": [[x1, y1, x2, y2, score]],
      "text": [caption], "target": t}`` (their loader reads ``item["face"][0]``) for the same images, where the
      embed step detected a face (``faces``; the largest face, in pixels of the stored bytes as ``PIL.Image.open``
      decodes them, without EXIF rotation: the frame their loader crops in).
    - ``stage3_group.json``: group records (references -> target) of the train groups, for the multi-reference
      stage (batch 1 per GPU).
    - ``held_in.json`` / ``held_out.json``: one group record per test group (evaluation, not training).

    Paths are :func:`easyref_image_path` values relative to the image root that ``mrbench release extract-images
    RELEASE --out ROOT`` fills (pass ROOT as the authors' ``image_root_path``). Returns records per file.
    """
    faces = faces_in_stored_frame(release_dir, faces or {})
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


def _release_files(release_dir: Path) -> list[Path]:
    return sorted(p for p in release_dir.rglob("*") if p.is_file() and p.name != MANIFEST and not p.name.endswith(".tmp"))


def write_manifest(release_dir: Path, config: CurateConfig, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """``manifest.json``: every file with its size, sha256 and rows, the total rows, the config and versions;
    ``extra`` adds keys (``release remove``: the parent release and the removals)."""
    files = []
    for p in _release_files(release_dir):
        rel = p.relative_to(release_dir).as_posix()
        entry: dict[str, Any] = {"path": rel, "bytes": p.stat().st_size, "sha256": sha256_file(p)}
        if p.suffix == ".parquet":
            entry["rows"] = pq.ParquetFile(p).metadata.num_rows
        files.append(entry)
    cfg = to_dict(config)
    # Paths of the inputs are machine-specific; the manifest keeps their names so releases compare across machines.
    for src in cfg["sources"]:
        src["paths"] = [Path(p).name for p in src["paths"]]
    cfg["crawl"]["tag_list"] = Path(cfg["crawl"]["tag_list"]).name if cfg["crawl"]["tag_list"] else ""
    for block in cfg["crawl"].get("blocklists", []):
        block["path"] = Path(block["path"]).name
    kept = release_kept_fields(release_dir)
    if kept:  # the sources' keep_columns, so that verify knows the release's schema
        extra = {"kept_columns": {f.name: str(f.type) for f in kept}, **(extra or {})}
    manifest = {
        "name": config.release.name,
        "format": RELEASE_FORMAT,
        "seed": config.seed,
        "files": files,
        "rows": sum(f.get("rows", 0) for f in files if f["path"].startswith("data/")),
        "config": cfg,
        "versions": package_versions(("mrbench", "img2dataset", "pyarrow", "pillow")),
        **(extra or {}),
    }
    atomic_write_text(release_dir / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))
    return manifest


RELEASE_ID = re.compile(r"[0-9a-f]{16}")  # curation.crawl.record_id: 16 hex digits of the URL's sha1
IMAGE_EXTENSION = re.compile(r"[a-z0-9]{1,8}")  # a bare extension: no dot, no separator, nothing to traverse with
_SHA256 = re.compile(r"[0-9a-f]{64}")


class ReleaseError(ValueError):
    """A release cannot be used as it is (it fails verification, or holds ids of another format)."""


class UnsafeOutputError(ReleaseError):
    """``extract-images --out`` is inside the release, or a symlink waits where a file or folder is to be written."""


@dataclass
class ReleaseProblem:
    """One finding of :func:`check_release`: the release-relative path, a kind and a message."""

    path: str
    kind: str  # missing, extra, altered, rows, schema, naming, symlink, temporary, not_regular, manifest
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass
class VerifyReport:
    """What :func:`check_release` found."""

    release: str
    files_listed: int = 0
    files_checked: int = 0
    rows_manifest: int | None = None
    rows_found: int = 0
    problems: list[ReleaseProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, path: str, kind: str, message: str) -> None:
        self.problems.append(ReleaseProblem(path, kind, message))

    def summary(self) -> str:
        """One line: verdict, files and rows checked, problems per kind."""
        rows = f"{self.rows_found} rows" + ("" if self.rows_manifest in (None, self.rows_found)
                                             else f" (manifest says {self.rows_manifest})")
        head = f"{self.files_checked}/{self.files_listed} files, {rows}"
        if self.ok:
            return f"ok: {self.release} matches its manifest ({head})"
        kinds = Counter(p.kind for p in self.problems)
        return (f"FAILED: {self.release}: {len(self.problems)} problem(s) "
                f"({', '.join(f'{k} {n}' for k, n in sorted(kinds.items()))}); {head}")

    def to_dict(self) -> dict[str, Any]:
        return {"release": self.release, "ok": self.ok, "files_listed": self.files_listed,
                "files_checked": self.files_checked, "rows_manifest": self.rows_manifest, "rows_found": self.rows_found,
                "problems": [{"path": p.path, "kind": p.kind, "message": p.message} for p in self.problems],
                "summary": self.summary()}


def _manifest_entries(manifest: Any, report: VerifyReport) -> dict[str, dict[str, Any]]:
    """The well-formed file entries of a parsed manifest; every malformed part becomes a ``manifest`` problem."""
    if not isinstance(manifest, dict):
        report.add(MANIFEST, "manifest", f"malformed manifest: top level is {type(manifest).__name__}, not an object")
        return {}
    if manifest.get("format") not in RELEASE_SCHEMAS:
        report.add(MANIFEST, "manifest", f"unknown release format {manifest.get('format')!r} "
                                         f"(expected one of {', '.join(map(repr, RELEASE_SCHEMAS))})")
    rows = manifest.get("rows")
    if isinstance(rows, int) and not isinstance(rows, bool) and rows >= 0:
        report.rows_manifest = rows
    else:
        report.add(MANIFEST, "manifest", f"malformed manifest: 'rows' must be a count, got {rows!r}")
    files = manifest.get("files")
    if not isinstance(files, list):
        report.add(MANIFEST, "manifest", f"malformed manifest: 'files' must be a list, got {type(files).__name__}")
        return {}
    entries: dict[str, dict[str, Any]] = {}
    for i, e in enumerate(files):
        problem = None
        if not isinstance(e, dict):
            problem = "is not an object"
        elif not isinstance(e.get("path"), str) or not e["path"]:
            problem = "has no 'path'"
        else:
            rel = PurePosixPath(e["path"])
            plain = not rel.is_absolute() and ".." not in rel.parts and "\\" not in e["path"] and str(rel) == e["path"]
            if not plain or e["path"] == MANIFEST:
                problem = f"path {e['path']!r} is not a plain path inside the release"
            elif not isinstance(e.get("sha256"), str) or not _SHA256.fullmatch(e["sha256"]):
                problem = f"({e['path']}) has no valid 'sha256'"
            elif not isinstance(e.get("bytes"), int) or isinstance(e["bytes"], bool) or e["bytes"] < 0:
                problem = f"({e['path']}) has no valid 'bytes'"
            elif "rows" in e and (not isinstance(e["rows"], int) or isinstance(e["rows"], bool) or e["rows"] < 0):
                problem = f"({e['path']}) has an invalid 'rows'"
            elif e["path"] in entries:
                problem = f"lists {e['path']!r} twice"
        if problem:
            report.add(MANIFEST, "manifest", f"malformed manifest: files[{i}] {problem}")
        else:
            entries[e["path"]] = e
    return entries


def _walk_release(release_dir: Path, report: VerifyReport) -> set[str]:
    """Regular files of the release (relative posix paths, manifest excluded); symlinks, temporary files and
    special files (FIFOs, sockets) are problems and never opened."""
    present: set[str] = set()
    for root, dirs, files in os.walk(release_dir, followlinks=False):
        base = Path(root)
        for name in sorted(dirs):
            if (base / name).is_symlink():
                report.add((base / name).relative_to(release_dir).as_posix(), "symlink",
                           "symlink (a release holds only regular files)")
        dirs[:] = sorted(d for d in dirs if not (base / d).is_symlink())
        for name in sorted(files):
            p = base / name
            rel = p.relative_to(release_dir).as_posix()
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                report.add(rel, "symlink", "symlink (a release holds only regular files)")
            elif name.endswith(".tmp"):
                report.add(rel, "temporary", "leftover temporary file (from an interrupted write)")
            elif not stat.S_ISREG(st.st_mode):
                report.add(rel, "not_regular", "not a regular file")
            elif rel != MANIFEST:
                present.add(rel)
    return present


def check_release(release_dir: str | Path) -> VerifyReport:
    """Check a release against its manifest: every listed file present, unaltered (size, sha256) and with its
    row count; no extra, temporary, symlinked or special file; the total row count as listed. A malformed manifest
    is a problem like any other, never an exception."""
    release_dir = Path(release_dir)
    report = VerifyReport(str(release_dir))
    mpath = release_dir / MANIFEST
    if not release_dir.is_dir():
        report.add(".", "missing", "not a folder")
        return report
    if mpath.is_symlink() or not mpath.is_file():
        report.add(MANIFEST, "symlink" if mpath.is_symlink() else "missing",
                   "manifest is a symlink" if mpath.is_symlink() else "manifest missing")
        return report
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (ValueError, OSError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        report.add(MANIFEST, "manifest", f"unreadable manifest ({type(e).__name__}: {e})")
        return report
    listed = _manifest_entries(manifest, report)
    fmt = manifest.get("format") if isinstance(manifest, dict) and manifest.get("format") in RELEASE_SCHEMAS else None
    kept_spec = manifest.get("kept_columns") if isinstance(manifest, dict) else None
    kept: list[pa.Field] = []
    if isinstance(kept_spec, dict):
        for name, tp in kept_spec.items():
            if tp in KEPT_TYPES and isinstance(name, str):
                kept.append(pa.field(name, KEPT_TYPES[tp]))
            else:
                report.add(MANIFEST, "manifest", f"malformed manifest: kept column {name!r} has type {tp!r}")
    elif kept_spec is not None:
        report.add(MANIFEST, "manifest", "malformed manifest: 'kept_columns' must be an object")
    report.files_listed = len(listed)
    present = _walk_release(release_dir, report)
    for rel in sorted(set(listed) - present):
        report.add(rel, "missing", "missing")
    for rel in sorted(present - set(listed)):
        report.add(rel, "extra", "extra file not in manifest")
    listed_rows = 0
    for rel in sorted(set(listed) & present):
        entry, p = listed[rel], release_dir / rel
        report.files_checked += 1
        if rel.startswith("data/") and "rows" in entry:
            listed_rows += entry["rows"]
        if p.stat().st_size != entry["bytes"] or sha256_file(p) != entry["sha256"]:
            report.add(rel, "altered", "altered (sha256 mismatch)")
            continue
        if p.suffix == ".parquet":
            try:
                n = pq.ParquetFile(p).metadata.num_rows
            except (pa.ArrowException, OSError) as e:
                report.add(rel, "altered", f"not a readable parquet file ({e})")
                continue
            if rel.startswith("data/"):
                report.rows_found += n
                problem = schema_problem(pq.ParquetFile(p).schema_arrow, fmt, kept)
                if problem:
                    report.add(rel, "schema", f"not the {fmt or RELEASE_FORMAT} release schema: {problem}")
            if "rows" in entry and n != entry["rows"]:
                report.add(rel, "rows", f"row count differs from manifest ({n} != {entry['rows']})")
    if report.rows_manifest is not None and report.rows_manifest != listed_rows:
        report.add(MANIFEST, "rows", f"total rows {report.rows_manifest} != {listed_rows}, the sum over its data files")
    if fmt not in (None, "mrbench-release/1"):  # contiguous names since format 2
        _check_data_names(sorted(r for r in listed if r.startswith("data/")), report)
    return report


def _check_data_names(data_files: list[str], report: VerifyReport) -> None:
    """Format 2 names each split's data files ``{split}-{i:05d}-of-{k:05d}.parquet`` with i = 0..k-1: a gap means
    a missing file, whatever the manifest lists."""
    per_split: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for rel in data_files:
        m = RELEASE_FILE.fullmatch(rel)
        if not m or m["split"] not in SPLITS:
            report.add(rel, "naming", "not a data file name (data/{split}-{i:05d}-of-{k:05d}.parquet)")
        else:
            per_split[m["split"]].append((int(m["shard"]), int(m["of"])))
    for split, got in sorted(per_split.items()):
        k = len(got)
        if sorted(got) != [(i, k) for i in range(k)]:
            found = ", ".join(f"{i:05d}-of-{o:05d}" for i, o in sorted(got))
            report.add(f"data/{split}-*", "naming",
                       f"the {split} files are not numbered 00000..{k - 1:05d} of {k:05d} (found {found})")


def verify_release(release_dir: str | Path) -> list[str]:
    """Check every file against the manifest; returns problems as ``path: message`` (empty when intact)."""
    return [str(p) for p in check_release(release_dir).problems]


def default_images_dir(release_dir: str | Path) -> Path:
    """Where ``extract-images`` writes by default: ``<release>-easyref`` next to the release, never inside it
    (files inside would make the release fail ``verify``)."""
    release_dir = Path(release_dir).resolve()
    return release_dir.parent / f"{release_dir.name}-easyref"


def extract_images(release_dir: str | Path, out: str | Path | None = None) -> tuple[Path, int]:
    """Write every image of a verified release as ``OUT/images/<id>.<format>`` and copy its EasyRef JSON to
    ``OUT`` (whose ``images/...`` paths then resolve). A shared release is untrusted input: it is verified first,
    every id must have the release id format and every format be a bare extension, and files are created only
    inside ``OUT/images`` (no symlink followed).

    Returns:
        The images folder and the number of images written.

    Raises:
        ReleaseError: the release fails verification, holds a bad id or format, or ``out`` is inside it.
    """
    release_dir = Path(release_dir)
    report = check_release(release_dir)
    if not report.ok:
        raise ReleaseError(f"{release_dir} failed verification; nothing extracted:\n" +
                           "\n".join(f"  {p}" for p in report.problems[:20]) + "\n" + report.summary())
    root = release_dir.resolve()
    given = Path(out).absolute() if out is not None else default_images_dir(release_dir)
    for p in (given, given / "images"):  # checked before anything is written (mkdir would follow them)
        if p.is_symlink():
            raise UnsafeOutputError(f"{p} is a symlink; refusing to write through it (remove it or choose another --out)")
    out_dir = given.resolve()
    if out_dir == root or root in out_dir.parents:
        raise UnsafeOutputError(f"--out {out_dir} is inside the release {root}; choose a folder outside it")
    data_files = sorted(p for p in (root / "data").glob("*.parquet")) if (root / "data").is_dir() else []
    bad: list[str] = []
    for f in data_files:  # ids and formats first: a bad release writes nothing
        for batch in pq.ParquetFile(f).iter_batches(columns=["id", "format"], batch_size=8192):
            for rid, fmt in zip(*(batch.column(c).to_pylist() for c in ("id", "format"))):
                if not isinstance(rid, str) or not RELEASE_ID.fullmatch(rid):
                    bad.append(f"{f.name}: id {rid!r} is not a release id (16 hex digits)")
                elif fmt and not IMAGE_EXTENSION.fullmatch(fmt):
                    bad.append(f"{f.name}: id {rid}: format {fmt!r} is not an image extension")
    if bad:
        raise ReleaseError(f"{release_dir}: {len(bad)} row(s) with a bad id or format; nothing extracted:\n" +
                           "\n".join(f"  {b}" for b in bad[:20]))
    images = out_dir / "images"
    images.mkdir(parents=True, exist_ok=True)
    dir_fd = _open_dir(images)
    n = 0
    try:
        for f in data_files:
            for batch in pq.ParquetFile(f).iter_batches(columns=["id", "format", "image"], batch_size=256):
                cols = [batch.column(c).to_pylist() for c in ("id", "format")] + [image_bytes(batch.column("image"))]
                for rid, fmt, data in zip(*cols):
                    _write_in(dir_fd, f"{rid}.{fmt or 'jpg'}", data or b"")
                    n += 1
        out_fd = _open_dir(out_dir)
        try:
            for js in sorted((root / "easyref").glob("*.json")) if (root / "easyref").is_dir() else []:
                _write_in(out_fd, js.name, js.read_bytes())
        finally:
            os.close(out_fd)
    finally:
        os.close(dir_fd)
    return images, n


def _open_dir(path: Path) -> int:
    """Open a folder to write in; a symlink in its place is refused (not followed)."""
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR) and path.is_symlink():
            raise UnsafeOutputError(f"{path} is a symlink; refusing to write through it") from None
        raise


def _write_in(dir_fd: int, name: str, data: bytes) -> None:
    """Create or replace file ``name`` directly in the open folder ``dir_fd``, never through a symlink."""
    try:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644, dir_fd=dir_fd)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UnsafeOutputError(f"{name} in the output folder is a symlink; refusing to write through it") from None
        raise
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
