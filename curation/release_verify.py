"""``mrbench release verify``: check a release folder against its ``manifest.json`` (files, sizes, sha256, rows,
schema, data file names); every finding is a named problem, never an exception."""

from __future__ import annotations

import json
import os
import re
import stat
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mrbench.curation.release_format import (
    KEPT_TYPES, MANIFEST, RELEASE_FILE, RELEASE_FORMAT, RELEASE_SCHEMAS, schema_problem,
)
from mrbench.curation.split import SPLITS
from mrbench.shards import sha256_file

_SHA256 = re.compile(r"[0-9a-f]{64}")



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
