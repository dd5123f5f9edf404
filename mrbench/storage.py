"""Object storage: run folders, sources and releases at ``s3://``, ``gs://`` or any fsspec URL.

A local path is never touched here: every function passes it through to the code that reads and writes local files
today, so local runs stay as they are. A URL goes through one :class:`pyarrow.fs.FileSystem` (pyarrow's own for
``s3://``, ``gs://`` and ``hdfs://``; fsspec's, wrapped, for any other scheme it knows), configured from the standard
environment variables (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``,
``AWS_PROFILE``; ``GOOGLE_APPLICATION_CREDENTIALS`` for ``gs://``).

A run folder at a URL is staged (:class:`StagedRun`): the run works in a local folder, and every file it finishes is
uploaded, completion markers last. Object stores have no rename, so a marker keeps its meaning by order alone: the
outputs it vouches for are uploaded and confirmed (their size read back) before the marker itself is.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import tempfile
import time
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Iterable, Iterator

from mrbench.config import ConfigError

_URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://(.*)$")
# Completion markers: a shard's ``.done``, a global step's ``_SUCCESS`` (mrbench.shards). Uploaded after every other
# file of a sync, removed before every other file.
_MARKER_ENDS = (".done", "_SUCCESS")
# Never uploaded: the local lock, MRBench's temporary files, live progress counts (mrbench.runlock, mrbench.progress).
_LOCAL_ONLY = re.compile(r"(^|/)(run\.lock(\.pid)?|\.staging\.lock(\.new)?)$|\.mrbench\.tmp$|\.progress\.json$")
_STAGING_PREFIX = "mrbench-stage-"
_STAGING_LOCK = ".staging.lock"
_SHARD_NUMBER = re.compile(r"(?<!\d)(\d{5})(?!\d)")
# Environment variables to name when access fails, per scheme.
_CREDENTIALS = {"s3": "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)",
                "gs": "GOOGLE_APPLICATION_CREDENTIALS", "gcs": "GOOGLE_APPLICATION_CREDENTIALS"}
_ENDPOINT = {"s3": "AWS_ENDPOINT_URL"}


class StorageError(ConfigError):
    """An object-store URL cannot be used: no credentials, an unreachable endpoint, no such bucket."""


def is_url(path: str | os.PathLike[str] | None) -> bool:
    """Whether ``path`` names an object-store (or other fsspec) URL rather than a local path (``file://`` is local)."""
    if not isinstance(path, str):
        return False
    m = _URL.match(path)
    return bool(m) and m.group(1).lower() != "file"


def join(url: str, *parts: str) -> str:
    """``url`` with ``parts`` appended by ``/``."""
    return "/".join([url.rstrip("/"), *(p.strip("/") for p in parts)])


def name(path: str) -> str:
    """The last component of a local path or URL."""
    return PurePosixPath(path.rstrip("/")).name if is_url(path) else Path(path).name


def _scheme(url: str) -> str:
    m = _URL.match(url)
    return m.group(1).lower() if m else ""


def filesystem(url: str) -> tuple[Any, str]:
    """The pyarrow file system of ``url`` and the path inside it (``bucket/key`` for object stores).

    Raises:
        StorageError: an unknown scheme, a missing client library.
    """
    import pyarrow.fs as pafs

    scheme = _scheme(url)
    if scheme == "s3":
        # The AWS SDK inside pyarrow sends checksummed uploads in aws-chunked encoding by default, without a
        # Content-Length: S3-compatible servers (rclone, older MinIO, Ceph) answer 411 MissingContentLength. Asking
        # for checksums only where an operation requires them is what every AWS SDK did before 2025.
        os.environ.setdefault("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")
        os.environ.setdefault("AWS_RESPONSE_CHECKSUM_VALIDATION", "when_required")
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None
        fs = pafs.S3FileSystem(endpoint_override=endpoint, region=region, connect_timeout=10, request_timeout=120,
                               check_directory_existence_before_creation=False)
        return fs, url.split("://", 1)[1].strip("/")
    if scheme in ("gs", "gcs", "hdfs", "viewfs"):
        try:
            return pafs.FileSystem.from_uri(url)
        except (OSError, ValueError) as e:
            raise StorageError(f"{url}: {_first_line(e)}") from None
    try:
        import fsspec

        fs, path = fsspec.core.url_to_fs(url)
    except ImportError as e:  # fsspec knows the scheme but its package is not installed (e.g. gcsfs, adlfs)
        raise StorageError(f"{url}: {_first_line(e)}") from None
    except ValueError as e:
        raise StorageError(f"{url}: unknown storage scheme {scheme!r} ({_first_line(e)})") from None
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def explain(e: BaseException, url: str) -> StorageError:
    """A storage failure as one sentence naming what is missing and the environment variable to set."""
    text = _first_line(e)
    scheme = _scheme(url)
    creds, endpoint = _CREDENTIALS.get(scheme, "the store's credentials"), _ENDPOINT.get(scheme)
    lowered = text.lower()
    if any(k in lowered for k in ("access key", "accessdenied", "access denied", "access_denied", "signature", "unsupportedalgorithm",
                                  "credential", "forbidden", "http status 403", "invalidaccesskeyid")):
        return StorageError(f"{url}: the store refused the credentials ({text}); set {creds}")
    if any(k in lowered for k in ("network_connection", "could not connect", "couldn't connect", "resolve host",
                                  "connection refused", "timed out", "curlcode")):
        where = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or "the default endpoint"
        hint = f"; set {endpoint} to the store's address" if endpoint else ""
        return StorageError(f"{url}: cannot reach the store at {where} ({text}){hint}")
    return StorageError(f"{url}: {text}")


def check_access(url: str) -> None:
    """Fail fast, before any work, when ``url`` cannot be listed: no credentials, an unreachable endpoint, no bucket.

    Raises:
        StorageError: naming what is missing and the environment variable that supplies it.
    """
    import pyarrow.fs as pafs

    scheme = _scheme(url)
    if scheme == "s3" and not _aws_credentials_configured():
        raise StorageError(f"{url}: no credentials for s3:// found; set {_CREDENTIALS['s3']}"
                           " (and AWS_ENDPOINT_URL for a server other than AWS)")
    fs, path = filesystem(url)
    bucket = path.split("/", 1)[0]
    try:
        info = fs.get_file_info(bucket) if scheme in ("s3", "gs", "gcs") else None
        if info is not None and info.type == pafs.FileType.NotFound:
            raise StorageError(f"{url}: no bucket {bucket!r} at {_where(scheme)}; create it first or fix the URL")
        fs.get_file_info(pafs.FileSelector(path, recursive=False, allow_not_found=True))
    except StorageError:
        raise
    except OSError as e:
        raise explain(e, url) from None


def _where(scheme: str) -> str:
    if scheme == "s3":
        return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or "AWS S3"
    return f"the {scheme}:// store"


def _aws_credentials_configured() -> bool:
    """Whether any source of AWS credentials is set up (keys, a profile, web identity, a container role, the config
    files), or the instance metadata service may supply them (it is not disabled)."""
    env = ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
           "AWS_CONTAINER_CREDENTIALS_FULL_URI")
    if any(os.environ.get(k) for k in env):
        return True
    files = [os.environ.get("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials"),
             os.environ.get("AWS_CONFIG_FILE", "~/.aws/config")]
    if any(Path(f).expanduser().is_file() for f in files):
        return True
    return os.environ.get("AWS_EC2_METADATA_DISABLED", "").lower() != "true"


