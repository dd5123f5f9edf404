"""The release as the Hub and ``datasets`` see it: the card's YAML header, ``load_dataset`` on the folder giving PIL
images, the example grid, data file names without gaps, the schema check, folder-source urls, the card page."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mrbench.config import ConfigError, validate_fields
from mrbench.curation.config import CurateConfig, ReleaseConfig
from mrbench.curation.crawl import record_id
from mrbench.curation.release import RELEASE_PARTS, finalize_release, publish_release_data, write_manifest
from mrbench.curation.release_format import (
    MANIFEST, RELEASE_SCHEMA, RELEASE_SCHEMA_V1, image_bytes, release_table, schema_problem,
)
from mrbench.curation.release_verify import check_release
from mrbench.curation.sources import folder_relative_path
from mrbench.shards import write_parquet_atomic

# (split, download shard, group, images): held_out rows sit in download shards 1 and 3 of 4 only, held_in in 2.
PARTS = [("held_out", 1, "g_a", 3), ("held_out", 3, "g_b", 4), ("held_in", 2, "g_c", 2), ("train", 0, "g_d", 5),
         ("train", 2, "g_e", 3)]
NUM_SHARDS = 4
REJECTS = {"http_404": 3, "near_duplicate": 2, "group_too_small": 1}


def _jpeg(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (48, 32), (seed * 37 % 256, seed * 91 % 256, 120)).save(buf, "JPEG")
    return buf.getvalue()


def make_run(root: Path, config: CurateConfig) -> Path:
    """A run folder as the release step leaves it: part files per (split, download shard), and rejects."""
    run = root / "run"
    for split, shard, gid, n in PARTS:
        rows = []
        for k in range(n):
            url = f"https://example.org/{gid}/{k}.jpg"
            data = _jpeg(7 * k + ord(gid[-1]))
            rows.append({"id": record_id(url), "url": url, "caption": f"photo {k} of {gid}", "tags": [gid],
                         "category": "subject" if gid < "g_c" else "style", "group": gid, "split": split,
                         "role": "target" if k == 0 else "reference", "image": data, "format": "jpg",
                         "width": 48, "height": 32, "sha256": hashlib.sha256(data).hexdigest(), "encoding": "original"})
        rows.sort(key=lambda r: r["id"])
        write_parquet_atomic(release_table(rows), run / RELEASE_PARTS / f"{split}-{shard:05d}-of-{NUM_SHARDS:05d}.parquet")
    statuses = [s for s, n in REJECTS.items() for _ in range(n)]
    rejects = pa.table({"id": [f"{i:016x}" for i in range(len(statuses))], "url": ["https://x/y"] * len(statuses),
                        "status": statuses, "error_message": [""] * len(statuses)})
    write_parquet_atomic(rejects, run / "rejects" / "rejects_00000.parquet")
    (run / "state").mkdir(parents=True, exist_ok=True)
    return run


@pytest.fixture()
def finished(tmp_path: Path) -> tuple[Path, CurateConfig]:
    config = CurateConfig(num_shards=NUM_SHARDS, release=ReleaseConfig(name="card-test", license="cc-by-4.0"))
    run = make_run(tmp_path, config)
    finalize_release(config, run)
    return run / "release", config


def test_data_files_are_numbered_without_gaps_and_verify(finished):
    release, _ = finished
    names = sorted(p.name for p in (release / "data").iterdir())
    assert names == ["held_in-00000-of-00001.parquet", "held_out-00000-of-00002.parquet",
                     "held_out-00001-of-00002.parquet", "train-00000-of-00002.parquet", "train-00001-of-00002.parquet"]
    # shard order is kept: held_out file 0 is download shard 1 (group g_a), file 1 is shard 3 (g_b)
    assert set(pq.read_table(release / "data" / "held_out-00001-of-00002.parquet").column("group").to_pylist()) == {"g_b"}
    assert check_release(release).ok


def test_publish_is_repeatable_and_removes_stale_files(finished, tmp_path):
    release, config = finished
    run = release.parent
    before = {p.name: p.read_bytes() for p in (release / "data").iterdir()}
    (release / "data" / "train-00002-of-00003.parquet").write_bytes(b"left by an older layout")
    (release / "data" / "held_out-00000-of-00002.parquet").unlink()  # a finalize killed half-way
    assert publish_release_data(run, release) == sorted(f"data/{n}" for n in before)
    assert {p.name: p.read_bytes() for p in (release / "data").iterdir()} == before


def test_a_run_released_by_an_older_mrbench_is_not_emptied(finished):
    release, _ = finished
    run = release.parent
    shutil.rmtree(run / RELEASE_PARTS)  # as an older mrbench left it: data/ written by the release step itself
    before = sorted((release / "data").iterdir())
    with pytest.raises(ConfigError, match="older mrbench.*release_\\*.done"):
        publish_release_data(run, release)
    assert sorted((release / "data").iterdir()) == before


def test_verify_flags_a_gap_in_the_names(finished):
    release, _ = finished
    src = release / "data" / "train-00001-of-00002.parquet"
    src.rename(release / "data" / "train-00003-of-00002.parquet")
    manifest = json.loads((release / MANIFEST).read_text())
    for e in manifest["files"]:
        e["path"] = e["path"].replace("train-00001-of-00002", "train-00003-of-00002")
    (release / MANIFEST).write_text(json.dumps(manifest))
    report = check_release(release)
    assert [p.kind for p in report.problems] == ["naming"] and "00000..00001" in report.problems[0].message


def test_card_yaml_is_hub_metadata(finished):
    from huggingface_hub import DatasetCard, DatasetCardData

    release, _ = finished
    card = DatasetCard.load(release / "README.md")
    assert isinstance(card.data, DatasetCardData)
    data = card.data.to_dict()
    assert data["license"] == "cc-by-4.0" and data["task_categories"] == ["text-to-image"]
    assert data["size_categories"] == ["n<1K"] and "multi-reference" in data["tags"]
    assert data["configs"] == [{"config_name": "default", "data_files": [
        {"split": s, "path": f"data/{s}-*.parquet"} for s in ("held_out", "held_in", "train")]}]
    features = {f["name"]: f for f in data["dataset_info"]["features"]}
    assert list(features) == RELEASE_SCHEMA.names
    assert features["image"] == {"name": "image", "dtype": "image"} and features["tags"]["sequence"] == "string"
    assert {s["name"]: s["num_examples"] for s in data["dataset_info"]["splits"]} == {
        "held_out": 7, "held_in": 2, "train": 8}
    # the same features as the data files' own metadata, as `datasets` reads both
    from datasets.info import DatasetInfo

    info = DatasetInfo._from_yaml_dict(data["dataset_info"])
    from datasets import Features

    assert info.features == Features.from_arrow_schema(RELEASE_SCHEMA)
    # the splits block is complete (name, num_examples, num_bytes): `datasets` keeps it instead of warning it away
    assert info.splits is not None and info.splits["held_out"].num_examples == 7
    assert all(s["num_bytes"] > 0 for s in data["dataset_info"]["splits"])
    assert data["dataset_info"]["download_size"] == sum(p.stat().st_size for p in (release / "data").glob("*.parquet"))


def test_card_body_tables(finished):
    release, _ = finished
    text = (release / "README.md").read_text()
    assert "| `image` | image |" in text and "| `url` | string |" in text
    assert "| held_out | 2 | 3 | 3.5 | 3.5 | 4 |" in text  # group sizes 3 and 4: min, median, mean, max
    assert "| subject | 7 / 2 | 0 / 0 | 0 / 0 | 7 / 2 |" in text  # images / groups per category and split
    assert "| http_404 | download | 3 |" in text and "| near_duplicate | dedup | 2 |" in text
    assert "23 selected URLs or files: 17 released, 6 dropped" in text
    assert "`cc-by-4.0`." in text and "/tmp" not in text and str(release) not in text


def test_example_grid_files_are_listed_and_verified(finished):
    release, _ = finished
    text = (release / "README.md").read_text()
    examples = sorted((release / "card" / "examples").iterdir())
    linked = {line.split("](")[1].split(")")[0] for line in text.split("![")[1:]}
    assert linked == {p.relative_to(release).as_posix() for p in examples}
    assert len(examples) == (3 + 4) + 2 + (5 + 3)  # every group here (<= 2 per split), target + up to 4 refs each
    for p in examples:
        with Image.open(p) as im:
            assert im.format == "JPEG" and max(im.size) <= 160
    listed = {e["path"] for e in json.loads((release / MANIFEST).read_text())["files"]}
    assert {p.relative_to(release).as_posix() for p in examples} <= listed
    examples[0].write_bytes(examples[0].read_bytes()[:-10])
    report = check_release(release)
    assert [(p.path, p.kind) for p in report.problems] == [(examples[0].relative_to(release).as_posix(), "altered")]


def test_load_dataset_on_the_folder_gives_pil_images(finished, tmp_path):
    import datasets

    release, _ = finished
    ds = datasets.load_dataset(str(release), split="held_out", cache_dir=str(tmp_path / "hf"))
    assert ds.num_rows == 7 and isinstance(ds.features["image"], datasets.Image)
    row = ds[0]
    assert isinstance(row["image"], Image.Image) and row["image"].size == (48, 32)
    assert hashlib.sha256(ds.with_format("arrow")[0:1]["image"][0]["bytes"].as_py()).hexdigest() == row["sha256"]
    # without the card too: the features ride in each data file's schema metadata
    plain = datasets.load_dataset("parquet", data_files=str(release / "data" / "train-*.parquet"), split="train",
                                  cache_dir=str(tmp_path / "hf2"))
    assert isinstance(plain[0]["image"], Image.Image)


def test_duckdb_and_polars_read_the_image_struct(finished):
    import duckdb
    import polars as pl

    release, _ = finished
    got = duckdb.execute(f"select count(*), sum(octet_length(image.bytes)) > 0 from '{release}/data/*.parquet'").fetchone()
    assert got == (17, True)
    df = pl.read_parquet(str(release / "data" / "*.parquet"))
    assert df.height == 17 and df.schema["image"] == pl.Struct({"bytes": pl.Binary, "path": pl.String})


def test_schema_check_is_real(finished):
    """verify reads each data file's schema: plain binary images or lost features metadata are problems."""
    release, _ = finished
    assert schema_problem(RELEASE_SCHEMA) is None
    assert "image is binary" in schema_problem(RELEASE_SCHEMA_V1)
    assert "features metadata" in schema_problem(RELEASE_SCHEMA.remove_metadata())
    victim = release / "data" / "held_in-00000-of-00001.parquet"
    t = pq.read_table(victim)
    binary = t.set_column(t.schema.get_field_index("image"), "image", pa.array(image_bytes(t.column("image")), pa.binary()))
    pq.write_table(binary.replace_schema_metadata(None), victim)
    _rehash(release, victim)  # a forger's manifest: sizes and hashes match again, the schema does not
    report = check_release(release)
    assert [(p.path, p.kind) for p in report.problems] == [("data/held_in-00000-of-00001.parquet", "schema")]
    assert "image is binary" in report.problems[0].message
    pq.write_table(t.replace_schema_metadata(None), victim)  # the struct, but the features metadata lost
    _rehash(release, victim)
    assert "features metadata" in check_release(release).problems[0].message


