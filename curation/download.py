"""Download a URL shard with img2dataset behind the egress guard, and validate every image.

Every URL of the shard comes out as exactly one record: ``ok`` with image bytes, or a named failure.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Iterable, Iterator
from urllib.parse import unquote, urlsplit

import pyarrow as pa
import pyarrow.parquet as pq

from mrbench.curation.netguard import BLOCKED_PRIVATE, BOMB, CORRUPT, EMPTY, NOT_IMAGE, OVERSIZE, GuardProxy
from mrbench.config import CrawlConfig
from mrbench.executors import keep_interrupt
from mrbench.records import ImageRecord
from mrbench.stage import Filter, Stage

# Named failure reasons, matched against img2dataset's (urllib's) error messages, first match wins.
_ERROR_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("blocked_private_network", re.compile(re.escape(BLOCKED_PRIVATE))),
    ("oversize_body", re.compile(re.escape(OVERSIZE))),
    ("decompression_bomb", re.compile(re.escape(BOMB) + "|decompression bomb|image area too large", re.I)),
    ("not_an_image", re.compile(re.escape(NOT_IMAGE))),
    ("corrupt_image", re.compile(re.escape(CORRUPT) + r"|Image decoding error")),
    ("empty_body", re.compile(re.escape(EMPTY))),
    ("dns_failure", re.compile(r"mrbench: dns failure|Name or service not known|nodename nor servname", re.I)),
    ("redirect_loop", re.compile(r"infinite loop|redirect", re.I)),
    ("timeout", re.compile(r"timed? ?out|mrbench: upstream error TimeoutError|HTTP Error 504", re.I)),
    ("http_404", re.compile(r"HTTP Error 404")),
    ("http_403", re.compile(r"HTTP Error 403")),
    ("http_4xx", re.compile(r"HTTP Error 4\d\d")),
    ("http_5xx", re.compile(r"HTTP Error 5\d\d")),
    ("connection_error", re.compile(r"Connection|refused|reset|Remote end closed|IncompleteRead", re.I)),
    ("unsupported_url", re.compile(r"unknown url type|unsupported url", re.I)),
    ("decode_error", re.compile(r"decod", re.I)),
    ("robots_disallowed", re.compile(r"X-Robots-Tag", re.I)),
]


def classify_error(message: str | None) -> str:
    """Map a downloader error message to a named failure reason (``download_error`` when nothing matches)."""
    msg = message or ""
    for reason, pattern in _ERROR_PATTERNS:
        if pattern.search(msg):
            return reason
    return "download_error"


class Img2DatasetDownloader(Stage):
    """Downloads every http(s) record with img2dataset through :class:`~curation.netguard.GuardProxy`;
    ``file://`` records (local folder sources) are read from disk."""

    name = "download"

    def __init__(self, config: CrawlConfig, log_path: str | None = None) -> None:
        super().__init__()
        self.config = config
        self.log_path = log_path

    def run(self, records: Iterable[ImageRecord]) -> Iterator[ImageRecord]:
        records = list(records)  # one URL shard: bounded by design
        web = [r for r in records if r.ok and urlsplit(r.url).scheme in ("http", "https")]
        for r in records:
            if not r.ok:
                continue
            scheme = urlsplit(r.url).scheme
            if scheme == "file":
                self._read_local(r)
            elif scheme not in ("http", "https"):
                r.fail("unsupported_url", f"scheme {scheme!r} is not downloadable")
        if web:
            self._download(web)
        for r in records:
            self.stats.inc(f"download/{r.status}")
            if not r.ok:
                self.stats.error(r.error_message)
        yield from records

    def _read_local(self, r: ImageRecord) -> None:
        path = Path(unquote(urlsplit(r.url).path))
        try:
            size = path.stat().st_size
            if size > self.config.max_body_bytes:
                r.fail("oversize_body", f"{size} bytes > {self.config.max_body_bytes}")
                return
            r.image = path.read_bytes()
        except OSError as e:
            r.fail("file_unreadable", f"{type(e).__name__}: {e}")

    def _download(self, web: list[ImageRecord]) -> None:
        # albumentations (imported by img2dataset) checks PyPI for updates at import unless told not to.
        os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
        import img2dataset

        cfg = self.config
        by_id = {r.id: r for r in web}
        with tempfile.TemporaryDirectory(prefix="mrbench-dl-") as tmp:
            url_list = Path(tmp) / "urls.parquet"
            pq.write_table(
                pa.table({"url": [r.url for r in web], "caption": [r.caption for r in web], "mrbench_id": list(by_id)}),
                url_list,
            )
            out = Path(tmp) / "out"
            guard = GuardProxy(cfg.allow_private_network, cfg.max_body_bytes, cfg.timeout, cfg.max_image_pixels)
            with guard, _proxy_env(guard.url), _output_to(self.log_path), keep_interrupt():
                img2dataset.download(
                    url_list=str(url_list),
                    input_format="parquet",
                    url_col="url",
                    caption_col="caption",
                    save_additional_columns=["mrbench_id"],
                    output_folder=str(out),
                    output_format=cfg.output_format,
                    processes_count=1,
                    thread_count=cfg.thread_count,
                    number_sample_per_shard=max(len(web), 1),
                    image_size=cfg.image_size,
                    resize_mode=cfg.resize_mode,
                    encode_format=cfg.encode_format,
                    skip_reencode=True,  # keep the publisher's bytes when no resize is asked for
                    timeout=cfg.timeout,
                    retries=cfg.retries,
                    user_agent_token=cfg.user_agent_token,
                    disallowed_header_directives=[],
                    extract_exif=False,
                    compute_hash="sha256",
                    enable_wandb=False,
                    distributor="multiprocessing",
                    incremental_mode="incremental",  # the output folder is fresh; "overwrite" deletes _tmp
                )
            for meta, data in _read_img2dataset_output(out, cfg.output_format, cfg.encode_format):
                r = by_id.get(meta.get("mrbench_id"))
                if r is None:
                    continue
                if meta.get("status") == "success" and data is not None:
                    r.image = data
                    r.metadata["original_width"] = meta.get("original_width")
                    r.metadata["original_height"] = meta.get("original_height")
                else:
                    msg = meta.get("error_message") or meta.get("status") or "unknown"
                    r.fail(classify_error(msg), msg)
            for r in web:
                if r.ok and r.image is None:  # img2dataset lost the row (crashed subjob)
                    r.fail("download_error", "no result from img2dataset")
            shutil.rmtree(out, ignore_errors=True)


