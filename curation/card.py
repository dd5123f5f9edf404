"""The release's dataset card, ``README.md``: a Hugging Face Hub YAML header, then what a user needs to trust,
understand and load the release.

Header (the Hub's dataset-card metadata): ``license`` (``release.license``), ``task_categories``, ``tags``,
``size_categories``, ``configs`` (one ``default`` config whose ``data_files`` name each split's files, so
``datasets.load_dataset(RELEASE_DIR_OR_REPO, split=...)`` finds them) and ``dataset_info`` (the features, ``image``
as an Image feature, and each split's row count).

Body: how to load it; a column table (name, type, meaning); images and groups per category and split; group-size
statistics per split; the curation settings (sources, models, thresholds, seed, shards); the rows dropped per
reason (with a run folder); a small example grid (target and references as thumbnails written to
``card/examples/``, listed in the manifest like every file); the license note.

Like the rest of a release, the card depends only on the run's inputs and seed: no time, no absolute path.
"""

from __future__ import annotations

import html
import json
import re
import statistics
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from mrbench.curation.config import CurateConfig
from mrbench.curation.drops import drop_step
from mrbench.curation.release_format import (
    RELEASE_FILE, RELEASE_SCHEMA, image_bytes, release_data_files, release_kept_fields, release_schema,
)
from mrbench.curation.split import SPLITS
from mrbench.images import load_image
from mrbench.layout import RunLayout
from mrbench.pages import jpeg_thumbnail
from mrbench.shards import atomic_write_bytes, atomic_write_text
from mrbench.thresholds import for_setting

CARD = "README.md"
EXAMPLES_DIR = "card/examples"
EXAMPLE_GROUPS_PER_SPLIT = 2
EXAMPLE_REFERENCES = 4
THUMB_SIZE = 160
SPLIT_ORDER = ("train", "held_in", "held_out")  # the card shows training data first

# What each release column holds (the column table of the card).
COLUMNS = {
    "id": "Image id: the first 16 hex digits of the SHA-1 of the source URL, assigned once at ingest.",
    "url": "Where the image came from: the web URL, or for folder sources the file's path relative to the source "
           "folder (e.g. `cats/001.jpg`), never a path on the curator's machine.",
    "caption": "The source's caption (alt text) as written; for folder sources the folder name.",
    "prompt": "The caption with every mention of a tag (name or alias, found by the crawl's matcher) replaced by its "
              "noun (`a person`, `a character`, `the style`, a subject's class noun): the evaluation prompt, which "
              "never names the identity a model is asked to reproduce.",
    "tags": "Tags matched in the caption (the tag list of the run); the first one named the group.",
    "category": "The tag's category (subject, style, celebrity, character, ...).",
    "group": "Group id: the images of one subject, style or identity. A group lies in exactly one split.",
    "split": "`train`, `held_in` or `held_out` (by group, never by image).",
    "role": "`target` (one per group: the image to reproduce) or `reference` (the conditioning images).",
    "image": "The encoded image (the publisher's bytes unless re-encoded, see `encoding`); loads as a PIL image.",
    "format": "File format of `image` (jpg, png, webp, ...).",
    "width": "Width in pixels.",
    "height": "Height in pixels.",
    "sha256": "SHA-256 of the image bytes.",
    "encoding": "`original` (the publisher's bytes) or how the image was re-encoded (resize mode, format).",
}

KEPT_MEANING = "Carried from the source metadata (`sources[].keep_columns`), as the source gave it."


def _yaml_feature(name: str, t: pa.DataType) -> dict[str, Any]:
    """One ``dataset_info.features`` entry, as the Hub writes them (``sequence`` keeps old ``datasets`` readers)."""
    if pa.types.is_struct(t):
        return {"name": name, "dtype": "image"}
    if pa.types.is_list(t):
        return {"name": name, "sequence": str(t.value_type)}
    return {"name": name, "dtype": str(t)}


def _type_label(t: pa.DataType) -> str:
    return "image" if pa.types.is_struct(t) else f"list of {t.value_type}" if pa.types.is_list(t) else str(t)