def _rehash(release: Path, path: Path) -> None:
    manifest = json.loads((release / MANIFEST).read_text())
    rel = path.relative_to(release).as_posix()
    for e in manifest["files"]:
        if e["path"] == rel:
            e["bytes"], e["sha256"] = path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest()
    (release / MANIFEST).write_text(json.dumps(manifest))


def _as_format_1(release: Path) -> None:
    """Rewrite a release as mrbench wrote it before the Image feature: binary images, format mrbench-release/1."""
    for f in sorted((release / "data").glob("*.parquet")):
        t = pq.read_table(f)
        t = t.set_column(t.schema.get_field_index("image"), "image", pa.array(image_bytes(t.column("image")), pa.binary()))
        f.unlink()  # (a hard link to the run's part file: never write through it)
        pq.write_table(t.drop_columns(["prompt"]).replace_schema_metadata(None).cast(RELEASE_SCHEMA_V1), f)
    manifest = json.loads((release / MANIFEST).read_text())
    manifest["format"] = "mrbench-release/1"
    (release / MANIFEST).write_text(json.dumps(manifest))
    for f in sorted((release / "data").glob("*.parquet")):
        _rehash(release, f)


def test_format_1_releases_still_verify_and_evaluate(finished, tmp_path):
    from mrbench.evaluation.benchmarks import build_benchmark

    release, _ = finished
    old = tmp_path / "old"
    shutil.copytree(release, old)
    _as_format_1(old)
    assert check_release(old).ok
    new_bench = build_benchmark(f"mrbench:{release}", split="held-out")
    old_bench = build_benchmark(f"mrbench:{old}", split="held-out")
    a, b = new_bench.samples(), old_bench.samples()
    assert [s.id for s in a] == [s.id for s in b] and len(a) == 2
    assert a[0].target.load().tobytes() == b[0].target.load().tobytes()
    assert a[0].references[0].load().size == (48, 32)
    from mrbench.curation.release_extract import extract_images

    images, n = extract_images(old, tmp_path / "x")
    assert n == 17 and len(list(images.iterdir())) == 17
    t = pq.read_table(release / "data" / "train-00000-of-00002.parquet")
    rid, data = t.column("id")[0].as_py(), image_bytes(t.column("image"))[0]
    assert (images / f"{rid}.jpg").read_bytes() == data


