"""A curation that finishes with nothing to release ends with exit 4 and one paragraph saying what happened and
which setting to change, through the real CLI (folder sources and loopback URLs only)."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from mrbench.cli import app
from mrbench.curation.outcome import EMPTY_OUTCOME_EXIT
from smallweb import _photo

runner = CliRunner()


def photos(root: Path, layout: dict[str, int]) -> Path:
    """``layout``: sub-folder ("" for the top level) -> number of distinct photos in it."""
    seed = 0
    for sub, n in layout.items():
        (root / sub).mkdir(parents=True, exist_ok=True)
        for k in range(n):
            seed += 1
            _photo(seed, (64, 64)).save(root / sub / f"p{k}.jpg")
    return root


def curate(tmp_path: Path, cfg: dict, *extra: str, out: str = "run"):
    path = tmp_path / "curate.yaml"
    path.write_text(yaml.safe_dump({"num_shards": 1, "split": {"held_out_groups": 1, "held_in_groups": 1}, **cfg}))
    r = runner.invoke(app, ["-q", "curate", "-c", str(path), "-o", str(tmp_path / out), *extra])
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    return r


def test_loose_top_level_photos_name_the_setting(tmp_path: Path):
    photos(tmp_path / "photos", {"": 4})
    r = curate(tmp_path, {"sources": [{"kind": "folder", "paths": ["photos/"]}]})
    assert r.exit_code == EMPTY_OUTCOME_EXIT == 4, r.output
    err = r.stderr
    assert "Nothing was released (0 images)" in err and "4 images were read, but none has a tag" in err
    assert f"{(tmp_path / 'photos').resolve()} (4 images) hold images directly at the top level" in err
    assert "crawl.require_tag: false" in err and err.count("error:") == 1
    # the setting it names works: the loose photos become one group
    r = curate(tmp_path, {"sources": [{"kind": "folder", "paths": ["photos/"]}]}, "--set", "crawl.require_tag=false",
               out="run2")
    assert r.exit_code == 0, r.output


def test_every_download_failed(tmp_path: Path):
    (tmp_path / "tags.yaml").write_text("- {name: cafe, category: subject}\n")
    # port 9 (discard) on loopback: nothing listens, every URL is a connection error
    (tmp_path / "meta.csv").write_text("url,caption\n" + "".join(f"http://127.0.0.1:9/{k}.jpg,cafe {k}\n"
                                                                    for k in range(3)))
    r = curate(tmp_path, {"sources": [{"kind": "metadata", "paths": ["meta.csv"]}],
                          "crawl": {"tag_list": "tags.yaml", "allow_private_network": True, "retries": 0,
                                    "timeout": 1}})
    assert r.exit_code == 4, r.output
    assert "All 3 downloads failed (connection_error 3)" in r.stderr and "--retry-failed" in r.stderr


def test_no_caption_names_a_tag(tmp_path: Path):
    (tmp_path / "tags.yaml").write_text("- {name: cafe, category: subject}\n")
    (tmp_path / "meta.csv").write_text("url,caption\nhttp://127.0.0.1:9/a.jpg,tea\nhttp://127.0.0.1:9/b.jpg,milk\n")
    r = curate(tmp_path, {"sources": [{"kind": "metadata", "paths": ["meta.csv"]}], "crawl": {"tag_list": "tags.yaml"}})
    assert r.exit_code == 4, r.output
    assert "2 rows were read and 2 of them (ingest/no_tag_match)" in r.stderr and "crawl.require_tag" in r.stderr


def test_no_group_large_enough(tmp_path: Path):
    photos(tmp_path / "photos", {"cat": 1, "dog": 1})
    r = curate(tmp_path, {"sources": [{"kind": "folder", "paths": ["photos/"]}]})
    assert r.exit_code == 4, r.output
    assert "2 images were downloaded, but 0 groups remained" in r.stderr
    assert "group_too_small 2" in r.stderr and "group.min_group_size (2)" in r.stderr