# --- reading inputs ------------------------------------------------------------------------------------------------
def open_input(path: str) -> Any:
    """What pyarrow's readers take for ``path``: the path itself when local, an open random-access file for a URL."""
    if not is_url(path):
        return path
    fs, key = filesystem(path)
    try:
        return fs.open_input_file(key)
    except OSError as e:
        raise explain(e, path) from None


def open_binary(path: str) -> BinaryIO:
    """``path`` opened for reading bytes (local or URL)."""
    if not is_url(path):
        return open(path, "rb")
    return open_input(path)


def stat(path: str) -> tuple[str, int, int]:
    """``(kind, size, mtime_ns)`` of a local path or URL; kind is "file", "dir" or "missing"."""
    if not is_url(path):
        p = Path(path)
        if not p.exists():
            return "missing", 0, 0
        st = p.stat()
        return ("dir" if p.is_dir() else "file"), st.st_size, st.st_mtime_ns
    import pyarrow.fs as pafs

    fs, key = filesystem(path)
    try:
        info = fs.get_file_info(key)
    except OSError as e:
        raise explain(e, path) from None
    kind = {pafs.FileType.File: "file", pafs.FileType.Directory: "dir"}.get(info.type, "missing")
    return kind, info.size or 0, info.mtime_ns or 0


