"""Bad configs, tag lists and source files through `mrbench curate`: each ends in one error line naming the key or
the file (and line/column for YAML), exit 2, before any download; nothing reaches the user as a traceback."""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from mrbench.cli import app
from mrbench.config import load_config
from mrbench.curation.config import CurateConfig
from mrbench.curation.crawl import INGEST_STEP

runner = CliRunner()
# Port 9 (discard) on loopback: nothing must ever be fetched in these tests, every failure comes first.
URL = "http://127.0.0.1:9/img.jpg"
TAGS = "- {name: cafe, category: subject}\n"


def setup(tmp_path: Path, config: str | None = None, tags: str = TAGS, meta: tuple[str, bytes] | None = None) -> Path:
    (tmp_path / "tags.yaml").write_text(tags)
    name, data = meta or ("meta.csv", f"url,caption\n{URL},cafe\n".encode())
    (tmp_path / name).write_bytes(data)
    cfg = tmp_path / "curate.yaml"
    cfg.write_text(config if config is not None else
                   f"sources: [{{kind: metadata, paths: [{name}]}}]\ncrawl: {{tag_list: tags.yaml}}\nnum_shards: 1\n")
    return cfg


def curate(cfg: Path, out: Path, *extra: str):
    t = time.perf_counter()
    result = runner.invoke(app, ["curate", "-c", str(cfg), "-o", str(out), *extra])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    result.wall = time.perf_counter() - t  # type: ignore[attr-defined]
    return result


@pytest.mark.parametrize(
    "override,message",
    [
        ("crawl.timeout=.nan", "crawl.timeout must be a finite number, got nan"),
        ("crawl.timeout=.inf", "crawl.timeout must be a finite number, got inf"),
        ("crawl.timeout=0", "crawl.timeout must be > 0"),
        ("crawl.thread_count=0", "crawl.thread_count must be >= 1, got 0"),
        ("crawl.retries=-1", "crawl.retries must be >= 0, got -1"),
        ("crawl.max_image_pixels=-1", "crawl.max_image_pixels must be >= 1, got -1"),
        ("num_shards=2.7", "num_shards must be an integer, got 2.7"),
        ("num_shards=true", "num_shards must be an integer, got True"),
        ("release.compression=bogus", "release.compression must be one of none, snappy"),
        ("crawl.encode_format=bmp", "crawl.encode_format must be one of jpg, png, webp, got 'bmp'"),
        ("crawl.resize_mode=stretch", "crawl.resize_mode must be one of no, border"),
        ("crawl.output_format=tar", "crawl.output_format must be one of parquet, webdataset"),
        ("executor.name=spark", "executor.name must be one of local, ray, got 'spark'"),
        ("group.identity_threshold=1.5", "group.identity_threshold must be <= 1.0, got 1.5 (a cosine similarity)"),
        ("sources=[]", "sources: at least one source is required"),
        ("crawl.timeout=[", "the value is not valid YAML"),
        ("release.name=", "release.name must be a string, got None"),
        ("embed.encoder_options=3", "embed.encoder_options must be a mapping, got 3"),
    ],
)
def test_bad_values_fail_before_work(tmp_path: Path, override: str, message: str):
    cfg = setup(tmp_path)
    r = curate(cfg, tmp_path / "run", "--set", override)
    assert r.exit_code == 2 and message in r.stderr, r.stderr
    assert r.stderr.count("\n") <= 3
    assert not (tmp_path / "run").exists()  # nothing started


def test_all_field_problems_reported_at_once(tmp_path: Path):
    cfg = setup(tmp_path)
    r = curate(cfg, tmp_path / "run", "--set", "crawl.retries=-1", "--set", "crawl.thread_count=0",
               "--set", "filters.face_min_score=2")
    assert r.exit_code == 2 and "3 config problems" in r.stderr
    for key in ("crawl.retries", "crawl.thread_count", "filters.face_min_score"):
        assert key in r.stderr


def test_wrong_keys_at_every_depth_reported_at_once(tmp_path: Path):
    cfg = setup(tmp_path, config="sourcs: [{kind: folder, paths: [x/]}]\ncrawl: {timout: 3, retries: -1}\n"
                                  "split: {held_out_groups: 1, helt_in: 2}\nnum_shards: two\n")
    r = curate(cfg, tmp_path / "run")
    assert r.exit_code == 2 and "5 config problems" in r.stderr, r.stderr
    for text in ("sourcs (did you mean 'sources'?)", "crawl.timout (did you mean 'crawl.timeout'?)", "split.helt_in",
                 "num_shards must be an integer", "crawl.retries must be >= 0"):
        assert text in r.stderr, text
    assert not (tmp_path / "run").exists()


def test_whole_float_is_an_integer(tmp_path: Path):
    cfg = load_config(CurateConfig, setup(tmp_path), ["num_shards=2.0", "crawl.max_body_bytes=1.0e+6"])
    assert cfg.num_shards == 2 and isinstance(cfg.num_shards, int) and cfg.crawl.max_body_bytes == 1_000_000


def test_config_yaml_error_names_file_line_column(tmp_path: Path):
    cfg = setup(tmp_path, config="sources: [{kind: metadata, paths: [meta.csv]}]\ncrawl:\n  tag_list: tags.yaml\n"
                                  "   timeout: 3\n")
    r = curate(cfg, tmp_path / "run")
    assert r.exit_code == 2
    assert f"{cfg}:4:11: invalid YAML" in r.stderr and "<unicode string>" not in r.stderr


def test_tag_list_yaml_error_names_file_line_column(tmp_path: Path):
    cfg = setup(tmp_path, tags="- {name: cafe, category: subject\n- {name: tea, category: subject}\n")
    r = curate(cfg, tmp_path / "run")
    assert r.exit_code == 2 and f"{tmp_path / 'tags.yaml'}:2:" in r.stderr and "invalid YAML" in r.stderr


