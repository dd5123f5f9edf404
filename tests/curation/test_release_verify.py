"""`mrbench release verify` and `release extract-images` on real releases (written by the release writers) and on
tampered, untrusted ones, through the CLI."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from mrbench.cli import app
from mrbench.curation.config import CurateConfig
from mrbench.curation.crawl import record_id
from mrbench.curation.card import write_card
from mrbench.curation.easyref_export import EASYREF_FILES, write_easyref_json
from mrbench.curation.release import write_manifest
from mrbench.curation.release_format import MANIFEST, image_bytes, release_file, release_table
from mrbench.shards import write_parquet_atomic

runner = CliRunner()


def _jpeg(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (24, 16), (seed * 40 % 256, 90, 200)).save(buf, "JPEG")
    return buf.getvalue()


def make_release(root: Path) -> Path:
    """A small release (two groups, two splits) written by the same functions a curation run uses."""
    per_split: dict[str, list[dict]] = {}
    for g, split in enumerate(("train", "held_out")):
        rows: list[dict] = []
        for k in range(3):
            url = f"https://example.org/{g}/{k}.jpg"
            data = _jpeg(3 * g + k)
            row = {"id": record_id(url), "url": url, "caption": f"photo {k} of subject {g}", "tags": [f"s{g}"],
                   "category": "subject", "group": f"g{g}", "split": split, "role": "target" if k == 0 else "reference",
                   "image": data, "format": "jpg", "width": 24, "height": 16,
                   "sha256": hashlib.sha256(data).hexdigest(), "encoding": "original"}
            rows.append(row)
        per_split[split] = rows
    for split, rows in per_split.items():
        write_parquet_atomic(release_table(rows), root / release_file(split, 0, 1))
    cfg = CurateConfig()
    write_easyref_json(root)
    write_card(root, cfg)
    write_manifest(root, cfg)
    return root


def rewrite_manifest_entry(release: Path, rel: str) -> None:
    """What a forger does after changing a file: update its size, hash and rows so the manifest matches again."""
    manifest = json.loads((release / MANIFEST).read_text())
    p = release / rel
    for e in manifest["files"]:
        if e["path"] == rel:
            e["bytes"], e["sha256"] = p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest()
            if "rows" in e:
                e["rows"] = pq.ParquetFile(p).metadata.num_rows
    (release / MANIFEST).write_text(json.dumps(manifest))


def verify(release: Path, *extra: str):
    result = runner.invoke(app, ["release", "verify", str(release), *extra])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


@pytest.fixture()
def release(tmp_path: Path) -> Path:
    return make_release(tmp_path / "rel")


def test_intact_release_passes_with_summary_and_json(release: Path):
    r = verify(release)
    assert r.exit_code == 0
    n = len(json.loads((release / "manifest.json").read_text())["files"])
    assert r.stdout.strip().splitlines()[-1] == f"ok: {release} matches its manifest ({n}/{n} files, 6 rows)"
    r = verify(release, "--json")
    report = json.loads(r.stdout)
    assert r.exit_code == 0 and report["ok"] and report["rows_found"] == report["rows_manifest"] == 6
    assert report["problems"] == []


@pytest.mark.parametrize(
    "tamper,kind,needle",
    [
        ("total_rows", "rows", "total rows 7 != 6"),
        ("file_rows", "rows", "row count differs"),
        ("symlink_file", "symlink", "symlink"),
        ("symlink_dir", "symlink", "symlink"),
        ("leftover_tmp", "temporary", "leftover temporary file"),
        ("fifo", "not_regular", "not a regular file"),
        ("no_sha256", "manifest", "no valid 'sha256'"),
        ("bytes_as_text", "manifest", "no valid 'bytes'"),
        ("files_not_list", "manifest", "'files' must be a list"),
        ("not_json", "manifest", "unreadable manifest"),
        ("top_level_list", "manifest", "top level is list"),
        ("path_escapes", "manifest", "not a plain path inside the release"),
        ("flipped_byte", "altered", "sha256 mismatch"),
    ],
)
def test_verify_names_each_problem_without_traceback(release: Path, tmp_path: Path, tamper: str, kind: str, needle: str):
    manifest = json.loads((release / MANIFEST).read_text())
    data = sorted((release / "data").glob("*.parquet"))[0]
    if tamper == "total_rows":
        manifest["rows"] += 1
    elif tamper == "file_rows":
        entry = next(e for e in manifest["files"] if e["path"].startswith("data/"))
        entry["rows"] += 1
    elif tamper == "symlink_file":
        (release / "data" / "extra-link.parquet").symlink_to(data)
    elif tamper == "symlink_dir":
        outside = tmp_path / "outside"
        outside.mkdir()
        (release / "more").symlink_to(outside, target_is_directory=True)
    elif tamper == "leftover_tmp":
        (release / "data" / (data.name + ".123-ab.tmp")).write_bytes(b"half a file")
    elif tamper == "fifo":
        os.mkfifo(release / "data" / "pipe")  # reading it would hang: verify must not open it
    elif tamper == "no_sha256":
        del manifest["files"][0]["sha256"]
    elif tamper == "bytes_as_text":
        manifest["files"][0]["bytes"] = "12"
    elif tamper == "files_not_list":
        manifest["files"] = {"a": 1}
    elif tamper == "path_escapes":
        manifest["files"][0]["path"] = "../../etc/passwd"
    elif tamper == "flipped_byte":
        b = bytearray(data.read_bytes())
        b[len(b) // 2] ^= 1
        data.write_bytes(bytes(b))
    if tamper == "not_json":
        (release / MANIFEST).write_text("{not json")
    elif tamper == "top_level_list":
        (release / MANIFEST).write_text("[]")
    else:
        (release / MANIFEST).write_text(json.dumps(manifest))
    r = verify(release)
    assert r.exit_code == 1
    assert needle in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith(f"FAILED: {release}:")
    report = json.loads(verify(release, "--json").stdout)
    assert not report["ok"] and kind in {p["kind"] for p in report["problems"]}


def test_missing_release_folder_is_one_problem(tmp_path: Path):
    r = verify(tmp_path / "nope")
    assert r.exit_code == 1 and "not a folder" in r.stderr


def extract(release: Path, *extra: str):
    result = runner.invoke(app, ["release", "extract-images", str(release), *extra])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def test_extract_default_is_outside_release_which_still_verifies(release: Path):
    r = extract(release)
    assert r.exit_code == 0, r.output
    out = release.parent / "rel-easyref"
    images = sorted(p.name for p in (out / "images").iterdir())
    ids = [i for f in sorted((release / "data").glob("*.parquet")) for i in pq.read_table(f).column("id").to_pylist()]
    assert images == sorted(f"{i}.jpg" for i in ids)
    # The EasyRef JSON sits next to images/, so its relative paths resolve.
    train = json.loads((out / EASYREF_FILES["single"]).read_text())
    assert train and all((out / p).is_file() for rec in train for p in rec["image_file"])
    for f in (release / "data").glob("*.parquet"):
        t = pq.read_table(f)
        for rid, data in zip(t.column("id").to_pylist(), image_bytes(t.column("image"))):
            assert (out / "images" / f"{rid}.jpg").read_bytes() == data
    assert verify(release).exit_code == 0  # nothing was written into the release


def test_extract_refuses_out_inside_release(release: Path):
    r = extract(release, "--out", str(release / "easyref"))
    assert r.exit_code == 2 and "inside the release" in r.stderr
    assert not (release / "easyref" / "images").exists()


@pytest.mark.parametrize("bad_id", ["../../escaped", "/tmp/abs", "0123456789abcdeg", "ABCDEF0123456789", "x" * 3])
def test_extract_refuses_forged_ids_and_writes_nothing(release: Path, tmp_path: Path, bad_id: str):
    """An untrusted release whose manifest was rewritten to match: it verifies, but its ids are not release ids."""
    victim = sorted((release / "data").glob("*.parquet"))[0]
    t = pq.read_table(victim)
    ids = t.column("id").to_pylist()
    ids[0] = bad_id
    pq.write_table(t.set_column(0, "id", pa.array(ids, pa.string())), victim)
    rewrite_manifest_entry(release, victim.relative_to(release).as_posix())
    assert verify(release).exit_code == 0
    out = tmp_path / "out"
    r = extract(release, "--out", str(out))
    assert r.exit_code == 1 and "is not a release id" in r.stderr and repr(bad_id) in r.stderr
    assert not (out / "images").exists() or not any((out / "images").iterdir())
    assert not (tmp_path / "escaped").exists()


def test_extract_refuses_forged_format(release: Path, tmp_path: Path):
    victim = sorted((release / "data").glob("*.parquet"))[0]
    t = pq.read_table(victim)
    fmts = t.column("format").to_pylist()
    fmts[0] = "jpg/../../../escaped"
    pq.write_table(t.set_column(t.schema.get_field_index("format"), "format", pa.array(fmts, pa.string())), victim)
    rewrite_manifest_entry(release, victim.relative_to(release).as_posix())
    r = extract(release, "--out", str(tmp_path / "out"))
    assert r.exit_code == 1 and "is not an image extension" in r.stderr
    assert not (tmp_path / "escaped").exists()


def test_extract_verifies_first(release: Path, tmp_path: Path):
    (release / "data" / "stray.parquet").write_bytes(b"x")
    r = extract(release, "--out", str(tmp_path / "out"))
    assert r.exit_code == 1 and "failed verification" in r.stderr and "stray.parquet" in r.stderr
    assert not (tmp_path / "out").exists()


def test_extract_never_writes_through_a_planted_symlink(release: Path, tmp_path: Path):
    out = tmp_path / "out"
    (out / "images").mkdir(parents=True)
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    rid = pq.read_table(sorted((release / "data").glob("*.parquet"))[0]).column("id").to_pylist()[0]
    (out / "images" / f"{rid}.jpg").symlink_to(target)
    r = extract(release, "--out", str(out))
    assert r.exit_code == 2 and "error:" in r.stderr
    assert target.read_text() == "keep me"
    # A symlinked images/ folder is refused as well.
    shutil.rmtree(out)
    out.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (out / "images").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    r = extract(release, "--out", str(out))
    assert r.exit_code == 2 and not any((tmp_path / "elsewhere").iterdir())


@pytest.mark.parametrize("explicit", [False, True])
def test_extract_refuses_a_symlinked_out_before_writing_anything(release: Path, tmp_path: Path, explicit: bool):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    link = tmp_path / "chosen" if explicit else release.parent / "rel-easyref"  # the default OUT next to the release
    link.symlink_to(elsewhere, target_is_directory=True)
    r = extract(release, *(["--out", str(link)] if explicit else []))
    assert r.exit_code == 2 and "is a symlink" in r.stderr, r.output
    assert list(elsewhere.iterdir()) == []  # not one image went through the link