def glob(pattern: str) -> list[str]:
    """The URLs matching ``pattern`` (``*``, ``?``, ``[...]`` in its last components), sorted."""
    import fnmatch

    base = pattern
    while any(c in PurePosixPath(base.split("://", 1)[1]).name for c in "*?["):
        base = base.rsplit("/", 1)[0]
    return sorted(u for u in list_files(base, recursive=True) if fnmatch.fnmatchcase(u, pattern))


def list_files(url: str, recursive: bool = True) -> list[str]:
    """The files under folder ``url`` (URLs), sorted; none when it does not exist."""
    return [join(url, rel) for rel in sorted(listing(url, recursive))]


def listing(url: str, recursive: bool = True) -> dict[str, int]:
    """Relative path -> size of every file under folder ``url`` (empty when it does not exist)."""
    import pyarrow.fs as pafs

    fs, root = filesystem(url)
    try:
        infos = fs.get_file_info(pafs.FileSelector(root, recursive=recursive, allow_not_found=True))
    except OSError as e:
        raise explain(e, url) from None
    return {i.path[len(root):].lstrip("/"): i.size for i in infos if i.type == pafs.FileType.File}


# --- moving files ---------------------------------------------------------------------------------------------------
def is_marker(rel: str) -> bool:
    return rel.endswith(_MARKER_ENDS)


def _shard_of(rel: str) -> int | None:
    """The shard a run-folder file belongs to: the first 5-digit number of its name (``shard_00003.parquet``,
    ``train-00003-of-00004.parquet``), None for a file of no shard."""
    m = _SHARD_NUMBER.search(PurePosixPath(rel).name)
    return int(m.group(1)) if m else None


def upload(local: Path, url: str) -> None:
    """Copy one local file to ``url`` and confirm it: its size read back must match (a failed or partial upload
    raises, so no marker ever follows it)."""
    fs, key = filesystem(url)
    size = local.stat().st_size
    try:
        with open(local, "rb") as src, fs.open_output_stream(key) as dst:
            shutil.copyfileobj(src, dst, 8 << 20)
        got = fs.get_file_info(key).size
    except OSError as e:
        raise explain(e, url) from None
    if got != size:
        raise StorageError(f"{url}: upload incomplete ({got} of {size} bytes stored)")


def download(url: str, local: Path) -> None:
    """Copy ``url`` to ``local`` through a temporary sibling (a killed copy leaves no half file under its name)."""
    from mrbench.runlock import temporary_name

    fs, key = filesystem(url)
    local.parent.mkdir(parents=True, exist_ok=True)
    tmp = local.with_name(temporary_name(local.name))
    try:
        with fs.open_input_stream(key) as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 8 << 20)
        os.replace(tmp, local)
    except OSError as e:
        raise explain(e, url) from None
    finally:
        tmp.unlink(missing_ok=True)


def push(root: Path, url: str, rels: Iterable[str]) -> None:
    """Upload files of local folder ``root`` to folder ``url``: every other file first, each confirmed, then the
    completion markers (a marker on the store always follows its outputs)."""
    rels = sorted(set(rels))
    for rel in [r for r in rels if not is_marker(r)] + [r for r in rels if is_marker(r)]:
        upload(root / rel, join(url, rel))


def remove(url: str, rels: Iterable[str]) -> None:
    """Delete files of folder ``url``: completion markers first (a step is never marked done without its files)."""
    rels = sorted(set(rels))
    fs, root = filesystem(url)
    for rel in [r for r in rels if is_marker(r)] + [r for r in rels if not is_marker(r)]:
        try:
            fs.delete_file(f"{root}/{rel}")
        except FileNotFoundError:
            pass
        except OSError as e:
            raise explain(e, join(url, rel)) from None


def pull(url: str, root: Path, shard: int | None = None, only_missing: bool = True) -> int:
    """Download the files of folder ``url`` into local folder ``root`` (those missing there; every one when
    ``only_missing`` is false); with ``shard``, only the files of that shard and of no shard (what one task reads).
    Returns how many were downloaded."""
    n = 0
    for rel in listing(url):
        if _LOCAL_ONLY.search(rel) or (shard is not None and _shard_of(rel) not in (None, shard)):
            continue
        if only_missing and (root / rel).exists():
            continue
        download(join(url, rel), root / rel)
        n += 1
    return n