@contextlib.contextmanager
def _proxy_env(proxy_url: str) -> Iterator[None]:
    """Point urllib (in img2dataset's spawned workers, which inherit the environment) at the guard."""
    keys = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "no_proxy", "NO_PROXY", "CV_IO_MAX_IMAGE_PIXELS")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update({"http_proxy": proxy_url, "https_proxy": proxy_url, "HTTP_PROXY": proxy_url, "HTTPS_PROXY": proxy_url})
    os.environ.pop("no_proxy", None)
    os.environ.pop("NO_PROXY", None)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _output_to(log_path: str | None) -> Iterator[None]:
    """Send this process's stdout/stderr (inherited by img2dataset's workers) to ``log_path``: per-shard logs."""
    if log_path is None:
        yield
        return
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_path, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _read_img2dataset_output(out: Path, fmt: str, ext: str) -> Iterator[tuple[dict, bytes | None]]:
    """Yield (metadata row, image bytes or None) for every sample img2dataset wrote."""
    for meta_file in sorted(out.glob("*.parquet")):
        table = pq.read_table(meta_file)
        images: dict[str, bytes] = {}
        if fmt == "webdataset":
            tar_path = meta_file.with_suffix(".tar")
            if tar_path.exists():
                with tarfile.open(tar_path) as tar:
                    for m in tar.getmembers():
                        if m.name.endswith("." + ext):
                            f = tar.extractfile(m)
                            if f is not None:
                                images[m.name.rsplit(".", 1)[0]] = f.read()
        for row in table.to_pylist():
            data = row.pop(ext, None) if fmt == "parquet" else images.get(row.get("key"))
            yield row, data


class ImageValidator(Filter):
    """Decodes every downloaded image fully: names corrupt, non-image and over-large images; fills size and hash."""

    name = "validate"

    def __init__(self, max_image_pixels: int) -> None:
        super().__init__()
        self.max_image_pixels = max_image_pixels

    def check(self, record: ImageRecord) -> str | None:
        from PIL import Image, UnidentifiedImageError

        data = record.image or b""
        if not data:
            record.error_message = "empty body"
            return "empty_body"
        try:
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
                if w * h > self.max_image_pixels:
                    record.error_message = f"{w}x{h} > {self.max_image_pixels} pixels"
                    return "decompression_bomb"
                im.load()  # full decode: catches truncation and corrupt data
                record.metadata["format"] = (im.format or "").lower()
        except Image.DecompressionBombError as e:
            record.error_message = str(e)[:200]
            return "decompression_bomb"
        except UnidentifiedImageError:
            record.error_message = f"not an image ({len(data)} bytes, starts {data[:8]!r})"
            return "not_an_image"
        except (OSError, ValueError, SyntaxError) as e:
            record.error_message = f"{type(e).__name__}: {e}"[:200]
            return "corrupt_image"
        record.width, record.height = int(w), int(h)
        record.sha256 = hashlib.sha256(data).hexdigest()
        return None

    def run(self, records: Iterable[ImageRecord]) -> Iterator[ImageRecord]:
        for r in super().run(records):
            if not r.ok:
                r.image = None  # a failure row keeps its status, not its bytes
            yield r