def size_category(n: int) -> str:
    """The Hub's ``size_categories`` bucket of ``n`` rows."""
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                         (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B")):
        if n < limit:
            return label
    return "n>1T" if n > 10**12 else "1B<n<10B" if n < 10**10 else "10B<n<100B" if n < 10**11 else "100B<n<1T"


def split_sizes(release_dir: Path) -> dict[str, tuple[int, int]]:
    """Per split: (uncompressed bytes of its data, from the parquet footers; bytes of its files on disk)."""
    sizes: dict[str, tuple[int, int]] = {}
    for f in release_data_files(release_dir):
        m = RELEASE_FILE.fullmatch(f"data/{f.name}")
        if not m:
            continue
        md = pq.ParquetFile(f).metadata
        data = sum(md.row_group(i).total_byte_size for i in range(md.num_row_groups))
        old = sizes.get(m["split"], (0, 0))
        sizes[m["split"]] = (old[0] + data, old[1] + f.stat().st_size)
    return sizes


def card_metadata(config: CurateConfig, rows_per_split: dict[str, int],
                  sizes: dict[str, tuple[int, int]] | None = None, schema: pa.Schema = RELEASE_SCHEMA) -> dict[str, Any]:
    """The YAML header: license, task, tags, size, ``configs`` (data files per split), ``dataset_info`` (features;
    splits with ``num_examples`` and ``num_bytes``, which the Hub needs to read the splits; ``dataset_size`` and
    ``download_size``)."""
    sizes = sizes or {}
    present = [s for s in SPLITS if rows_per_split.get(s)]
    total = sum(rows_per_split.values())
    meta: dict[str, Any] = {
        "pretty_name": config.release.name,
        "license": config.release.license,
        "task_categories": ["text-to-image"],
        "tags": ["multi-reference", "subject-driven-generation", "image-generation", "mrbench"],
        "size_categories": [size_category(total)],
    }
    if present:  # a config without files would make load_dataset fail; an empty release has none
        meta["configs"] = [{"config_name": "default", "data_files": [
            {"split": s, "path": f"data/{s}-*.parquet"} for s in present]}]
    meta["dataset_info"] = {
        "features": [_yaml_feature(f.name, f.type) for f in schema],
        "splits": [{"name": s, "num_bytes": sizes.get(s, (0, 0))[0], "num_examples": rows_per_split[s]}
                   for s in present],
        "download_size": sum(sizes.get(s, (0, 0))[1] for s in present),
        "dataset_size": sum(sizes.get(s, (0, 0))[0] for s in present),
    }
    return meta


def _read_index(release_dir: Path) -> pa.Table:
    """The release's small columns (id, category, group, split, role) as one table; never the images or captions,
    so a paper-scale release stays cheap (the statistics are group-bys over it)."""
    cols = ["id", "category", "group", "split", "role"]
    files = release_data_files(release_dir)
    if not files:
        return pa.table({c: pa.array([], pa.string()) for c in cols})
    t = pa.concat_tables([pq.read_table(f, columns=cols) for f in files])
    cat = pc.fill_null(t.column("category"), "")
    return t.set_column(1, "category", pc.if_else(pc.equal(cat, ""), "-", cat))


# Markdown punctuation that can start emphasis, code, links, images, headings or strikethrough (``|`` is the
# table cell's to escape); ``<``, ``>`` and ``&`` become entities, so no raw HTML ever reaches a renderer.
_MD_PUNCT = re.compile(r"([\\`*_\[\]#!~])")


def md_text(value: Any) -> str:
    """``value`` (web text: a caption, a name) as literal markdown text on one line: whatever it holds renders as
    the characters it is, never as HTML, a link or formatting."""
    text = html.escape(" ".join(str(value).split()), quote=False)
    return _MD_PUNCT.sub(r"\\\1", text)


def _md_code(value: Any) -> str:
    """``value`` as a code span, or as escaped text when it holds a backtick (which would end the span)."""
    text = " ".join(str(value).split())
    return f"`{text}`" if "`" not in text else md_text(text)


def _md_table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    return (["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
            + ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows] + [""])


def _fmt(x: float) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".")  # 4, 3.5, 3.33


def _groups(t: pa.Table) -> list[dict[str, Any]]:
    """One dict per group: group, split, size, category (its target's), sorted by group id."""
    sizes = t.group_by(["group", "split"]).aggregate([("id", "count")]).to_pylist()
    targets = t.filter(pc.equal(t.column("role"), "target")).select(["group", "category"]).to_pylist()
    category = {r["group"]: r["category"] for r in targets}
    return sorted(({"group": r["group"], "split": r["split"], "size": r["id_count"],
                    "category": category.get(r["group"], "-")} for r in sizes), key=lambda g: g["group"])


