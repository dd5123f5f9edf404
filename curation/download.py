"""Download a URL shard under the egress policy (:mod:`curation.netguard`), then validate every image.

Every URL of the shard comes out as exactly one record: ``ok`` with image bytes, or a named failure.

Why MRBench's own fetch loop rather than img2dataset: img2dataset downloads with ``urllib.request.urlopen`` and
has no hook for a per-hop scheme check (``urllib`` follows a redirect to ``ftp://`` or ``file://`` itself), for
connecting to the address that was checked, for a per-domain concurrency limit, for ``Retry-After`` or backoff (it
retries a 404 at once); it re-encodes every non-JPEG image even with ``skip_reencode`` (PNG transparency, GIF
animation and 16-bit depth are lost); and each call spawns a process pool that imports OpenCV and albumentations.
Putting it behind a forward proxy cost a thread, a second connection and a fully buffered body per request. The loop
here is a thread pool (one per worker process, reused by every shard it runs) around :class:`Fetcher`.

Bytes: with ``resize_mode: no`` (and ``convert_format`` off) a row keeps the publisher's bytes, their format and
their sha256. A resize or ``convert_format`` re-encodes (PIL, img2dataset's resize modes) and the row records it in
``metadata.encoding`` (``original`` otherwise), with the original format and sha256 beside it.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Callable, Iterable, Iterator
from urllib.parse import unquote, urlsplit

from mrbench.curation.config import CrawlConfig
from mrbench.curation.blocklist import HashBlocklist, blocklist_identity
from mrbench.curation.img2dataset import PACKED, fill_from_shards
from mrbench.curation.netguard import FetchError, Fetcher, FetchResult, check_url, strip_credentials
from mrbench.images import display_size, load_image
from mrbench.log import get_logger
from mrbench.records import ImageRecord
from mrbench.progress import ShardProgress, shard_progress
from mrbench.shards import read_records, write_records_sorted
from mrbench.stage import Filter, ShardedStep, Stage, Step
from mrbench.stats import Stats

# Leading bytes of the image formats we accept: a body that starts like one but does not parse is corrupt.
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"RIFF", b"BM", b"II*\x00", b"MM\x00*")
# The only decoders web bytes are given (PIL names): a web crawl has no business running EPS (ghostscript), PSD, ...
WEB_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")  # JPEG covers MPO (camera JPEGs)
# Key in ImageRecord.metadata set at selection for rows of ``folder`` sources: the only rows read from disk.
LOCAL_FILE = "local_file"
# A download shard's row group is written once its rows hold this many bytes (or 1024 rows): what a worker buffers.
ROW_GROUP_BYTES = 64 << 20
PACKED_BATCH = 256  # rows of img2dataset sources read from their shards at a time

log = get_logger(__name__)
_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _thread_pool(threads: int) -> ThreadPoolExecutor:
    """One download thread pool per worker process (and thread count), reused by every shard the worker runs."""
    with _pools_lock:
        pool = _pools.get(threads)
        if pool is None:
            pool = _pools[threads] = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="mrbench-dl")
        return pool


class Downloader(Stage):
    """Downloads every http(s) record with :class:`~curation.netguard.Fetcher` (``thread_count`` threads).

    Rows of local ``folder`` sources (marked at selection, never by their URL alone) are read from disk, rows of
    ``img2dataset`` sources from their shards (:mod:`curation.img2dataset`); any other non-http(s) URL is
    ``unsupported_url`` without any I/O.
    """

    name = "download"

    def __init__(self, config: CrawlConfig) -> None:
        super().__init__()
        self.config = config

    def run(self, records: Iterable[ImageRecord]) -> Iterator[ImageRecord]:
        """Every record in input order, once all are done (they are held: :meth:`as_completed` streams)."""
        records = list(records)
        at = {id(r): k for k, r in enumerate(records)}
        yield from sorted(self.as_completed(records), key=lambda r: at[id(r)])

    def as_completed(self, records: Iterable[ImageRecord]) -> Iterator[ImageRecord]:
        """Every record, each as soon as it is done (a slow server holds up only its own rows); at most
        :func:`fetch_window` fetches are queued or in flight, so memory does not grow with the number of records."""
        live = shard_progress()  # the driver's bar moves with every URL, with ok / failed counts
        threads = self.config.thread_count
        pending: dict[Future, ImageRecord] = {}
        packed: list[ImageRecord] = []  # rows of img2dataset sources: bytes from their shards, no request is made
        fetcher: Fetcher | None = None
        try:
            for r in records:
                if r.ok and r.metadata.get(PACKED):
                    packed.append(r)
                    if len(packed) == PACKED_BATCH:
                        yield from self._unpack(packed, live)
                        packed = []
                    continue
                if not (r.ok and not r.metadata.get(LOCAL_FILE) and check_url(r.url) is None):
                    yield self._finish(r, None, live)
                    continue
                fetcher = fetcher or Fetcher(self.config)
                pending[_thread_pool(threads).submit(_fetch_one(fetcher), r)] = r
                while len(pending) >= fetch_window(threads):
                    for future in wait(pending, return_when=FIRST_COMPLETED).done:
                        yield self._finish(pending.pop(future), future, live)
            if packed:
                yield from self._unpack(packed, live)
            while pending:
                for future in wait(pending, return_when=FIRST_COMPLETED).done:
                    yield self._finish(pending.pop(future), future, live)
        except BaseException:  # Ctrl-C, or the consumer gave up: queued downloads cancelled, those in flight stopped
            for future in pending:
                future.cancel()
            if fetcher is not None:
                fetcher.abort()
            raise
        if fetcher is not None:
            self.stats.inc("download/max_concurrent_per_domain", max(fetcher.limiter.peak.values(), default=0))

    def _finish(self, r: ImageRecord, future: Future | None, live: ShardProgress) -> ImageRecord:
        """The record with its outcome: fetched (``future``), read from disk, or refused before any I/O."""
        if future is not None:
            outcome = future.result()
            if isinstance(outcome, FetchError):
                r.fail(outcome.reason, outcome.message)
            else:
                r.image = outcome.body
                if outcome.credentials_stripped:
                    r.url = outcome.url  # never released with its password
                    r.metadata["credentials_stripped"] = True
                if outcome.attempts > 1:
                    r.metadata["attempts"] = outcome.attempts
        elif r.ok and r.metadata.get(LOCAL_FILE):
            read_local_file(r, self.config.max_body_bytes)
        elif r.ok and not r.metadata.get(PACKED):
            r.fail(*check_url(r.url))
        if (not r.ok or r.metadata.get(PACKED)) and not r.metadata.get(LOCAL_FILE):
            r.url, stripped = strip_credentials(r.url)  # a failed (or packed) row is written: never with a password
            if stripped:
                r.metadata["credentials_stripped"] = True
        live.add(1, failed=int(not r.ok))
        self.stats.inc(f"download/{r.status}")
        if not r.ok:
            self.stats.error(r.error_message)
        return r

    def _unpack(self, packed: list[ImageRecord], live: ShardProgress) -> Iterator[ImageRecord]:
        """Rows of img2dataset sources with their bytes (or failure) from their shards, one pass per shard."""
        fill_from_shards(packed, self.config.max_body_bytes)
        for r in packed:
            yield self._finish(r, None, live)


def fetch_window(threads: int) -> int:
    """Fetches one worker keeps queued or in flight: enough to keep ``threads`` threads busy."""
    return 4 * threads


def _fetch_one(fetcher: Fetcher) -> Callable[[ImageRecord], FetchResult | FetchError]:
    def call(r: ImageRecord) -> FetchResult | FetchError:
        try:
            return fetcher.fetch(r.url)
        except FetchError as e:  # a failure is data: the row's status
            return e
        except Exception as e:  # noqa: BLE001 (whatever a hostile server or URL provokes stays one row's failure)
            log.warning("unexpected %s fetching %.200s", type(e).__name__, r.url, exc_info=True)
            return FetchError("fetch_error", f"{type(e).__name__}: {e}"[:300])
    return call


def read_local_file(r: ImageRecord, max_bytes: int) -> None:
    """Read the file of a ``folder``-source row: regular files only (a FIFO or device is refused without blocking)."""
    parts = urlsplit(r.url)
    if parts.scheme != "file":
        r.fail("unsupported_url", f"local row with a non-file url {r.url[:200]!r}")
        return
    path = Path(unquote(parts.path))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # O_NONBLOCK: opening a FIFO must not wait for a writer
    except OSError as e:
        r.fail("file_unreadable", f"{type(e).__name__}: {e}")
        return
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            r.fail("file_unreadable", f"{path} is not a regular file")
            return
        if st.st_size > max_bytes:
            r.fail("oversize_body", f"{st.st_size} bytes > {max_bytes}")
            return
        with os.fdopen(os.dup(fd), "rb") as f:
            r.image = f.read(max_bytes + 1)
    except OSError as e:
        r.fail("file_unreadable", f"{type(e).__name__}: {e}")
    finally:
        os.close(fd)


class ImageValidator(Filter):
    """Decodes every downloaded image fully: names corrupt, non-image and over-large images; fills size, format and
    hash; re-encodes only when a resize or ``convert_format`` asks for it (recorded in ``metadata.encoding``).

    Args:
        max_image_pixels: Images declaring more pixels are ``decompression_bomb`` (checked before decoding).
        config: The crawl config, for ``resize_mode``, ``image_size``, ``encode_format``, ``convert_format``; None
            keeps every image's bytes.
    """

    name = "validate"

    def __init__(self, max_image_pixels: int, config: CrawlConfig | None = None) -> None:
        super().__init__()
        self.max_image_pixels = max_image_pixels
        self.resize_mode = config.resize_mode if config else "no"
        self.image_size = config.image_size if config else 0
        self.encode_format = config.encode_format if config else "jpg"
        self.convert = bool(config and config.convert_format)

    def check(self, record: ImageRecord) -> str | None:
        from PIL import Image, UnidentifiedImageError

        data = record.image or b""
        if not data:
            record.error_message = "empty body"
            return "empty_body"
        try:
            with Image.open(io.BytesIO(data), formats=WEB_FORMATS) as im:
                w, h = im.size
                if w * h > self.max_image_pixels:
                    record.error_message = f"{w}x{h} > {self.max_image_pixels} pixels"
                    return "decompression_bomb"
                im.load()  # full decode: catches truncation and corrupt data
                fmt = {"MPO": "jpeg"}.get(im.format or "", (im.format or "").lower())  # MPO: a camera JPEG
                w, h = display_size(im)  # the EXIF-oriented size (mrbench.images policy)
        except Image.DecompressionBombError as e:
            record.error_message = str(e)[:200]
            return "decompression_bomb"
        except UnidentifiedImageError:
            record.error_message = f"not an image ({len(data)} bytes, starts {data[:8]!r})"
            return "corrupt_image" if data.startswith(_MAGIC) else "not_an_image"
        except (OSError, ValueError, SyntaxError) as e:
            record.error_message = f"{type(e).__name__}: {e}"[:200]
            return "corrupt_image"
        record.metadata["format"] = fmt
        record.metadata["encoding"] = "original"
        if self.resize_mode != "no" or self.convert:
            record.metadata["original_format"] = fmt
            record.metadata["original_sha256"] = hashlib.sha256(data).hexdigest()
            record.metadata["original_width"], record.metadata["original_height"] = int(w), int(h)
            try:
                data, w, h = reencode(data, self.resize_mode, self.image_size, self.encode_format)
            except (OSError, ValueError) as e:
                record.error_message = f"re-encoding failed: {type(e).__name__}: {e}"[:200]
                return "corrupt_image"
            record.image = data
            record.metadata["format"] = "jpeg" if self.encode_format == "jpg" else self.encode_format
            record.metadata["encoding"] = (f"resize:{self.resize_mode}:{self.image_size}:{self.encode_format}"
                                           if self.resize_mode != "no" else f"convert:{self.encode_format}")
        record.width, record.height = int(w), int(h)
        record.sha256 = hashlib.sha256(data).hexdigest()
        return None

    def run(self, records: Iterable[ImageRecord]) -> Iterator[ImageRecord]:
        for r in super().run(records):
            if not r.ok:
                r.image = None  # a failure row keeps its status, not its bytes
            yield r


def resize_image(im, mode: str, size: int):  # type: ignore[no-untyped-def]
    """img2dataset's resize modes with PIL: ``keep_ratio`` (shorter side = size), ``keep_ratio_largest`` (longer
    side = size), ``center_crop`` (shorter side = size, then a centred square), ``border`` (longer side = size, padded
    with white to a square); ``no`` returns ``im``."""
    from PIL import Image

    if mode == "no":
        return im
    w, h = im.size
    scale = size / (min(w, h) if mode in ("keep_ratio", "center_crop") else max(w, h))
    new = (max(1, round(w * scale)), max(1, round(h * scale)))
    if new != (w, h):
        im = im.resize(new, Image.Resampling.LANCZOS if scale > 1 else Image.Resampling.BOX)
    if mode == "center_crop":
        left, top = (im.width - size) // 2, (im.height - size) // 2
        im = im.crop((left, top, left + size, top + size))
    elif mode == "border":
        canvas = Image.new(im.mode, (size, size), "white")
        canvas.paste(im, ((size - im.width) // 2, (size - im.height) // 2))
        im = canvas
    return im


def reencode(data: bytes, mode: str, size: int, fmt: str) -> tuple[bytes, int, int]:
    """Decode (EXIF orientation applied), resize by ``mode`` and encode as ``fmt``; returns (bytes, width, height)."""
    from PIL import Image

    im = load_image(data, mode=None)
    keep_alpha = fmt in ("png", "webp") and im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
    if keep_alpha:
        im = im.convert("RGBA")
    elif im.mode not in ("RGB", "L"):
        if "A" in im.getbands() or im.mode == "P":  # flatten transparency on white, as img2dataset does
            rgba = im.convert("RGBA")
            im = Image.new("RGB", rgba.size, "white")
            im.paste(rgba, mask=rgba.getchannel("A"))
        else:
            im = im.convert("RGB")  # 16-bit, CMYK, ... -> 8-bit RGB (re-encoding was asked for)
    im = resize_image(im, mode, size)
    buf = io.BytesIO()
    options = {"jpg": ("JPEG", {"quality": 95}), "png": ("PNG", {}), "webp": ("WEBP", {"quality": 95})}[fmt]
    im.save(buf, format=options[0], **options[1])
    return buf.getvalue(), im.width, im.height


class DownloadTask(ShardedStep):
    """Per URL shard: download (under the egress policy), validate, and write one row per URL, sorted by id.

    Rows are written as they complete (:func:`~mrbench.shards.write_records_sorted`), so a worker holds a bounded
    number of images whatever the shard's size. The marker follows the complete file; a shard killed half-way is
    redone whole."""

    def process(self, shard: int) -> tuple[None, Stats]:
        downloader = Downloader(self.config.crawl)
        validator = ImageValidator(self.config.crawl.max_image_pixels, self.config.crawl)
        stages: list[Stage] = [validator]
        blocklist = HashBlocklist.from_config(self.config.crawl)  # sha256 / phash lists, before any byte is stored
        if blocklist is not None:
            stages.append(blocklist)
        records = downloader.as_completed(read_records(self.layout.urls.output(shard)))
        for stage in stages:
            records = stage(records)
        write_records_sorted(records, self.shards.output(shard), ROW_GROUP_BYTES)
        stats = Stats()
        for stage in [downloader, *stages]:
            stats.merge(stage.stats)
        return None, stats


# Timeouts, retries, backoff and threads are free settings (mrbench.fingerprint.FREE_SETTINGS).
DOWNLOAD_STEP = Step("download", DownloadTask, after="select", reads=("select",), unit="URLs",
                     parts=(("fetch", "http(s) download under the egress policy; one status row per URL"),
                            ("validate", "full decode: corrupt, non-image, decompression-bomb checks; size and sha256"),
                            ("hash_blocklist", "crawl.blocklists sha256 / perceptual-hash lists: blocked images keep "
                                               "no bytes")),
                     settings=("crawl.allow_private_network", "crawl.max_body_bytes", "crawl.max_image_pixels",
                               "crawl.max_redirects", "crawl.resize_mode", "crawl.image_size", "crawl.encode_format",
                               "crawl.convert_format", "crawl.disallowed_header_directives",
                               "crawl.honor_tdm_reservation", "crawl.user_agent_token", "crawl.blocklists"),
                     inputs=blocklist_identity)
