"""Benchmark: peak RSS of a download worker against the size of its URL shard.

A loopback web server (its own process: threaded, bytes in memory) answers ``/img/<i>.jpg`` with a distinct JPEG
per URL: one of 256 noise images (``--kb`` KB each, so images do not compress away) with the URL's number in a
comment segment. For each size in ``--sizes`` a fresh worker process (the process that fetches, validates and writes,
as the local executor's workers do) runs MRBench's download step on one URL shard of that many URLs; its peak RSS
(``ru_maxrss``) is printed with its URLs/s, and the ratio of the largest peak to the smallest (goal: <= 1.2, flat).

``--python`` runs the worker with another install (e.g. an older checkout's ``.venv/bin/python``) to compare; the
URL shard and config are the same.

Run: ``python bench/download_memory.py`` (2,000, 20,000 and 100,000 URLs; a few minutes on 2 cores), or
``--sizes 2000,20000`` for a quick look.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

POOL = 256  # distinct base images; each URL's bytes differ by its comment segment

# The worker: MRBench's download step over URL shard 0 of the run folder, then its peak RSS and row counts.
WORKER = """
import json, resource, sys, time
import pyarrow.parquet as pq
from mrbench.curation.config import CrawlConfig, CurateConfig
from mrbench.curation.download import DOWNLOAD_STEP
run, threads = sys.argv[1], int(sys.argv[2])
cfg = CurateConfig(num_shards=1, crawl=CrawlConfig(allow_private_network=True, thread_count=threads, timeout=30))
t = time.perf_counter()
DOWNLOAD_STEP.task(cfg, run)(0)
elapsed = time.perf_counter() - t
status = pq.read_table(run + "/download/shard_00000.parquet", columns=["status"]).column("status").to_pylist()
print(json.dumps({"peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "seconds": elapsed,
                  "rows": len(status), "ok": status.count("ok")}))
"""


def base_images(kb: int) -> list[bytes]:
    """POOL noise JPEGs of about ``kb`` KB each."""
    from PIL import Image

    rng = np.random.default_rng(0)
    side = max(16, int((kb * 1024) ** 0.5))  # noise JPEG at quality 90: about 1 byte per pixel
    out = []
    for _ in range(POOL):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def serve(kb: int, ports: "multiprocessing.Queue[int]") -> None:
    images = base_images(kb)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            try:
                i = int(self.path.rsplit("/", 1)[1].split(".")[0])
            except ValueError:
                self.send_error(404)
                return
            note = b"url %d" % i
            body = images[i % POOL][:2] + b"\xff\xfe" + (len(note) + 2).to_bytes(2, "big") + note + images[i % POOL][2:]
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 1024

    server = Server(("127.0.0.1", 0), Handler)
    ports.put(server.server_address[1])
    server.serve_forever()


def write_url_shard(run: Path, base: str, n: int) -> None:
    """URL shard 0 of ``run``: ``n`` URLs in id order, as the select step writes it."""
    from mrbench.curation.crawl import record_id
    from mrbench.layout import RunLayout
    from mrbench.records import ImageRecord
    from mrbench.shards import records_to_table, write_tables

    urls = sorted((record_id(u), u) for u in (f"{base}/img/{i}.jpg" for i in range(n)))
    step = 8192
    write_tables((records_to_table([ImageRecord(id=i, url=u) for i, u in urls[k:k + step]])
                  for k in range(0, n, step)), RunLayout(run).urls.output(0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="2000,20000,100000", help="URLs per shard, comma-separated")
    ap.add_argument("--kb", type=int, default=20, help="size of each image")
    ap.add_argument("--threads", type=int, default=16, help="download threads of the worker")
    ap.add_argument("--python", default=sys.executable, help="the worker's interpreter (another install to compare)")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    ctx = multiprocessing.get_context("spawn")
    ports: multiprocessing.Queue[int] = ctx.Queue()
    server = ctx.Process(target=serve, args=(args.kb, ports), daemon=True)
    server.start()
    base = f"http://127.0.0.1:{ports.get(timeout=120)}"
    sample = len(base_images(args.kb)[0])
    tmp = Path(tempfile.mkdtemp(prefix="mrbench-bench-mem-"))
    print(f"images ~{sample / 1024:.0f} KB, {args.threads} threads, worker {args.python}, load {os.getloadavg()[0]:.1f}")
    peaks = {}
    try:
        for n in sizes:
            run = tmp / f"run_{n}"
            write_url_shard(run, base, n)
            out = subprocess.run([args.python, "-c", WORKER, str(run), str(args.threads)], check=True,
                                 capture_output=True, text=True)
            got = json.loads(out.stdout.strip().splitlines()[-1])
            if got["ok"] != n:
                raise SystemExit(f"error: {n - got['ok']} of {n} downloads failed; the peak would not be comparable")
            peaks[n] = got["peak_rss_kb"] / 1024
            size = (run / "download" / "shard_00000.parquet").stat().st_size / 2**20
            print(f"{n:>7} URLs/shard: peak RSS {peaks[n]:7.0f} MB  ({n / got['seconds']:.0f} URLs/s, "
                  f"shard file {size:.0f} MB)", flush=True)
            shutil.rmtree(run)
    finally:
        server.terminate()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"max/min peak RSS: {max(peaks.values()) / min(peaks.values()):.2f}x (goal <= 1.2)")


if __name__ == "__main__":
    main()