def _group_stats(t: pa.Table, groups: list[dict[str, Any]]) -> list[str]:
    """Markdown: images and groups per category and split, then group-size statistics per split."""
    images = {(r["category"], r["split"]): r["id_count"]
              for r in t.group_by(["category", "split"]).aggregate([("id", "count")]).to_pylist()}
    n_groups: Counter[tuple[str, str]] = Counter((g["category"], g["split"]) for g in groups)
    sizes: dict[str, list[int]] = defaultdict(list)
    for g in groups:
        sizes[g["split"]].append(g["size"])
    cats = sorted({c for c, _ in images} | {c for c, _ in n_groups})
    out = ["## Images and groups per category and split", "", "Each cell: images / groups.", ""]
    body = []
    for c in cats:
        body.append([md_text(c), *(f"{images.get((c, s), 0)} / {n_groups[(c, s)]}" for s in SPLITS),
                     f"{sum(images.get((c, s), 0) for s in SPLITS)} / {sum(n_groups[(c, s)] for s in SPLITS)}"])
    body.append(["**all**", *(f"{sum(sizes[s])} / {len(sizes[s])}" for s in SPLITS), f"{t.num_rows} / {len(groups)}"])
    out += _md_table(["category", *SPLITS, "total"], body)
    out += ["## Group sizes", "", "Images per group (one target plus its references).", ""]
    stat_rows = []
    for s in [*SPLITS, "all"]:
        v = [g["size"] for g in groups] if s == "all" else sizes[s]
        stat_rows.append([s, len(v), *((min(v), _fmt(statistics.median(v)), _fmt(statistics.fmean(v)), max(v))
                                       if v else ("-",) * 4)])
    out += _md_table(["split", "groups", "min", "median", "mean", "max"], stat_rows)
    return out


def _settings(config: CurateConfig, run_dir: Path | None) -> list[str]:
    """The curation settings that shaped the release: sources, models, thresholds, seed, shards."""
    models: dict[str, Any] = {}
    if run_dir is not None and RunLayout(run_dir).models.is_file():
        models = json.loads(RunLayout(run_dir).models.read_text())

    def model(role: str, name: str, options: dict[str, Any]) -> str:
        if not name:
            return "none"
        info = models.get(role, {})
        # Local paths are the curator's: a parenthesised one goes, any other keeps its file name only.
        weights = re.sub(r"\s*\([/~][^)]*\)", "", str(info.get("weights", "") or ""))
        weights = re.sub(r"(?<![\w~.])[/~](?:[^/\s()]*/)+", "", weights)
        extra = ", ".join(f"{k}={v}" for k, v in sorted(options.items()))
        return (f"`{name}`" + (f" ({extra})" if extra else "") + (f": {weights}" if weights else "")
                + (" **random weights**" if info.get("random_weights") else ""))

    sources = "; ".join(f"{s.kind}: {', '.join(Path(p).name for p in s.paths)}" for s in config.sources) or "-"
    c, g, f, e = config.crawl, config.group, config.filters, config.embed
    near_dup = for_setting(config, "dedup.threshold")
    dedup = "off" if near_dup is None or not config.dedup.enabled else near_dup.describe("near_duplicate")
    audit_nd = for_setting(config, "audit.near_dup_threshold")
    identity = for_setting(config, "audit.identity_threshold")
    audit = ("off" if not (config.audit.enabled and (e.encoder or e.face_encoder))
             else "; ".join(p.describe(t) for t, p in (("near_duplicate", audit_nd), ("identity", identity)) if p)
                  + ("; training images of leaking pairs removed" if config.audit.remove_train_leaks else ""))
    group_identity = for_setting(config, "group.identity_threshold")
    rows = [
        ["sources", sources],
        ["tag list", Path(c.tag_list).name if c.tag_list else "- (folder names)"],
        ["seed / shards", f"{config.seed} / {config.num_shards}"],
        ["candidates per tag", c.max_candidates_per_tag],
        ["image bytes", "original" if c.resize_mode == "no" and not c.convert_format
         else f"re-encoded: {c.resize_mode} {c.image_size}px, {c.encode_format}"],
        ["image encoder", model("encoder", e.encoder, e.encoder_options)],
        ["face encoder", model("face_encoder", e.face_encoder, e.face_options)
         + (f" on {', '.join(e.face_categories)}" if e.face_encoder else "")],
        ["object detector", model("detector", e.detector, e.detector_options)],
        ["near-duplicates (global)", dedup],
        ["filters", ", ".join(x for x in (f"shorter side >= {f.min_side}px" if f.min_side else "",
                                          f"aspect <= {f.max_aspect}" if f.max_aspect else "",
                                          "face policy" if f.face and e.face_encoder else "",
                                          "object check" if f.object and e.detector else "") if x) or "none"],
        ["group size", f"{g.min_group_size}..{g.max_group_size} images"],
        ["one identity per person group", group_identity.describe("identity") if group_identity else "off"],
        ["group consistency", f"cosine to the rest of the group >= {g.consistency_min} "
                              f"({', '.join(g.consistency_categories)})" if e.encoder and g.consistency_min else "off"],
        ["near-duplicates in a group", f"cosine >= {g.dedup_threshold}" if e.encoder and g.dedup_threshold is not None
         else "off"],
        ["leakage audit", audit],
        ["split (groups requested)", f"held_out {config.split.held_out_groups}, held_in {config.split.held_in_groups}, "
                                     "the rest train"],
    ]
    return ["## Curation settings", "",
            "`manifest.json` holds the whole resolved config and the package versions.", "",
            *_md_table(["setting", "value"], rows)]


