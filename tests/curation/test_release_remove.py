"""Takedowns: ``mrbench release remove`` writes a new release without the listed images, leaves the old one
byte for byte as it was, and the same lists as block lists keep the images out of a later curation."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from smallweb import write_small_inputs
from mrbench.cli import app
from mrbench.config import load_config
from mrbench.curation.config import CurateConfig
from mrbench.curation.pipeline import run_curation
from mrbench.curation.release_verify import verify_release
from webserver import SampleWebServer

pytestmark = pytest.mark.slow


def tree_hash(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(folder).as_posix().encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def rows(release: Path) -> list[dict]:
    cols = ["id", "url", "sha256", "group", "role", "split"]
    return [r for f in sorted((release / "data").glob("*.parquet")) for r in pq.read_table(f, columns=cols).to_pylist()]


@pytest.fixture(scope="module")
def released(tmp_path_factory, small_web):
    tmp = tmp_path_factory.mktemp("takedown")
    server = SampleWebServer(small_web).__enter__()
    cfg_path = write_small_inputs(tmp / "in", server.base_url, small_web)
    run_curation(load_config(CurateConfig, cfg_path), tmp / "run")
    yield tmp, cfg_path, server
    server.__exit__(None, None, None)


def test_remove_writes_a_verified_release_without_the_images(released):
    tmp, cfg_path, server = released
    old = tmp / "run" / "release"
    before = tree_hash(old)
    got = rows(old)
    groups: dict[str, list[dict]] = {}
    for r in got:
        groups.setdefault(r["group"], []).append(r)
    g_shrink, g_gone, g_retarget = sorted(groups, key=lambda g: -len(groups[g]))[:3]
    by_id = next(r for r in groups[g_shrink] if r["role"] == "reference")
    by_url = [r for r in groups[g_gone]][: len(groups[g_gone]) - 1]  # leaves one: below the minimum size of 2
    by_sha = next(r for r in groups[g_retarget] if r["role"] == "target")
    (tmp / "ids.txt").write_text(by_id["id"] + "\n")
    (tmp / "urls.txt").write_text("".join(r["url"] + "\n" for r in by_url))
    (tmp / "sha.txt").write_text(by_sha["sha256"] + "\n")
    new = tmp / "new"
    result = CliRunner().invoke(app, ["release", "remove", str(old), "--ids", str(tmp / "ids.txt"), "--urls",
                                      str(tmp / "urls.txt"), "--sha256", str(tmp / "sha.txt"), "--out", str(new)])
    assert result.exit_code == 0, result.output
    assert tree_hash(old) == before  # the old release is untouched
    assert verify_release(new) == []
    left = rows(new)
    removed = {by_id["id"], by_sha["id"], *(r["id"] for r in groups[g_gone])}
    assert {r["id"] for r in left} == {r["id"] for r in got} - removed
    assert g_gone not in {r["group"] for r in left}
    assert [r for r in left if r["group"] == g_retarget and r["role"] == "target"]  # a new target
    manifest = json.loads((new / "manifest.json").read_text())
    assert manifest["rows"] == len(got) - len(removed)
    assert manifest["parent"]["manifest_sha256"] == hashlib.sha256((old / "manifest.json").read_bytes()).hexdigest()
    removal = manifest["removals"][-1]
    assert removal["rows_removed"] == len(removed) and removal["listed_rows_removed"] == 2 + len(by_url)
    assert removal["groups_removed"] == 1
    assert {x["kind"]: x["sha256"] for x in removal["lists"]} == {
        k: hashlib.sha256((tmp / f).read_bytes()).hexdigest() for k, f in (("id", "ids.txt"), ("url", "urls.txt"),
                                                                          ("sha256", "sha.txt"))}
    easyref = "".join(p.read_text() for p in (new / "easyref").glob("*.json"))
    assert not any(rid in easyref for rid in removed)
    card = (new / "README.md").read_text()
    assert "## Removed after release" in card and "## Rows dropped" in card
    # the same lists as block lists: a later curation never brings the images back
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["crawl"]["blocklists"] = [{"path": str(tmp / "ids.txt"), "kind": "id"},
                                  {"path": str(tmp / "urls.txt"), "kind": "url"},
                                  {"path": str(tmp / "sha.txt"), "kind": "sha256"}]
    (tmp / "in" / "again.yaml").write_text(yaml.safe_dump(cfg))
    run_curation(load_config(CurateConfig, tmp / "in" / "again.yaml"), tmp / "again")
    again = {r["id"] for r in rows(tmp / "again" / "release")}
    listed = {by_id["id"], by_sha["id"], *(r["id"] for r in by_url)}
    assert again and not again & listed


def test_remove_refuses_an_existing_out_and_a_bad_list(released, tmp_path):
    old = released[0] / "run" / "release"
    (tmp_path / "ids.txt").write_text("not-an-id\n")
    r = CliRunner().invoke(app, ["release", "remove", str(old), "--ids", str(tmp_path / "ids.txt"),
                                 "--out", str(tmp_path / "new")])
    assert r.exit_code == 2 and "ids.txt:1: 'not-an-id' is not a valid id" in r.output
    (tmp_path / "ids.txt").write_text("0" * 16 + "\n")
    (tmp_path / "taken").mkdir()
    r = CliRunner().invoke(app, ["release", "remove", str(old), "--ids", str(tmp_path / "ids.txt"),
                                 "--out", str(tmp_path / "taken")])
    assert r.exit_code == 2 and "exists" in r.output
    r = CliRunner().invoke(app, ["release", "remove", str(old), "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "--ids FILE" in r.output
