"""Folder sources (sub-folder = tag), mixed with metadata; webdataset output; CLI errors."""

import subprocess
import sys

import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from smallweb import write_small_inputs
from mrbench.config import load_config
from mrbench.curation.config import CurateConfig
from mrbench.curation.pipeline import run_curation
from mrbench.curation.sources import expand_sources, read_source
from mrbench.curation.config import SourceConfig


def make_folder(root, n_per=3):
    for sub in ("red_apple", "Barack Obama"):
        (root / sub).mkdir(parents=True)
        for k in range(n_per):
            Image.new("RGB", (40 + k, 30), (200, 10 * k, 0) if sub == "red_apple" else (0, 0, 50 * k)).save(root / sub / f"{k}.png")
    (root / "red_apple" / "notes.txt").write_text("not an image")
    (root / "red_apple" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")


def test_folder_rows_take_subfolder_tag(tmp_path):
    make_folder(tmp_path / "imgs")
    src = SourceConfig(kind="folder", paths=[str(tmp_path / "imgs")])
    shards = expand_sources([src])
    rows = list(read_source(shards[0], src))
    assert len(rows) == 7  # 6 images + broken.jpg (decided by validation later), txt skipped
    assert {r.folder_tag for r in rows} == {"red_apple", "Barack Obama"}
    assert all(r.url.startswith("file://") for r in rows)
    with pytest.raises(FileNotFoundError, match="no such file"):
        expand_sources([SourceConfig(kind="metadata", paths=[str(tmp_path / "nope.parquet")])])


@pytest.mark.slow
def test_folder_plus_metadata_with_webdataset_output(tmp_path, web_server, small_web):
    make_folder(tmp_path / "imgs")
    cfg_path = write_small_inputs(tmp_path / "in", web_server.base_url, small_web, num_shards=2,
                                  crawl__output_format="webdataset")
    data = yaml.safe_load(cfg_path.read_text())
    data["sources"].append({"kind": "folder", "paths": [str(tmp_path / "imgs")]})
    data["split"] = {"held_out_groups": 1, "held_in_groups": 1}
    cfg_path.write_text(yaml.safe_dump(data))
    summary = run_curation(load_config(CurateConfig, cfg_path), tmp_path / "run")
    rows = [r for f in sorted((tmp_path / "run" / "release" / "data").glob("*.parquet"))
            for r in pq.read_table(f, columns=["tags", "category", "group", "url"]).to_pylist()]
    folder_rows = [r for r in rows if not r["url"].startswith("http")]
    # the release url of a folder image: its path under the source folder (not file:// on the curator's disk)
    assert sorted(r["url"] for r in folder_rows) == sorted(f"{sub}/{k}.png" for sub in ("red_apple", "Barack Obama")
                                                           for k in range(3))
    # "Barack Obama" folder joins the tag list's celebrity group with the web images of Obama.
    assert {r["group"] for r in folder_rows} == {"red_apple", "barack_obama"}
    assert {r["category"] for r in folder_rows if r["group"] == "barack_obama"} == {"celebrity"}
    assert summary["rows_per_status"]["ok"] == 12 + 6
    assert summary["rows_per_status"]["corrupt_image"] >= 2  # web corrupt + folder broken.jpg (+ truncated)


def test_cli_bad_config_and_ls(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("num_shards: -1\n")
    r = subprocess.run([sys.executable, "-m", "mrbench.cli", "curate", "--config", str(bad), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "num_shards" in r.stderr
    assert not (tmp_path / "o").exists()  # failed before any work
    ls = subprocess.run([sys.executable, "-m", "mrbench.cli", "ls", "stages"], capture_output=True, text=True)
    assert ls.returncode == 0
    names = [line.split()[0] for line in ls.stdout.splitlines()]
    assert {"ingest", "download", "validate", "group_by_tag", "split_by_group", "release"} <= set(names)
    wrong = subprocess.run([sys.executable, "-m", "mrbench.cli", "ls", "stagez"], capture_output=True, text=True)
    assert wrong.returncode == 2 and "stages" in wrong.stderr