def _drops(run_dir: Path | None, released: int) -> list[str]:
    """Rows that did not make the release, per reason and the step that dropped them (from ``rejects/``)."""
    rejects = RunLayout(run_dir).rejects if run_dir is not None else None
    if rejects is None or not rejects.folder.is_dir():
        return []
    counts: Counter[str] = Counter()
    for f in rejects.existing():
        counts.update(pq.read_table(f, columns=["status"]).column("status").to_pylist())
    total = released + sum(counts.values())
    out = ["## Rows dropped", "",
           f"{total} selected URLs or files: {released} released, {total - released} dropped. Every drop has a named "
           "reason (the run folder's `rejects/` lists each row).", ""]
    if counts:
        out += _md_table(["reason", "step", "rows"],
                         [[r, drop_step(r), n] for r, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))])
    return out


def _thumbnail(data: bytes | None) -> bytes | None:
    """A JPEG thumbnail of encoded image bytes, oriented as displayed (:func:`mrbench.images.load_image`)."""
    if not data:
        return None
    try:
        return jpeg_thumbnail(load_image(data), THUMB_SIZE, quality=85)
    except (OSError, ValueError, SyntaxError):  # what PIL raises for bytes that do not decode
        return None


def _leakage(release_dir: Path, run_dir: Path | None, written: set[str]) -> list[str]:
    """What the leakage audit cost: training images removed per kind, and the leaking pairs to look at, with
    thumbnails of both sides (``card/examples/leak_<id>.jpg``; the names go into ``written``)."""
    from mrbench.curation.audit import read_report, shown_leak_pairs
    from mrbench.curation.report import run_images

    report = read_report(run_dir) if run_dir is not None else None
    if report is None:
        return []
    by_kind = report.get("removed_train_images_by_kind", {})
    cuts = [f"{k.replace('_', '-')} cosine >= {report[f]}" for k, f in (("near_duplicate", "near_dup_threshold"),
                                                                       ("identity", "identity_threshold"))
            if report.get(f) is not None]
    lines = ["## Leakage audit", "",
             f"Images of different splits were compared ({'; '.join(cuts)}). {report.get('pairs_total', 0)} leaking "
             f"pairs; {report.get('removed_train_images', 0)} training images removed"
             + (" (" + ", ".join(f"{n} as {k.replace('_', '-')} leaks" for k, n in by_kind.items()) + ")"
                if by_kind else "") + ". Pairs between the two test splits are reported, not removed.", ""]
    pairs = shown_leak_pairs(run_dir)  # type: ignore[arg-type]
    if not pairs:
        return lines
    data = run_images(run_dir, {r["id_a"] for r in pairs} | {r["id_b"] for r in pairs})  # type: ignore[arg-type]
    folder = release_dir / EXAMPLES_DIR

    def cell(rid: str, split: str) -> str:
        thumb = _thumbnail(data.get(rid))
        if thumb is None:
            return f"`{split}` `{rid}`"
        name = f"leak_{rid}.jpg"
        atomic_write_bytes(folder / name, thumb)
        written.add(name)
        return f"![{split} {rid}]({EXAMPLES_DIR}/{name})"

    lines += ["The most similar leaking pairs and those nearest the threshold (where a false leak would be):", ""]
    return lines + _md_table(["kind", "earlier split", "later split", "cosine", "action"], [
        [r["kind"].replace("_", "-"), cell(r["id_a"], r["split_a"]), cell(r["id_b"], r["split_b"]),
         f"{r['similarity']:.4f}", r["action"]] for r in pairs])


