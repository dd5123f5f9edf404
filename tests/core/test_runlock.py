"""The run-folder lock: a second `mrbench curate` on a folder in use exits 2 naming the holder; a killed holder's
lock is taken over; concurrent atomic writes of one file never trip over each other's temporary file."""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mrbench.cli import app
from mrbench.runlock import LOCK_NAME, RunLock, RunLockedError
from mrbench.shards import atomic_write_bytes

runner = CliRunner()
HOLD = textwrap.dedent("""
    import sys
    from mrbench.runlock import RunLock
    RunLock(sys.argv[1]).acquire()
    print("locked", flush=True)
    sys.stdin.read()  # holds the lock until killed (or until the test's end closes stdin): no clock involved
""")


def latin1_config(folder: Path) -> Path:
    """A config that passes validation but whose source cannot be read: the run fails right after the lock."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tags.yaml").write_text("- {name: cafe, category: subject}\n")
    (folder / "meta.csv").write_bytes("url,caption\nhttp://127.0.0.1:9/a.jpg,caf\xe9 au lait\n".encode("latin-1"))
    cfg = folder / "curate.yaml"
    cfg.write_text("sources: [{kind: metadata, paths: [meta.csv]}]\ncrawl: {tag_list: tags.yaml}\nnum_shards: 1\n")
    return cfg


def curate(cfg: Path, out: Path):
    result = runner.invoke(app, ["curate", "-c", str(cfg), "-o", str(out)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def test_second_process_exits_2_naming_holder_then_takes_over_after_kill(tmp_path: Path):
    cfg = latin1_config(tmp_path / "in")
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        r = curate(cfg, run)
        assert r.exit_code == 2
        assert f"in use by pid {holder.pid} on {socket.gethostname()} (started " in r.stderr
        assert not (run / "run_state.json").exists()  # refused before any work
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.communicate()  # reaps it and closes its pipes
    # The kernel dropped the dead holder's lock; its stale record and temporary files are taken over / removed.
    stale = run / "download" / "shard_00000.parquet.4242-deadbeef.mrbench.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half")
    r = curate(cfg, run)
    assert r.exit_code == 2 and "in use" not in r.stderr
    assert "meta.csv" in r.stderr and "not UTF-8" in r.stderr  # got past the lock to the source check
    assert not stale.exists()
    assert (run / LOCK_NAME).read_text() == ""  # released on exit


def test_taking_the_lock_never_deletes_the_users_files(tmp_path: Path):
    """``--out`` into a folder that already holds the user's files: only MRBench's own temporary files go."""
    cfg = latin1_config(tmp_path / "in")
    run = tmp_path / "mine"
    user_files = [run / "notes.tmp", run / "projects" / "thesis" / "chapter1.tmp", run / "download" / "keep.tmp",
                  run / "x.1-abc.tmp", run / "shard.parquet.12-deadbeef.tmp.mrbench.tmp.bak"]
    for f in user_files:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("the user's own words")
    ours = run / "download" / "shard_00000.parquet.77-0123abcd.mrbench.tmp"
    ours.write_bytes(b"half")
    r = curate(cfg, run)
    assert r.exit_code == 2 and "meta.csv" in r.stderr  # got past the lock (and its clean-up) to the source check
    assert [f.read_text() for f in user_files] == ["the user's own words"] * len(user_files)
    assert not ours.exists()


def test_lock_is_exclusive_within_one_process_and_released(tmp_path: Path):
    with RunLock(tmp_path / "r"):
        with pytest.raises(RunLockedError, match=f"pid {os.getpid()}"):
            RunLock(tmp_path / "r").acquire()
        info = json.loads((tmp_path / "r" / LOCK_NAME).read_text())
        assert info["pid"] == os.getpid() and info["host"] == socket.gethostname()
    with RunLock(tmp_path / "r"):
        pass


def test_nested_locked_calls_share_the_outer_lock(tmp_path: Path):
    from mrbench.runlock import with_run_lock

    calls = []

    @with_run_lock("run_dir")
    def inner(run_dir: Path) -> None:
        calls.append("inner")
        with pytest.raises(RunLockedError):  # still exclusive against anyone else
            RunLock(run_dir).acquire()

    @with_run_lock("run_dir")
    def outer(run_dir: Path) -> None:
        calls.append("outer")
        inner(run_dir)

    outer(tmp_path / "r")
    assert calls == ["outer", "inner"]
    with RunLock(tmp_path / "r"):  # released after the outer call
        pass


def test_pidfile_fallback_takes_over_only_dead_local_holders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Where flock is unsupported (some network file systems) an exclusive pid file stands in."""
    import fcntl

    def no_flock(fd: int, op: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    run = tmp_path / "r"
    run.mkdir()
    pidfile = run / (LOCK_NAME + ".pid")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pidfile.write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(), "started": 0}))
    lock = RunLock(run).acquire()  # the holder is gone: taken over
    assert json.loads(pidfile.read_text())["pid"] == os.getpid()
    with pytest.raises(RunLockedError, match=f"pid {os.getpid()}"):
        RunLock(run).acquire()
    lock.release()
    assert not pidfile.exists()
    pidfile.write_text(json.dumps({"pid": 1, "host": "another-host", "started": 0}))
    with pytest.raises(RunLockedError, match="another-host"):  # a holder elsewhere is never taken over
        RunLock(run).acquire()


def _hammer(path: str, tag: bytes, n: int) -> None:
    for _ in range(n):
        atomic_write_bytes(Path(path), tag * 1000)


def test_concurrent_atomic_writes_of_one_file_never_fail(tmp_path: Path):
    target = tmp_path / "state" / "x.json"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_hammer, args=(str(target), bytes([65 + i]), 300)) for i in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    data = target.read_bytes()
    assert len(data) == 1000 and len(set(data)) == 1  # one writer's whole content, never a mix
    assert not list(target.parent.glob("*.tmp"))


@pytest.mark.slow
def test_two_real_curate_processes_on_one_folder(tmp_path: Path):
    """Process A curates; B, started on the same --out while A is downloading, exits 2 naming A; A then finishes
    and its release verifies. A's image server holds every answer until B has been refused."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from smallweb import _photo, write_small_inputs
    from mrbench.curation.release_verify import verify_release
    from webserver import encode

    images = {f"/img/s{s}_{k}.jpg": encode(_photo(100 * s + k), "JPEG") for s in range(3) for k in range(3)}
    gate, asked = threading.Event(), threading.Event()

    class Held(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            return

        def do_GET(self) -> None:  # noqa: N802
            asked.set()
            gate.wait(120)
            body = images.get("/" + self.path.split("://", 1)[-1].split("/", 1)[-1].split("?")[0])
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Held)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        cfg = write_small_inputs(tmp_path / "in", base, dict.fromkeys(images), num_shards=1, crawl__timeout=120)
        cmd = [sys.executable, "-m", "mrbench.cli", "curate", "--config", str(cfg), "--out", str(tmp_path / "run")]
        a = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        assert asked.wait(300), "A never reached its downloads"
        t = time.perf_counter()
        b = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        b_wall = time.perf_counter() - t
        assert a.poll() is None
        assert b.returncode == 2 and f"in use by pid {a.pid}" in b.stderr, b.stderr[-2000:]
        assert "Traceback" not in b.stderr
        gate.set()
        assert a.wait(timeout=300) == 0, a.stderr.read()[-2000:]  # type: ignore[union-attr]
    finally:
        gate.set()
        server.shutdown()
    assert verify_release(tmp_path / "run" / "release") == []
    print(f"second curate refused in {b_wall:.2f}s")
