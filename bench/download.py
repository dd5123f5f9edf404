"""Benchmark: MRBench's download step and a whole model-free ``mrbench curate`` vs raw img2dataset, same URLs.

A loopback web server (its own process) serves ``--n`` small distinct JPEGs. Three runs over the same URL list, with
the same processes and threads, interleaved ``--reps`` times (medians reported):

* **raw**: ``img2dataset.download`` (parquet in and out, no resize, sha256), ``--procs`` processes x ``--threads``
  threads, ``--shards`` output shards;
* **step**: MRBench's download step alone (``DownloadTask`` over ``--shards`` URL shards by the local executor with
  ``--procs`` workers and ``--threads`` threads), on a run folder whose ingest and select are done;
* **curate**: the whole model-free ``mrbench curate`` CLI in a fresh folder (ingest, select, download, filters,
  group, split, release, verify).

Prints images/s of each and the ratios raw_time / step_time (goal >= 0.8) and raw_time / curate_time (goal >= 0.6),
and the machine's load average (timings on a shared machine are noisy; the ratios are same-run).

Run: ``python bench/download.py --n 3000`` (``--n 300`` for a quick look).
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml


def make_routes(n: int) -> dict[str, bytes]:
    """``n`` distinct small JPEGs (about 3-4 KB each)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    out = {}
    for i in range(n):
        small = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(small).resize((96, 80), Image.BICUBIC).save(buf, "JPEG", quality=85)
        out[f"/img/{i:06d}.jpg"] = buf.getvalue()
    return out


def serve(n: int, port_queue: "multiprocessing.Queue[int]") -> None:
    from mrbench.app.web import Route, SampleWebServer

    class Server(SampleWebServer):
        request_queue_size = 1024  # many threads connect at once

    server = Server({p: Route(b) for p, b in make_routes(n).items()})
    port_queue.put(server.server_address[1])
    server.serve_forever()


def run_raw(urls: Path, out: Path, procs: int, threads: int, per_shard: int) -> tuple[float, int]:
    code = f"""
import os; os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
import img2dataset
img2dataset.download(url_list={str(urls)!r}, input_format="parquet", url_col="url", caption_col="caption",
    output_folder={str(out)!r}, output_format="parquet", processes_count={procs}, thread_count={threads},
    number_sample_per_shard={per_shard}, resize_mode="no", skip_reencode=True, timeout=10, retries=0,
    disallowed_header_directives=[], extract_exif=False, compute_hash="sha256", enable_wandb=False,
    distributor="multiprocessing")
"""
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    elapsed = time.perf_counter() - t
    ok = sum(pq.read_table(f, columns=["status"]).column("status").to_pylist().count("success") for f in out.glob("*.parquet"))
    return elapsed, ok


def run_step(run_dir: Path, cfg_path: Path) -> tuple[float, int]:
    """Time the download step only (a fresh process, as the CLI would be), on a run folder with urls/ ready."""
    code = f"""
import time
from mrbench.config import load_config
from mrbench.curation.config import CurateConfig
from mrbench.curation.download import DOWNLOAD_STEP
from mrbench.executors import get_executor
cfg = load_config(CurateConfig, {str(cfg_path)!r})
t = time.perf_counter()
get_executor(cfg.executor).run(DOWNLOAD_STEP.task(cfg, {str(run_dir)!r}), cfg.num_shards)
print(time.perf_counter() - t)
"""
    shutil.rmtree(run_dir / "download", ignore_errors=True)
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, stdout=subprocess.DEVNULL)
    elapsed = time.perf_counter() - t  # process start and imports included, as for raw img2dataset
    ok = sum(pq.read_table(f, columns=["status"]).column("status").to_pylist().count("ok")
             for f in (run_dir / "download").glob("shard_*.parquet"))
    return elapsed, ok