def _examples(release_dir: Path, t: pa.Table, groups: list[dict[str, Any]], keep: set[str] | None = None) -> list[str]:
    """A few groups per split: target and references as thumbnails under ``card/examples/`` (older ones removed,
    except the names in ``keep``)."""
    picked = [g["group"] for split in SPLIT_ORDER
              for g in [g for g in groups if g["split"] == split][:EXAMPLE_GROUPS_PER_SPLIT]]
    rows = t.filter(pc.is_in(t.column("group"), pa.array(picked, pa.string()))).to_pylist()
    chosen: list[tuple[str, list[dict[str, Any]]]] = []
    for gid in picked:
        members = sorted((r for r in rows if r["group"] == gid), key=lambda r: (r["role"] != "target", r["id"]))
        chosen.append((gid, members[:1 + EXAMPLE_REFERENCES]))
    wanted = pa.array(sorted({r["id"] for _, ms in chosen for r in ms}), pa.string())
    data: dict[str, bytes] = {}
    captions: dict[str, str] = {}
    for f in release_data_files(release_dir):
        got = pq.read_table(f, columns=["id", "caption", "image"], filters=[("id", "in", wanted)])
        ids = got.column("id").to_pylist()
        data.update(zip(ids, image_bytes(got.column("image"))))
        captions.update(zip(ids, got.column("caption").to_pylist()))
    folder = release_dir / EXAMPLES_DIR
    written: set[str] = set(keep or ())
    lines = ["## Examples", "",
             f"{len(chosen)} groups, up to {EXAMPLE_GROUPS_PER_SPLIT} per split: the target first, then up to "
             f"{EXAMPLE_REFERENCES} of its references ({THUMB_SIZE}px thumbnails in `{EXAMPLES_DIR}/`).", ""]
    table = []
    for gid, members in chosen:
        cells = []
        for r in members:
            thumb = _thumbnail(data.get(r["id"]))
            if thumb is None:
                continue
            name = f"{r['id']}.jpg"
            atomic_write_bytes(folder / name, thumb)
            written.add(name)
            cells.append(f"![{r['role']} {r['id']}]({EXAMPLES_DIR}/{name})")
        target = members[0]
        caption = (captions.get(target["id"]) or "")[:80]
        table.append([f"`{target['split']}`", md_text(target["category"]), f"**{md_text(caption)}**" if caption else "-",
                      " ".join(cells)])
    if folder.is_dir():
        for p in sorted(folder.iterdir()):
            if p.name not in written:
                p.unlink()
    if not table:
        return []
    return lines + _md_table(["split", "category", "target caption", "target, references"], table)


