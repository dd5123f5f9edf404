"""Block lists (``crawl.blocklists``): URLs, domains, record ids, sha256 digests and perceptual hashes never to release.

A list is a text file, one entry a line; blank lines and ``#`` comments are skipped. Where each kind acts:

* ``url`` (the URL exactly as the metadata has it), ``domain`` (a host and every sub-domain of it: ``example.com``
  blocks ``img.example.com``) and ``id`` (release ids, 16 hex digits; the sha1 of the URL): at selection, before any
  request (:func:`block_at_selection`); the rows are ``blocked_url`` / ``blocked_domain`` / ``blocked_id`` and do not
  take a place under their tag's cap.
* ``sha256`` (of the image bytes as they would be released) and ``phash`` (a 64-bit DCT perceptual hash, 16 hex
  digits, as ``str(imagehash.phash(image))`` prints it; an image within ``max_distance`` differing bits is blocked):
  after download, inside the download step (:class:`HashBlocklist`), so a blocked image's bytes never reach a shard;
  the rows are ``blocked_sha256`` / ``blocked_phash``.

Every blocked row keeps its reason and the list it matched in ``rejects/``; ``mrbench release remove --urls / --ids /
--sha256 FILE`` takes the same files, so a takedown list given here keeps the images out of later curations.

The perceptual hash is :func:`phash` (PIL and scipy's DCT), the algorithm of the ``imagehash`` package's ``phash``
with the same bit order and hex form, so lists made with ``imagehash`` work here (give it the EXIF-oriented image,
``ImageOps.exif_transpose``: MRBench hashes what a browser displays); ``imagehash`` itself is not a dependency (nor
its PyWavelets) for these few lines.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

from mrbench.config import InputError
from mrbench.curation.config import BlocklistConfig, CrawlConfig
from mrbench.records import ImageRecord
from mrbench.stage import Filter

if TYPE_CHECKING:
    import duckdb

SELECTION_KINDS = ("url", "domain", "id")
HASH_KINDS = ("sha256", "phash")
BLOCK_REASONS = tuple(f"blocked_{k}" for k in (*SELECTION_KINDS, *HASH_KINDS))
_FORMS = {"id": re.compile(r"[0-9a-f]{16}"), "sha256": re.compile(r"[0-9a-f]{64}"), "phash": re.compile(r"[0-9a-f]{16}")}
_DOMAIN = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*|\[[0-9a-f:.]+\]")
# The host of a URL, in SQL: the scheme, optional userinfo, then up to the port, path, query or fragment.
HOST_SQL = ("lower(regexp_extract({col}, '^[A-Za-z][A-Za-z0-9+.-]*://(?:[^/?#@]*@)?(\\[[^\\]]*\\]|[^/?#:]*)', 1))")


def read_entries(block: BlocklistConfig) -> list[str]:
    """The entries of one list, normalised (hashes and domains lowercase; a domain given as a URL becomes its host).

    Raises:
        InputError: the file is missing or unreadable, or a line is not an entry of its kind (``FILE:LINE``).
    """
    from urllib.parse import urlsplit

    path = Path(block.path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"crawl.blocklists: no such file {str(path)!r}") from None
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or e})") from None
    out: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        entry = line.split("#", 1)[0].strip() if block.kind != "url" else line.strip()
        if not entry or entry.startswith("#"):
            continue
        if block.kind == "domain":
            entry = (urlsplit(entry).hostname or "") if "://" in entry else entry.lower().strip(".")
            entry = entry[2:] if entry.startswith("*.") else entry
            if not _DOMAIN.fullmatch(entry):
                raise InputError(f"{path}:{number}: {line.strip()[:80]!r} is not a domain name")
        elif block.kind in _FORMS:
            entry = entry.lower()
            if not _FORMS[block.kind].fullmatch(entry):
                want = {"id": "16", "sha256": "64", "phash": "16"}[block.kind]
                raise InputError(f"{path}:{number}: {line.strip()[:80]!r} is not a valid {block.kind} ({want} hex digits)")
        out.append(entry)
    return out


def blocklist_identity(config: Any) -> dict[str, str]:
    """The block lists' contents for step fingerprints (:mod:`mrbench.fingerprint`): a list edited in place redoes
    the steps that read it (selection, download)."""
    h = hashlib.sha256()
    for b in config.crawl.blocklists:
        path = Path(b.path)
        h.update(f"{b.kind}\0{b.max_distance}\0".encode() + (path.read_bytes() if path.is_file() else b"") + b"\0")
    return {"blocklists": h.hexdigest()[:32] if config.crawl.blocklists else ""}


def check_blocklists(config: CrawlConfig) -> int:
    """Read every configured list before any work (a bad line fails the run at once); returns the entries."""
    return sum(len(read_entries(b)) for b in config.blocklists)


def block_at_selection(con: "duckdb.DuckDBPyConnection", config: CrawlConfig, candidates: str) -> bool:
    """Create the temp table ``blocked(url, reason, detail)``: every candidate URL of the view ``candidates`` that a
    ``url``, ``domain`` or ``id`` list names (one row per URL; the first kind in that order wins). Returns False,
    creating nothing, when no such list is configured."""
    import pyarrow as pa

    lists = [(b, read_entries(b)) for b in config.blocklists if b.kind in SELECTION_KINDS]
    if not lists:
        return False
    rows = [(b.kind, e, Path(b.path).name) for b, entries in lists for e in entries]
    con.register("block_rows", pa.table({"kind": [r[0] for r in rows], "entry": [r[1] for r in rows],
                                         "list": [r[2] for r in rows]}))
    host = HOST_SQL.format(col="url")
    con.execute(
        "CREATE TEMP TABLE blocked AS SELECT url, arg_min(reason, rank) AS reason, arg_min(detail, rank) AS detail"
        " FROM ("
        "  SELECT c.url, 'blocked_url' AS reason, 1 AS rank, 'listed in ' || b.list AS detail FROM"
        "   (SELECT DISTINCT url FROM " + candidates + ") c JOIN block_rows b ON b.kind = 'url' AND c.url = b.entry"
        "  UNION ALL SELECT h.url, 'blocked_domain', 2, 'domain ' || b.entry || ' listed in ' || b.list FROM"
        "   (SELECT url, unnest(list_transform(range(1, len(string_split(host, '.')) + 1),"
        "      lambda i: array_to_string(string_split(host, '.')[i:], '.'))) AS suffix"
        "    FROM (SELECT DISTINCT url, " + host + " AS host FROM " + candidates + ")) h"
        "   JOIN block_rows b ON b.kind = 'domain' AND h.suffix = b.entry"
        "  UNION ALL SELECT c.url, 'blocked_id', 3, 'id ' || b.entry || ' listed in ' || b.list FROM"
        "   (SELECT DISTINCT url FROM " + candidates + ") c JOIN block_rows b"
        "   ON b.kind = 'id' AND substr(sha1(c.url), 1, 16) = b.entry"
        " ) GROUP BY url")
    con.unregister("block_rows")
    return True


def phash(data: bytes, hash_size: int = 8, highfreq_factor: int = 4) -> str:
    """The DCT perceptual hash of an encoded image as 16 hex digits (``imagehash.phash``'s algorithm: grey, resized
    to 32x32 with Lanczos, 2-D DCT-II, the top-left 8x8 coefficients compared to their median, bits row-major)."""
    import numpy as np
    import scipy.fft
    from PIL import Image

    from mrbench.images import load_image

    size = hash_size * highfreq_factor
    im = load_image(data, mode="L").resize((size, size), Image.Resampling.LANCZOS)
    pixels = np.asarray(im, dtype=np.float64)
    dct = scipy.fft.dct(scipy.fft.dct(pixels, axis=0, norm=None), axis=1, norm=None)
    low = dct[:hash_size, :hash_size]
    bits = (low > np.median(low)).flatten()
    return f"{int(''.join('1' if b else '0' for b in bits), 2):0{hash_size * hash_size // 4}x}"


def hamming(a: str, b: str) -> int:
    """Differing bits of two hex hashes."""
    return (int(a, 16) ^ int(b, 16)).bit_count()


class HashBlocklist(Filter):
    """Drops downloaded images whose sha256 or perceptual hash is on a ``sha256`` / ``phash`` list (in the download
    step, after validation; a dropped row keeps no bytes).

    Args:
        sha256: Digest -> the list naming it.
        phashes: (hash, max_distance, list) per ``phash`` entry.
    """

    name = "blocklist"
    reasons = ("blocked_sha256", "blocked_phash")

    def __init__(self, sha256: dict[str, str], phashes: list[tuple[int, int, str]]) -> None:
        super().__init__()
        self.sha256 = sha256
        self.phashes = phashes

    @classmethod
    def from_config(cls, config: CrawlConfig) -> "HashBlocklist | None":  # type: ignore[override]
        """The filter for a crawl config, or None when it has no hash list."""
        sha: dict[str, str] = {}
        ph: list[tuple[int, int, str]] = []
        for b in config.blocklists:
            if b.kind == "sha256":
                sha.update((e, Path(b.path).name) for e in read_entries(b))
            elif b.kind == "phash":
                ph += [(int(e, 16), b.max_distance, Path(b.path).name) for e in read_entries(b)]
        return cls(sha, ph) if sha or ph else None

    def check(self, record: ImageRecord) -> str | None:
        digest = record.sha256 or hashlib.sha256(record.image or b"").hexdigest()
        if digest in self.sha256:
            record.error_message = f"sha256 listed in {self.sha256[digest]}"
            return "blocked_sha256"
        if self.phashes:
            try:
                mine = phash(record.image or b"")
            except (OSError, ValueError, SyntaxError) as e:  # validated already: named, never raised
                record.error_message = f"perceptual hash failed: {type(e).__name__}: {e}"[:200]
                return "corrupt_image"
            record.metadata["phash"] = mine
            value = int(mine, 16)
            for entry, limit, source in self.phashes:
                d = (value ^ entry).bit_count()
                if d <= limit:
                    record.error_message = f"phash {mine} within {d} bits of {entry:016x} listed in {source}"
                    return "blocked_phash"
        return None

    def run(self, records: Iterable[ImageRecord]) -> Iterator[ImageRecord]:
        for r in super().run(records):
            if not r.ok:
                r.image = None  # a blocked image's bytes never reach a shard
            yield r