@contextlib.contextmanager
def pulled(url: str) -> Iterator[Path]:
    """Every file under folder ``url`` (none skipped), copied into a temporary local folder for the ``with`` block.

    Raises:
        StorageError: the store cannot be read, or holds nothing under ``url``.
    """
    check_access(url)
    with tempfile.TemporaryDirectory(prefix="mrbench-pull-", dir=os.environ.get("MRBENCH_STAGING_DIR")) as tmp:
        files = listing(url)
        if not files:
            raise StorageError(f"{url}: no such folder (nothing stored under it)")
        for rel in files:
            download(join(url, rel), Path(tmp) / rel)
        yield Path(tmp)


def snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    """Relative path -> (size, mtime_ns, inode) of every file under ``root`` that a store keeps."""
    out = {}
    for p in root.rglob("*"):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and not _LOCAL_ONLY.search(rel):
            st = p.stat()
            out[rel] = (st.st_size, st.st_mtime_ns, st.st_ino)
    return out


def push_shard(root: Path, url: str, shard: int, since_ns: int) -> None:
    """Upload what one task wrote for ``shard``: the files of that shard changed since ``since_ns`` (other tasks
    write other shards' files meanwhile; files of no shard are the driver's, :meth:`StagedRun.sync`)."""
    margin = 2_000_000_000  # file times come from a coarser clock than time.time_ns()
    rels = [rel for rel, (_, mtime, _) in snapshot(root).items()
            if _shard_of(rel) == shard and mtime >= since_ns - margin]
    push(root, url, rels)


class StagedRun:
    """A run folder at a URL, worked on in a local folder and kept in step with the store.

    On entry the store's files are downloaded into a new local folder (removed on exit); :meth:`sync` uploads what
    changed since the last sync (markers last) and deletes from the store what was deleted locally (markers first).
    Sharded steps upload their own shard's files as each finishes (:func:`push_shard`), so a task on a node without
    the driver's disk writes through the store too; :meth:`sync` skips those.

    Args:
        url: The run folder's URL.
    """

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.local: Path = Path()
        self._lock = -1
        self._known: dict[str, tuple[int, int, int]] = {}

    def __enter__(self) -> "StagedRun":
        check_access(self.url)
        base = Path(os.environ.get("MRBENCH_STAGING_DIR") or tempfile.gettempdir())
        base.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(base)
        self.local = Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=base))
        # The lock is held while the folder is in use (the kernel drops it when its holder dies); it is taken
        # under another name and renamed into place, so no cleaner ever sees the lock file unlocked while in use.
        setup = self.local / (_STAGING_LOCK + ".new")
        self._lock = os.open(setup, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        os.replace(setup, self.local / _STAGING_LOCK)
        pull(self.url, self.local)
        self._known = snapshot(self.local)
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.local, ignore_errors=True)
        os.close(self._lock)

    def url_of(self, path: str | Path) -> str:
        """The store URL of a path inside the local folder (other paths unchanged)."""
        try:
            rel = Path(path).relative_to(self.local).as_posix()
        except ValueError:
            return str(path)
        return join(self.url, rel) if rel != "." else self.url

    def sync(self, include_shards: bool = True) -> None:
        """Make the store match the local folder: deleted markers go first, then changed files, changed markers,
        and the other deleted files. ``include_shards=False`` leaves out files of a shard (their task uploaded
        them, :func:`push_shard`) and first fetches what tasks elsewhere wrote but this disk lacks."""
        if not include_shards:
            for rel in listing(self.url):
                if rel not in self._known and not _LOCAL_ONLY.search(rel) and not (self.local / rel).exists():
                    download(join(self.url, rel), self.local / rel)
        now = snapshot(self.local)
        changed = [rel for rel, key in now.items() if self._known.get(rel) != key
                   and (include_shards or _shard_of(rel) is None)]
        gone = [rel for rel in self._known if rel not in now]
        remove(self.url, [r for r in gone if is_marker(r)])
        push(self.local, self.url, changed)
        remove(self.url, [r for r in gone if not is_marker(r)])
        self._known = now



def remove_stale_staging(base: Path) -> int:
    """Delete the staging folders under ``base`` that killed runs left: their lock is free (its holder died).
    Returns how many were removed."""
    n = 0
    for folder in base.glob(_STAGING_PREFIX + "*"):
        try:
            fd = os.open(folder / _STAGING_LOCK, os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # in use
            continue
        finally:
            os.close(fd)
        shutil.rmtree(folder, ignore_errors=True)
        n += 1
    return n
