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

The release and finalize steps live here; what a release is (schema, names, formats) in :mod:`curation.release_format`,
its checks in :mod:`curation.release_verify`, the EasyRef JSON in :mod:`curation.easyref_export` and
``extract-images`` in :mod:`curation.release_extract`.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mrbench.config import ConfigError, to_dict
from mrbench.curation.card import write_card
from mrbench.curation.config import CurateConfig
from mrbench.curation.crawl import KEPT
from mrbench.curation.easyref_export import easyref_faces, write_easyref_json
from mrbench.curation.group import ASSIGN_SCHEMA
from mrbench.curation.inputs import kept_fields
from mrbench.curation.release_format import (
    MANIFEST, REJECT_SCHEMA, RELEASE_FORMAT, image_cells, release_data_files, release_file, release_kept_fields,
    release_schema,
)
from mrbench.curation.release_verify import verify_release
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
    if not parts.is_dir() and release_data_files(release_dir):
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
