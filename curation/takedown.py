"""Takedowns: a new release without some images (``mrbench release remove``), the old one left as it is.

``remove_images(RELEASE, OUT, ids=FILE, urls=FILE, sha256=FILE)`` verifies RELEASE, then writes OUT:

* the data files without the listed rows (matched by ``id``, exact ``url`` or image ``sha256``; the files are the
  block-list files of :mod:`curation.blocklist`, so the same file passed as ``crawl.blocklists`` keeps the images
  out of later curations), each split renumbered ``00000..k-1`` as format 2 wants;
* groups left with fewer than the release's ``group.min_group_size`` images leave whole (their other rows are
  counted as ``group_too_small``); a group whose target was removed gets the remaining member of lowest seeded rank
  as its target, the rule the grouping step uses (:func:`curation.group.rank`);
* the EasyRef JSON from the remaining rows (face boxes carried over from the parent's face records);
* the dataset card again, with the parent's drop table and a section naming this removal;
* a manifest recording the parent (name and manifest sha256), each removal list's sha256 and kind, and the counts
  (inherited removals first, so a chain of takedowns stays visible).

OUT is written beside itself under a temporary name and renamed when complete; an existing OUT is refused (nothing
the user wrote is replaced), as is an OUT inside RELEASE. RELEASE is only read.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mrbench.config import ConfigError, from_dict
from mrbench.curation.config import BlocklistConfig, CurateConfig
from mrbench.curation.blocklist import read_entries
from mrbench.curation.card import write_card
from mrbench.curation.easyref_export import EASYREF_FILES, write_easyref_json
from mrbench.curation.release import write_manifest
from mrbench.curation.release_format import (
    MANIFEST, RELEASE_FILE, RELEASE_FORMAT, ReleaseError, UnsafeOutputError, release_data_files, release_file,
)
from mrbench.curation.release_verify import check_release, verify_release
from mrbench.curation.split import SPLITS

REMOVAL_KINDS = ("id", "url", "sha256")  # release columns a removal list matches


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _release_config(manifest: dict[str, Any]) -> CurateConfig:
    """The parent's config as its manifest records it (input paths reduced to names; enough for card and manifest)."""
    cfg = dict(manifest.get("config") or {})
    try:
        return from_dict(CurateConfig, cfg)
    except ConfigError as e:
        raise ReleaseError(f"the release's manifest holds a config this mrbench cannot read ({e})") from None


def _parent_faces(release: Path) -> dict[str, list[float]]:
    """Image id -> face box of the parent's face records (``easyref/stage1-2_face.json``)."""
    path = release / "easyref" / EASYREF_FILES["face"]
    if not path.is_file():
        return {}
    out = {}
    for rec in json.loads(path.read_text(encoding="utf-8")):
        rid = Path(rec["target"]).name.split(".", 1)[0]
        out[rid] = rec["face"][0]
    return out


def _drop_section(card: str) -> list[str]:
    """The parent card's ``## Rows dropped`` section (the curation's drops), to carry into the new card."""
    lines = card.splitlines()
    if "## Rows dropped" not in lines:
        return []
    start = lines.index("## Rows dropped")
    end = next((k for k in range(start + 1, len(lines)) if lines[k].startswith("## ")), len(lines))
    return lines[start:end]