@pytest.mark.parametrize("tags,message", [("", "has no tags"), ("[]\n", "has no tags"),
                                          ("- {name: a, category: planet}\n", "category must be one of"),
                                          ("- {name: a}\n", "needs 'name' and 'category'")])
def test_empty_or_malformed_tag_list_is_an_error(tmp_path: Path, tags: str, message: str):
    r = curate(setup(tmp_path, tags=tags), tmp_path / "run")
    assert r.exit_code == 2 and message in r.stderr and "tags.yaml" in r.stderr


def test_non_utf8_config_is_named(tmp_path: Path):
    cfg = setup(tmp_path)
    cfg.write_bytes(cfg.read_bytes() + "# caf\xe9\n".encode("latin-1"))
    r = curate(cfg, tmp_path / "run")
    assert r.exit_code == 2 and f"{cfg}: not UTF-8 text" in r.stderr


def _parquet_bytes(table: pa.Table, tmp_path: Path) -> bytes:
    p = tmp_path / "_t.parquet"
    pq.write_table(table, p)
    data = p.read_bytes()
    p.unlink()
    return data


@pytest.mark.parametrize(
    "name,make,message",
    [
        ("meta.csv", lambda tp: f"url,caption\n{URL},caf\xe9\n".encode("latin-1"), "column 'caption' is not UTF-8"),
        ("meta.csv", lambda tp: f"link,caption\n{URL},cafe\n".encode(), "missing column(s) url; it has link, caption"),
        ("meta.parquet", lambda tp: b"PAR1" + b"\x00" * 64 + b"PAR1", "not a readable parquet file"),
        ("meta.parquet", lambda tp: b"not parquet at all", "not a readable parquet file"),
        ("meta.parquet", lambda tp: _parquet_bytes(pa.table({"URL": [URL], "TEXT": ["cafe"]}), tp), "missing column(s) url, caption"),
        ("meta.parquet", lambda tp: _parquet_bytes(pa.table({"url": [1], "caption": ["cafe"]}), tp), "column 'url' has type int64"),
        ("meta.jsonl", lambda tp: b'{"url": "x", "caption": "caf\xe9"}\n', "meta.jsonl:1: not UTF-8 text"),
        ("meta.jsonl", lambda tp: b'{"url": "x", \n', "meta.jsonl:1: not JSON"),
        ("meta.txt", lambda tp: b"hello", "unsupported metadata format '.txt'"),
    ],
)
def test_unreadable_sources_name_the_file(tmp_path: Path, name: str, make, message: str):
    cfg = setup(tmp_path, meta=(name, make(tmp_path)))
    r = curate(cfg, tmp_path / "run")
    assert r.exit_code == 2, r.stderr
    assert name in r.stderr and message in r.stderr, r.stderr
    assert not (tmp_path / "run" / "run_state.json").exists()  # failed before the run started


def test_missing_source_and_tag_list_files(tmp_path: Path):
    cfg = setup(tmp_path, config="sources: [{kind: metadata, paths: [nope.parquet]}]\ncrawl: {tag_list: tags.yaml}\n")
    r = curate(cfg, tmp_path / "run")
    assert r.exit_code == 2 and "no such file" in r.stderr and "nope.parquet" in r.stderr
    cfg = setup(tmp_path, config="sources: [{kind: metadata, paths: [meta.csv]}]\ncrawl: {tag_list: gone.yaml}\n")
    r = curate(cfg, tmp_path / "run2")
    assert r.exit_code == 2 and "crawl.tag_list: no such file" in r.stderr and "gone.yaml" in r.stderr


def test_binary_caption_column_is_decoded_as_utf8(tmp_path: Path):
    table = pa.table({"url": pa.array([URL.encode()], pa.binary()),
                      "caption": pa.array(["café crème".encode()], pa.binary())})
    cfg_path = setup(tmp_path, meta=("meta.parquet", _parquet_bytes(table, tmp_path)))
    cfg = load_config(CurateConfig, cfg_path)
    INGEST_STEP.task(cfg, str(tmp_path / "run"))(0)
    cand = pq.read_table(tmp_path / "run" / "ingest" / "candidates_00000.parquet").to_pylist()
    assert [(c["url"], c["caption"]) for c in cand] == [(URL, "café crème")]


def test_binary_caption_that_is_not_utf8_names_the_file(tmp_path: Path):
    table = pa.table({"url": [URL], "caption": pa.array([b"caf\xe9"], pa.binary())})
    cfg = setup(tmp_path, meta=("meta.parquet", _parquet_bytes(table, tmp_path)))
    r = curate(cfg, tmp_path / "run")
    assert r.exit_code == 2 and "meta.parquet" in r.stderr and "not UTF-8" in r.stderr, r.stderr
    assert not (tmp_path / "run" / "download").exists()


def test_bad_rows_deep_in_a_csv_name_the_file(tmp_path: Path):
    """A bad byte past the first block the upfront check reads is still named, by the ingest step."""
    good = "".join(f"{URL}?{i},cafe number {i}\n" for i in range(40_000)).encode()
    data = b"url,caption\n" + good + f"{URL}?x,caf\xe9\n".encode("latin-1")
    assert len(data) > 1 << 20  # the upfront check reads the first 1 MiB block
    cfg = setup(tmp_path, meta=("meta.csv", data))
    r = curate(cfg, tmp_path / "run")
    assert r.exit_code == 2 and "meta.csv" in r.stderr and "not UTF-8" in r.stderr, r.stderr
    assert not (tmp_path / "run" / "download").exists()