def run_curate(out: Path, cfg_path: Path) -> tuple[float, int]:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mrbench.cli", "curate", "--config", str(cfg_path), "--out", str(out)],
                   check=True, stdout=subprocess.DEVNULL)
    elapsed = time.perf_counter() - t
    ok = sum(pq.read_table(f, columns=["status"]).column("status").to_pylist().count("ok")
             for f in (out / "download").glob("shard_*.parquet"))
    return elapsed, ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=3000, help="URLs (small JPEGs)")
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()

    ctx = multiprocessing.get_context("spawn")
    ports: multiprocessing.Queue[int] = ctx.Queue()
    server = ctx.Process(target=serve, args=(args.n, ports), daemon=True)
    server.start()
    base = f"http://127.0.0.1:{ports.get(timeout=120)}"
    tmp = Path(tempfile.mkdtemp(prefix="mrbench-bench-dl-"))
    try:
        names = [f"tag{k:02d}" for k in range(50)]
        urls = [f"{base}/img/{i:06d}.jpg" for i in range(args.n)]
        caps = [f"a photo of {names[i % len(names)]}" for i in range(args.n)]
        url_list = tmp / "urls.parquet"
        pq.write_table(pa.table({"url": urls, "caption": caps}), url_list)
        (tmp / "tags.yaml").write_text(yaml.safe_dump([{"name": n, "category": "subject", "aliases": []} for n in names]))
        cfg = {
            "seed": 0, "num_shards": args.shards,
            "sources": [{"kind": "metadata", "paths": [str(url_list)]}],
            "crawl": {"tag_list": str(tmp / "tags.yaml"), "allow_private_network": True, "thread_count": args.threads,
                      "timeout": 10.0},
            "group": {"min_group_size": 2, "consistency_min": 0.0},
            "split": {"held_out_groups": 5, "held_in_groups": 5},
            "executor": {"name": "local", "workers": args.procs},
        }
        cfg_path = tmp / "curate.yaml"
        cfg_path.write_text(yaml.safe_dump(cfg))
        # The step's run folder: ingest and select done once (not timed).
        prepared = tmp / "prepared"
        subprocess.run([sys.executable, "-m", "mrbench.cli", "curate", "--config", str(cfg_path), "--out", str(prepared)],
                       check=True, stdout=subprocess.DEVNULL)
        per_shard = -(-args.n // args.shards)
        times: dict[str, list[float]] = {"raw": [], "step": [], "curate": []}
        load = [os.getloadavg()[0]]
        for rep in range(args.reps):
            out = tmp / f"raw{rep}"
            t, ok_raw = run_raw(url_list, out, args.procs, args.threads, per_shard)
            times["raw"].append(t)
            shutil.rmtree(out, ignore_errors=True)
            t, ok_step = run_step(prepared, cfg_path)
            times["step"].append(t)
            out = tmp / f"curate{rep}"
            t, ok_cur = run_curate(out, cfg_path)
            times["curate"].append(t)
            shutil.rmtree(out, ignore_errors=True)
            load.append(os.getloadavg()[0])
            print(f"rep {rep}: raw {times['raw'][-1]:.2f} s ({ok_raw} ok), step {times['step'][-1]:.2f} s ({ok_step} ok), "
                  f"curate {times['curate'][-1]:.2f} s ({ok_cur} ok)", flush=True)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"\n{args.n} URLs, {args.procs} processes x {args.threads} threads, {args.shards} shards, "
              f"medians of {args.reps} interleaved runs; load average during the runs: "
              f"{min(load):.1f}-{max(load):.1f} on {os.cpu_count()} CPUs")
        for k in ("raw", "step", "curate"):
            print(f"  {k:7s} {med[k]:7.2f} s  {args.n / med[k]:7.1f} images/s")
        print(f"  download step / raw img2dataset speed: {med['raw'] / med['step']:.2f}  (goal >= 0.8)")
        print(f"  model-free curate / raw img2dataset speed: {med['raw'] / med['curate']:.2f}  (goal >= 0.6)")
    finally:
        server.terminate()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