def remove_images(release_dir: str | Path, out: str | Path, lists: list[tuple[str, str | Path]]) -> dict[str, Any]:
    """Write ``out``: the release without the rows the lists name (see the module docstring).

    Args:
        release_dir: A release that verifies.
        out: The new release folder (must not exist).
        lists: (kind, file) pairs; kind ``id``, ``url`` or ``sha256``.

    Returns:
        The removal record written to the new manifest (``removed``, ``group_too_small``, ``retargeted``, ...).

    Raises:
        ConfigError: no list, an unknown kind, an unreadable list or a malformed line.
        ReleaseError: the release fails verification or is of an older format; ``out`` exists or lies inside it.
    """
    release = Path(release_dir)
    if not lists:
        raise ConfigError("give at least one of --ids FILE, --urls FILE, --sha256 FILE")
    wanted: dict[str, set[str]] = defaultdict(set)
    records = []
    for kind, path in lists:
        if kind not in REMOVAL_KINDS:
            raise ConfigError(f"removal lists are one of {', '.join(REMOVAL_KINDS)}, not {kind!r}")
        entries = read_entries(BlocklistConfig(str(path), kind))
        wanted[kind].update(entries)
        records.append({"kind": kind, "file": Path(path).name, "sha256": _sha256(Path(path)), "entries": len(entries)})
    report = check_release(release)
    if not report.ok:
        raise ReleaseError(f"{release} failed verification; nothing removed:\n"
                           + "\n".join(f"  {p}" for p in report.problems[:20]) + "\n" + report.summary())
    manifest_bytes = (release / MANIFEST).read_bytes()
    manifest = json.loads(manifest_bytes)
    if manifest.get("format") != RELEASE_FORMAT:
        raise ReleaseError(f"{release} is of format {manifest.get('format')!r}; `release remove` writes "
                           f"{RELEASE_FORMAT} releases only (re-curate it with this mrbench first)")
    root, target = release.resolve(), Path(out).resolve()
    if target == root or root in target.parents:
        raise UnsafeOutputError(f"--out {target} is inside the release {root}; choose a folder outside it")
    if target.exists() or target.is_symlink():
        raise UnsafeOutputError(f"--out {target} exists; give a new folder (nothing is overwritten)")
    config = _release_config(manifest)

    # 1. Which rows go: listed rows, then the rest of groups left below the minimum size.
    data = release_data_files(release)
    cols = ["id", "url", "sha256", "group", "role"]
    index = pa.concat_tables([pq.read_table(f, columns=cols) for f in data]) if data else None
    listed: set[str] = set()
    if index is not None:
        for kind, values in wanted.items():
            hit = pc.is_in(index.column(kind), value_set=pa.array(sorted(values), pa.string()))
            listed.update(index.filter(hit).column("id").to_pylist())
    members: dict[str, list[str]] = defaultdict(list)
    for rid, group in zip(*(index.column(c).to_pylist() for c in ("id", "group"))) if index is not None else []:
        members[group].append(rid)
    gone, small_groups, retarget = set(listed), [], {}
    targets = {} if index is None else dict(
        (g, r) for r, g, role in zip(*(index.column(c).to_pylist() for c in ("id", "group", "role"))) if role == "target")
    from mrbench.curation.group import rank

    for group, ids in members.items():
        left = [r for r in ids if r not in listed]
        if len(left) == len(ids):
            continue
        if len(left) < config.group.min_group_size:
            small_groups.append(group)
            gone.update(left)
        elif targets.get(group) in listed:
            retarget[group] = min(left, key=lambda r: rank(config.seed, r))

    # 2. The new release, written under a temporary name beside OUT.
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        kept_files: dict[str, list[pa.Table]] = defaultdict(list)
        for f in data:
            m = RELEASE_FILE.fullmatch(f"data/{f.name}")
            table = pq.read_table(f)
            keep = pc.invert(pc.is_in(table.column("id"), value_set=pa.array(sorted(gone), pa.string())))
            table = table.filter(keep)
            if retarget and table.num_rows:
                role = [("target" if retarget.get(g) == r else "reference") if g in retarget else ro
                        for r, g, ro in zip(*(table.column(c).to_pylist() for c in ("id", "group", "role")))]
                table = table.set_column(table.schema.get_field_index("role"), table.schema.field("role"),
                                         pa.array(role, pa.string()))
            if table.num_rows:
                kept_files[m["split"] if m else "train"].append(table)
        for split in SPLITS:
            tables = kept_files.get(split, [])
            for i, t in enumerate(tables):
                path = tmp / release_file(split, i, len(tables))
                path.parent.mkdir(parents=True, exist_ok=True)
                pq.write_table(t, path, compression=config.release.compression, row_group_size=1024)
        (tmp / "data").mkdir(exist_ok=True)
        if config.release.easyref_json:
            write_easyref_json(tmp, _parent_faces(release))
        removal = {
            "lists": records, "listed_rows_removed": len(listed), "group_too_small": len(gone) - len(listed),
            "groups_removed": len(small_groups), "rows_removed": len(gone), "retargeted_groups": len(retarget),
        }
        parent_card = (release / "README.md").read_text(encoding="utf-8") if (release / "README.md").is_file() else ""
        notes = _drop_section(parent_card) + [""] + takedown_section(manifest, removal)
        write_card(tmp, config, None, notes=notes)
        history = list(manifest.get("removals") or [])
        history.append({"parent": {"name": manifest.get("name"), "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest(),
                                   "rows": manifest.get("rows")}, **removal})
        write_manifest(tmp, config, extra={"removals": history, "parent": history[-1]["parent"]})
        problems = verify_release(tmp)
        if problems:
            raise ReleaseError(f"the new release failed its own verification: {problems[:5]}")
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return removal


def takedown_section(manifest: dict[str, Any], removal: dict[str, Any]) -> list[str]:
    """Card lines naming a removal: the parent, the lists (by sha256) and the rows and groups that left."""
    lists = "; ".join(f"{r['kind']} list `{r['file']}` (sha256 `{r['sha256'][:16]}…`, {r['entries']} entries)"
                      for r in removal["lists"])
    prior = len(manifest.get("removals") or [])
    return ["## Removed after release", "",
            f"This release is the release `{manifest.get('name')}` of {manifest.get('rows')} images after "
            f"{'another takedown' if prior else 'a takedown'} (`mrbench release remove`): {lists}. "
            f"{removal['listed_rows_removed']} listed images removed, and {removal['group_too_small']} more whose group "
            f"fell below the minimum size ({removal['groups_removed']} groups); {removal['retargeted_groups']} groups got "
            "a new target. `manifest.json` records the parent release and each list's sha256.", ""]
