"""One process at a time per run folder: an advisory ``flock`` on ``RUN_DIR/run.lock``.

The kernel drops an ``flock`` when the last process holding it dies (SIGKILL included), so a lock left by a killed
run is taken over by simply locking again; nothing has to guess from a stale file. The file also records the
holder (pid, host, start time) so a refused second process can name it. Worker processes forked by the holder
(img2dataset's pool) share the lock, so a folder stays locked while any of them is still writing into it.

Where ``flock`` is unsupported (some network file systems), an exclusively created ``run.lock.pid`` file is used
instead: it is taken over when its pid is no longer alive on this host; one from another host is never taken over.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import inspect
import json
import os
import re
import secrets
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

from mrbench.config import ConfigError

LOCK_NAME = "run.lock"
F = TypeVar("F", bound=Callable[..., Any])


class RunLockedError(ConfigError):
    """Another process is working in this run folder."""


def _holder_text(info: dict[str, Any]) -> str:
    if not info:
        return "another process (holder unknown)"
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(info.get("started", 0)))
    return f"pid {info.get('pid')} on {info.get('host')} (started {started})"


def _read_info(path: Path) -> dict[str, Any]:
    try:
        info = json.loads(path.read_text() or "{}")
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError):
        return {}


def pid_alive(pid: int) -> bool:
    """Whether a process with ``pid`` exists on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class RunLock:
    """Exclusive lock of one run folder (context manager; re-entrant within one process is NOT supported).

    Args:
        run_dir: The run folder (created if missing).
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: int | None = None
        self._pidfile: Path | None = None

    def _info(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "host": socket.gethostname(), "started": round(time.time(), 3)}

    def acquire(self) -> "RunLock":
        """Take the lock or raise :class:`RunLockedError` naming the holder."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunLockedError(self._refusal(_read_info(self.path))) from None
            if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                return self._acquire_pidfile()
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(self._info()).encode(), 0)
        self._fd = fd
        return self

    def _refusal(self, info: dict[str, Any]) -> str:
        holder = _holder_text(info)
        if info.get("host") == socket.gethostname() and isinstance(info.get("pid"), int) and not pid_alive(info["pid"]):
            holder += "; that process has exited but processes it started still hold the lock"
        return f"{self.run_dir} is in use by {holder}; wait for it to finish or use another --out folder"

    def _acquire_pidfile(self) -> "RunLock":
        pidfile = self.path.with_name(LOCK_NAME + ".pid")
        for _ in range(2):
            try:
                fd = os.open(pidfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                info = _read_info(pidfile)
                same_host = info.get("host") == socket.gethostname()
                if same_host and isinstance(info.get("pid"), int) and not pid_alive(info["pid"]):
                    pidfile.unlink(missing_ok=True)  # its holder is gone: take it over
                    continue
                raise RunLockedError(self._refusal(info)) from None
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(self._info()))
            self._pidfile = pidfile
            return self
        raise RunLockedError(self._refusal(_read_info(pidfile)))

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
        if self._pidfile is not None:
            self._pidfile.unlink(missing_ok=True)
            self._pidfile = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


# MRBench's own temporary files: ``<name>.<pid>-<8 hex>.mrbench.tmp`` next to the file being written. Only names of
# this form are ever removed from a run folder (the folder may hold the user's own ``*.tmp`` files).
TEMP_SUFFIX = ".mrbench.tmp"
_OWN_TEMPORARY = re.compile(r".+\.\d+-[0-9a-f]{8}" + re.escape(TEMP_SUFFIX))


def temporary_name(name: str) -> str:
    """A temporary sibling name for file ``name``, unique to this writer and recognisable as MRBench's own."""
    return f"{name}.{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}"


def remove_stale_temporaries(run_dir: str | Path) -> int:
    """Delete MRBench's own temporary files (:func:`temporary_name`) under ``run_dir``; any other file, whatever
    its name, is left alone. Call with the run lock held: no writer is alive, so every such file is a leftover of a
    killed run. Returns how many were removed."""
    n = 0
    for p in Path(run_dir).rglob("*" + TEMP_SUFFIX):
        if _OWN_TEMPORARY.fullmatch(p.name) and p.is_file() and not p.is_symlink():
            p.unlink(missing_ok=True)
            n += 1
    return n


_held = threading.local()  # run folders this thread holds through with_run_lock (nested calls re-use the lock)


def with_run_lock(arg: str = "run_dir") -> Callable[[F], F]:
    """Decorator: hold the lock of the run folder passed as argument ``arg`` for the whole call, and remove the
    temporary files a killed run left there before the call starts.

    A decorated function may call another one on the same folder (e.g. a retry step that prepares the folder,
    then runs the pipeline): the inner call runs under the outer call's lock.
    """

    def wrap(fn: F) -> F:
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def locked(*args: Any, **kwargs: Any) -> Any:
            run_dir = Path(sig.bind(*args, **kwargs).arguments[arg]).resolve()
            held: set[Path] = _held.__dict__.setdefault("dirs", set())
            if run_dir in held:
                return fn(*args, **kwargs)
            with RunLock(run_dir):
                held.add(run_dir)
                try:
                    remove_stale_temporaries(run_dir)
                    return fn(*args, **kwargs)
                finally:
                    held.discard(run_dir)

        return locked  # type: ignore[return-value]

    return wrap
