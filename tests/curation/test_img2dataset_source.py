"""``kind: img2dataset``: shards the real img2dataset wrote (parquet, webdataset, files) are curated without one HTTP
request: tag matching, where, grouping and release as for any source; rows img2dataset failed are named rows."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from mrbench.config import load_config
from mrbench.curation.config import CurateConfig
from mrbench.curation.pipeline import run_curation
from mrbench.curation.release_verify import verify_release
from smallweb import SUBJECTS, _photo
from webserver import Route, SampleWebServer, encode

img2dataset = pytest.importorskip("img2dataset")
pytestmark = pytest.mark.slow
FORMATS = ("parquet", "webdataset", "files")


def routes() -> dict[str, Route]:
    """Four photos of each of three subjects, a 404 and an HTML page: img2dataset fails the last two."""
    out = {f"/img/s{s}_{k}.jpg": Route(encode(_photo(100 * s + k), "JPEG", quality=90))
           for s in range(3) for k in range(4)}
    out["/img/gone.jpg"] = Route(b"gone", 404, "text/plain")
    out["/img/page.jpg"] = Route(b"<html>not an image</html>", content_type="text/html")
    return out


def caption(path: str) -> str:
    if path.startswith("/img/s"):
        return f"photo {path[-5]} of {SUBJECTS[int(path[len('/img/s')])]}"
    return "Spider-Man, " + path  # the failed rows still match a tag: they must come out as named rows


@pytest.fixture(scope="module")
def downloaded(tmp_path_factory):
    """img2dataset's output folders (one per output format) for the same URL list, served on 127.0.0.1; the server
    stays up, and its hit counts are what the curations below must leave unchanged."""
    root = tmp_path_factory.mktemp("i2d")
    with SampleWebServer(routes()) as server:
        paths = sorted(server.routes)
        pq.write_table(pa.table({"url": [server.url(p) for p in paths], "caption": [caption(p) for p in paths]}),
                       root / "urls.parquet")
        for fmt in FORMATS:
            img2dataset.download(url_list=str(root / "urls.parquet"), input_format="parquet", url_col="url",
                                 caption_col="caption", output_format=fmt, output_folder=str(root / fmt),
                                 processes_count=1, thread_count=4, resize_mode="no", number_sample_per_shard=8,
                                 timeout=5, retries=0, enable_wandb=False, distributor="multiprocessing")
        yield root, server


def config_for(folder: Path, root: Path, **source: object) -> CurateConfig:
    tags = [{"name": "Barack Obama", "category": "celebrity", "aliases": ["Obama"]},
            {"name": "Spider-Man", "category": "character", "aliases": ["Spiderman"]},
            {"name": "Van Gogh style", "category": "style", "aliases": []}]
    (root / "tags.yaml").write_text(yaml.safe_dump(tags))
    cfg = {"seed": 7, "num_shards": 2, "sources": [{"kind": "img2dataset", "paths": [str(folder)], **source}],
           # a request would reach the loopback server (and be counted): nothing is blocked, nothing must be asked
           "crawl": {"tag_list": str(root / "tags.yaml"), "allow_private_network": True},
           "group": {"min_group_size": 2}, "split": {"held_out_groups": 1, "held_in_groups": 1},
           "executor": {"name": "local", "workers": 1}}
    path = root / f"curate_{folder.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return load_config(CurateConfig, path)


@pytest.mark.parametrize("fmt", FORMATS)
def test_img2dataset_output_is_curated_without_a_request(downloaded, fmt, tmp_path):
    root, server = downloaded
    folder = root / fmt
    assert sorted(p.name for p in folder.glob("0000*.parquet")) == ["00000.parquet", "00001.parquet"]
    images = {"parquet": "00000.parquet", "webdataset": "00000.tar", "files": "00000"}[fmt]  # where the bytes are
    assert (folder / images).exists()
    hits = dict(server.hits)
    summary = run_curation(config_for(folder, root), tmp_path / "run")
    assert server.hits == hits  # not one HTTP request
    assert verify_release(tmp_path / "run" / "release") == []
    status = summary["rows_per_status"]
    assert status.get("ok") == 12 and sum(n for k, n in status.items() if k.startswith("img2dataset_")) == 2, status
    rejects = [r for f in sorted((tmp_path / "run" / "rejects").glob("rejects_*.parquet"))
               for r in pq.read_table(f).to_pylist()]
    failed = {Path(r["url"]).name: r for r in rejects if r["status"].startswith("img2dataset_")}
    assert set(failed) == {"gone.jpg", "page.jpg"}
    gone = failed["gone.jpg"]
    assert gone["status"] == "img2dataset_failed_to_download" and "404" in gone["error_message"]
    assert failed["page.jpg"]["status"] == "img2dataset_failed_to_resize"  # bytes that do not decode
    # released: the bytes img2dataset stored, each under its original URL and caption, grouped by tag
    released = pq.read_table(tmp_path / "run" / "release" / "data").to_pylist()
    assert len(released) == 12 and {r["group"] for r in released} == {"barack_obama", "spider_man", "van_gogh_style"}
    stored = stored_images(folder)
    for r in released:
        assert r["image"]["bytes"] == stored[r["url"]] and r["caption"] == caption(urlsplit(r["url"]).path)


def test_every_layout_releases_the_same_data_and_where_applies(downloaded, tmp_path):
    """The three layouts hold the same images: the same release data; a ``where`` over img2dataset's own columns
    keeps only the rows it passes (here: the rows it downloaded), counted as failing the rest."""
    root, server = downloaded
    hits = dict(server.hits)
    for fmt in FORMATS:
        run_curation(config_for(root / fmt, root, where="status = 'success'"), tmp_path / fmt)
    assert server.hits == hits
    data = [{p.name: p.read_bytes() for p in sorted((tmp_path / fmt / "release" / "data").glob("*.parquet"))}
            for fmt in FORMATS]
    assert data[0] and all(d == data[0] for d in data)
    stats = json.loads((tmp_path / "parquet" / "stats.json").read_text())
    assert stats["ingest"]["counts"]["ingest/where_failed"] == 2
    assert "img2dataset_failed_to_download" not in stats["download"]["counts"]


def stored_images(folder: Path) -> dict[str, bytes]:
    """URL -> image bytes, as img2dataset stored them (parquet column ``jpg``, the tar's ``.jpg`` members, or the
    shard folder's ``.jpg`` files)."""
    import tarfile

    out = {}
    for shard in sorted(folder.glob("0000*.parquet")):
        rows = pq.read_table(shard).to_pylist()
        if "jpg" in rows[0]:
            out.update({r["url"]: r["jpg"] for r in rows if r["jpg"] is not None})
            continue
        if shard.with_suffix(".tar").exists():
            with tarfile.open(shard.with_suffix(".tar")) as tar:
                by_key = {m.name[:-4]: tar.extractfile(m).read() for m in tar if m.name.endswith(".jpg")}
        else:
            by_key = {f.stem: f.read_bytes() for f in shard.with_suffix("").glob("*.jpg")}
        out.update({r["url"]: by_key[r["key"]] for r in rows if r["key"] in by_key})
    return out