def opt_out_section(config: CurateConfig, run_dir: Path | None) -> list[str]:
    """How a site owner opts out or asks for a takedown, and what this run left out for those reasons (opt-outs,
    block lists, metadata predicates; their rows are also in the drop table)."""
    token = config.crawl.user_agent_token or "mrbench"
    directives = ", ".join(f"`{d}`" for d in config.crawl.disallowed_header_directives)
    honoured = (f"an `X-Robots-Tag` header with one of {directives} (for every crawler, or for MRBench alone: "
                f"`X-Robots-Tag: {token}: noai`)" if directives else "")
    if config.crawl.honor_tdm_reservation:
        honoured = " or ".join(p for p in (honoured, "a `tdm-reservation: 1` header (W3C TDMRep)") if p)
    out = ["## Opting out and takedowns", "",
           f"MRBench's downloader names itself in its User-Agent as `{token}` "
           f"(`Mozilla/5.0 (compatible; {token})`). "
           + (f"An image served with {honoured} was not downloaded: its row is `opted_out` and none of its bytes "
              "were stored." if honoured else "This run did not honour opt-out headers (switched off in its config).")
           + " robots.txt is not read (as img2dataset does not): the opt-out travels with the image.", "",
           "To have an image removed from this release, send its `id`, `url` or `sha256`; the maintainer runs "
           "`mrbench release remove RELEASE --ids FILE --out NEW` (or `--urls`, `--sha256`) and passes the same "
           "file to later curations as a block list (`crawl.blocklists`), so the image does not come back.", ""]
    rows: list[list[Any]] = []
    for b in config.crawl.blocklists:
        rows.append([f"block list `{Path(b.path).name}` ({b.kind})", f"rows `blocked_{b.kind}` (table above)"])
    if run_dir is not None:
        from mrbench.curation.crawl import IngestTask

        layout = RunLayout(run_dir)
        ingest = layout.shards("ingest")
        if ingest.folder.is_dir():
            counts = ingest.merged_stats(IngestTask.num_shards(config)).counts
            for i, src in enumerate(config.sources):
                if src.where:
                    n = counts.get(f"ingest/where_failed/{i}", 0)
                    rows.append([f"sources[{i}] `where: {src.where}`", f"{n} rows never downloaded"])
    if rows:
        out += _md_table(["rule", "effect"], rows) + [""]
    return out


def write_card(release_dir: str | Path, config: CurateConfig, run_dir: str | Path | None = None,
               notes: list[str] | None = None) -> str:
    """Write ``README.md`` (and ``card/examples/*.jpg``) of the release in ``release_dir``.

    Args:
        release_dir: The release folder (its ``data/`` holds the split files).
        config: The run's config (name, license, settings shown).
        run_dir: The curation run folder, for the drops per reason and the models' weights; without it those
            parts are left out.
        notes: Markdown lines placed after the drops (``release remove``: the parent's drops and the takedown).

    Returns:
        The card's text.
    """
    release_dir = Path(release_dir)
    run = Path(run_dir) if run_dir is not None else None
    index = _read_index(release_dir)
    groups = _groups(index)
    per_split = {r["split"]: r["id_count"] for r in index.group_by("split").aggregate([("id", "count")]).to_pylist()}
    schema = release_schema(release_kept_fields(release_dir))  # with the sources' keep_columns
    meta = card_metadata(config, per_split, split_sizes(release_dir), schema)
    header = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=1000)
    present = [s for s in SPLITS if per_split.get(s)]
    stats_md = _group_stats(index, groups)
    leak_thumbs: set[str] = set()
    lines = [
        "---", header.rstrip("\n"), "---", "",
        f"# {md_text(config.release.name)}", "",
        "A grouped multi-reference image dataset curated with MRBench (`mrbench curate`). "
        "Each group holds the images of one subject, style or identity: one `target` image and its `reference` "
        "images (column `role`). Splits are by group, so no group appears in two splits: `train` for training, "
        "`held_in` and `held_out` for evaluation (`mrbench eval --benchmark mrbench:RELEASE`).", "",
        "## Loading", "",
        "```python",
        "import datasets",
        f'ds = datasets.load_dataset("path/or/hub-id/of/this/release", split="{present[0] if present else "train"}")',
        'ds[0]["image"]  # a PIL image; the other columns are plain values',
        "```", "",
        "The split files are `data/{split}-{i:05d}-of-{k:05d}.parquet` (i = 0..k-1), readable by any parquet "
        "reader (duckdb, polars: `image` is a struct of `bytes` and `path`). `mrbench release verify .` checks every "
        "file against `manifest.json`.", "",
        "## Columns", "",
        *_md_table(["column", "type", "meaning"],
                   [[f"`{f.name}`", _type_label(f.type), COLUMNS.get(f.name, KEPT_MEANING)] for f in schema]),
        *stats_md,
        *_settings(config, run),
        *_drops(run, index.num_rows),
        *(notes or []),
        *_leakage(release_dir, run, leak_thumbs),
        *_examples(release_dir, index, groups, leak_thumbs),
        *opt_out_section(config, run),
        "## License", "",
        f"{_md_code(config.release.license)}. {md_text(config.release.license_note)}", "",
    ]
    text = "\n".join(lines)
    atomic_write_text(release_dir / CARD, text)
    return text


__all__ = ["CARD", "COLUMNS", "EXAMPLES_DIR", "card_metadata", "size_category", "write_card"]