def test_benchmark_names_the_writer_of_an_unknown_layout(finished, tmp_path):
    from mrbench.evaluation.benchmarks import build_benchmark

    release, _ = finished
    odd = tmp_path / "odd"
    shutil.copytree(release, odd)
    f = odd / "data" / "held_out-00000-of-00002.parquet"
    t = pq.read_table(f)
    f.unlink()
    pq.write_table(t.drop_columns(["role"]), f)
    with pytest.raises(ConfigError) as e:
        build_benchmark(f"mrbench:{odd}", split="held-out").samples()
    msg = str(e.value)
    assert "lacks column(s) ['role']" in msg and "format 'mrbench-release/3', written by mrbench" in msg
    assert "mrbench curate" in msg


def test_license_is_validated():
    with pytest.raises(ConfigError, match="license must be a Hub license id"):
        validate_fields(ReleaseConfig(license="CC BY 4.0"))
    validate_fields(ReleaseConfig(license="apache-2.0"))


def test_folder_relative_path():
    assert folder_relative_path("file:///data/imgs/cats/001%20a.jpg", "/data/imgs") == "cats/001 a.jpg"
    assert folder_relative_path("file:///elsewhere/x.png", "/data/imgs") == "x.png"  # never an absolute path


def card_html(release: Path) -> str:
    """The card's markdown body as HTML (markdown-it, CommonMark + tables, as the Hub renders cards), with the
    release folder as base so the example thumbnails resolve; the page counts the images that decoded."""
    from markdown_it import MarkdownIt

    text = (release / "README.md").read_text()
    assert text.startswith("---\n")
    body = text.split("\n---\n", 1)[1]
    html = MarkdownIt("commonmark").enable("table").render(body)
    style = ("body{font-family:sans-serif;max-width:1100px;margin:24px auto}table{border-collapse:collapse;margin:8px 0}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:middle}img{margin:2px}"
             "code{background:#f3f3f3}")
    count = ("<script>window.addEventListener('load',()=>{document.body.dataset.decoded="
             "[...document.images].filter(i=>i.complete&&i.naturalWidth>0).length;});</script>")
    return (f"<!doctype html><html><head><meta charset='utf-8'><base href='{release.resolve().as_uri()}/'>"
            f"<style>{style}</style>{count}</head><body>{html}</body></html>")


def test_card_page_renders_in_chromium(finished, tmp_path):
    from pagecheck import CHROMIUM, load_page

    if CHROMIUM is None:
        pytest.skip("headless Chromium not installed (Debian: apt-get install chromium); card page not rendered")
    release, _ = finished
    page = tmp_path / "card.html"
    page.write_text(card_html(release))
    dom, errors = load_page(page)
    assert errors == []
    n_images = len(list((release / "card" / "examples").iterdir()))
    assert f'data-decoded="{n_images}"' in dom  # every example thumbnail loaded and decoded
    assert dom.count("<table>") == 6 and "<h2>Curation settings</h2>" in dom and "<h2>Rows dropped</h2>" in dom
