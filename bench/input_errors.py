"""Bad inputs through the real CLI, one subprocess each: prints a markdown table of the input, the exit code, the
message a user sees, the wall time (process start included) and whether a traceback appeared (issue 11, items 3,
6, 7, 8 and 10). Nothing is downloaded: every input fails (or passes) before that.

    PYTHONPATH=$PWD python bench/input_errors.py
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "tests" / "curation")]
URL = "http://127.0.0.1:9/img.jpg"  # the discard port: never fetched
HOLD = ("import sys, time\nfrom mrbench.runlock import RunLock\nRunLock(sys.argv[1]).acquire()\n"
        "print('locked', flush=True)\ntime.sleep(300)")


class Table:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.rows: list[tuple[str, int, str, float, bool]] = []

    def run(self, label: str, args: list[str]) -> None:
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "mrbench.cli", *args], capture_output=True, text=True, timeout=600)
        wall = time.perf_counter() - t
        err = [ln for ln in r.stderr.strip().splitlines() if ln.strip() and "━" not in ln]
        out = [ln for ln in r.stdout.strip().splitlines() if ln.strip() and "━" not in ln]
        fails = [ln for ln in err if ln.startswith("FAIL ")]
        errors = [ln for ln in err if ln.startswith("error:")]
        if fails:
            msg = " / ".join(fails[:2] + err[-1:])
        elif errors:
            first = err.index(errors[0])
            msg = " / ".join([errors[0]] + [ln.strip() for ln in err[first + 1:first + 2]])
        else:
            msg = (out or err or [""])[-1]
        msg = msg.replace(str(self.root) + "/", "").replace("|", "\\|")[:230]
        self.rows.append((label, r.returncode, msg, wall, "Traceback" in r.stderr))

    def print(self) -> None:
        print("| input | exit | message | time (s) | traceback |")
        print("|---|---|---|---|---|")
        for label, rc, msg, wall, tb in self.rows:
            print(f"| {label} | {rc} | {msg} | {wall:.1f} | {'YES' if tb else 'no'} |")


def config(root: Path, name: str, source: str = "meta.csv") -> Path:
    p = root / name
    p.write_text(f"sources: [{{kind: metadata, paths: [{source}]}}]\ncrawl: {{tag_list: tags.yaml}}\nnum_shards: 1\n")
    return p


def curate_inputs(root: Path, table: Table) -> None:
    (root / "tags.yaml").write_text("- {name: cafe, category: subject}\n")
    (root / "meta.csv").write_text(f"url,caption\n{URL},cafe\n")
    (root / "latin1.csv").write_bytes(f"url,caption\n{URL},caf\xe9\n".encode("latin-1"))
    (root / "nourl.csv").write_text(f"link,caption\n{URL},cafe\n")
    (root / "corrupt.parquet").write_bytes(b"PAR1" + b"\0" * 64 + b"PAR1")
    pq.write_table(pa.table({"url": [URL], "caption": pa.array([b"caf\xe9"], pa.binary())}), root / "bincap.parquet")
    (root / "empty_tags.yaml").write_text("[]\n")
    (root / "bad_tags.yaml").write_text("- {name: cafe, category: subject\n")
    (root / "bad.yaml").write_text("sources: [{kind: metadata, paths: [meta.csv]}]\ncrawl:\n  tag_list: tags.yaml\n"
                                   "   timeout: 3\n")
    base = config(root, "ok.yaml")
    out = ["-o", str(root / "run")]
    for ov in ("crawl.timeout=.nan", "crawl.timeout=.inf", "crawl.thread_count=0", "crawl.retries=-1",
               "crawl.max_image_pixels=-1", "num_shards=2.7", "release.compression=bogus", "crawl.encode_format=bmp",
               "crawl.resize_mode=stretch"):
        table.run(f"`--set {ov}`", ["curate", "-c", str(base), *out, "--set", ov])
    table.run("config YAML syntax error", ["curate", "-c", str(root / "bad.yaml"), *out])
    table.run("tag list YAML syntax error",
              ["curate", "-c", str(base), *out, "--set", f"crawl.tag_list={root / 'bad_tags.yaml'}"])
    table.run("empty tag list", ["curate", "-c", str(base), *out, "--set", f"crawl.tag_list={root / 'empty_tags.yaml'}"])
    table.run("latin-1 CSV", ["curate", "-c", str(config(root, "c2.yaml", "latin1.csv")), *out])
    table.run("CSV without url column", ["curate", "-c", str(config(root, "c3.yaml", "nourl.csv")), *out])
    table.run("corrupt parquet", ["curate", "-c", str(config(root, "c4.yaml", "corrupt.parquet")), *out])
    table.run("binary caption, not UTF-8", ["curate", "-c", str(config(root, "c5.yaml", "bincap.parquet")), *out])
    locked = ["-o", str(root / "locked")]
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(root / "locked")], stdout=subprocess.PIPE, text=True)
    holder.stdout.readline()  # type: ignore[union-attr]
    table.run("`curate` on a folder in use", ["curate", "-c", str(base), *locked])
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    table.run("same folder after SIGKILL of the holder",
              ["curate", "-c", str(config(root, "c6.yaml", "latin1.csv")), *locked])


def release_inputs(root: Path, table: Table) -> None:
    from test_release_verify import make_release, rewrite_manifest_entry

    rel = make_release(root / "rel")
    manifest_path = rel / "manifest.json"
    verify = ["release", "verify", str(rel)]
    table.run("`release verify` intact", verify)
    m = json.loads(manifest_path.read_text())
    m["rows"] += 1
    manifest_path.write_text(json.dumps(m))
    table.run("`release verify`: total rows changed", verify)
    m["rows"] -= 1
    del m["files"][0]["sha256"]
    manifest_path.write_text(json.dumps(m))
    table.run("`release verify`: entry without sha256", verify)
    manifest_path.write_text("{oops")
    table.run("`release verify`: manifest not JSON", verify)
    shutil.rmtree(rel)
    rel = make_release(root / "rel")
    data = sorted((rel / "data").glob("*.parquet"))[0]
    tmp = rel / "data" / (data.name + ".99-ab.tmp")
    tmp.write_bytes(b"x")
    table.run("`release verify`: leftover .tmp", verify)
    tmp.unlink()
    (rel / "data" / "link.parquet").symlink_to(data)
    table.run("`release verify`: symlinked shard", verify)
    (rel / "data" / "link.parquet").unlink()
    table.run("`extract-images` default out", ["release", "extract-images", str(rel)])
    table.run("`release verify` after extract", verify)
    table.run("`extract-images --out RELEASE/x`", ["release", "extract-images", str(rel), "--out", str(rel / "x")])
    t = pq.read_table(data)
    ids = t.column("id").to_pylist()
    ids[0] = "../../x"
    pq.write_table(t.set_column(0, "id", pa.array(ids, pa.string())), data)
    rewrite_manifest_entry(rel, data.relative_to(rel).as_posix())
    table.run("`extract-images`: id `../../x` (manifest forged to match)",
              ["release", "extract-images", str(rel), "--out", str(root / "ex")])


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="mrbench-input-errors-"))
    try:
        table = Table(root)
        curate_inputs(root, table)
        release_inputs(root, table)
        table.print()
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
