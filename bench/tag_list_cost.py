"""Benchmark: what a large tag list costs a whole curation run (``mrbench curate``, end to end).

The same ``--captions`` captions (LAION-style metadata, each naming one of 14 tags, or none) are curated twice:
with the 14-tag list, and with those 14 plus ``--extra`` synthetic tags (names and aliases as in
``bench/tag_match.py``; none of them occurs in a caption, so both runs select, download and release the same rows).
Images are served from 127.0.0.1; ``crawl.max_candidates_per_tag`` keeps the downloads small, so the run is
dominated by what does not depend on the download: config validation, ingest workers, the matcher.

Each configuration runs ``--reps`` times, interleaved, each in a fresh ``mrbench curate`` process into a fresh run
folder; the median wall times and their ratio are printed (goal: large / small <= 1.1).

Run: ``python bench/tag_list_cost.py`` (``--captions 10000 --extra 30000`` by default).
"""

from __future__ import annotations

import argparse
import io
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tag_match import make_tags  # noqa: E402  (the synthetic names of the tag-matching benchmark)

from mrbench.curation.tags import normalize  # noqa: E402
from mrbench.app.web import Route, SampleWebServer  # noqa: E402

SMALL = ["red bicycle", "wall clock", "coffee cup", "rocket", "teapot", "sunflower", "lighthouse", "violin",
         "paper lantern", "sailboat", "pocket watch", "cactus", "typewriter", "hot air balloon"]
FILLER = "a photo of the with in on old new small large beautiful view near at night day street garden".split()


def jpeg(k: int) -> bytes:
    rng = random.Random(k)
    im = Image.new("RGB", (40, 32), tuple(rng.randrange(256) for _ in range(3)))
    im.putpixel((k % 40, (k // 40) % 32), (255, 255, 255))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=80)
    return buf.getvalue()


def write_inputs(folder: Path, base_url: str, captions: int, extra: int, seed: int) -> tuple[dict[str, Route], Path, Path]:
    rng = random.Random(seed)
    routes, urls, texts = {}, [], []
    for k in range(captions):
        path = f"/img/{k:06d}.jpg"
        routes[path] = Route(jpeg(k))
        words = rng.sample(FILLER, 6)
        if rng.random() < 0.8:
            words.insert(rng.randrange(len(words)), SMALL[k % len(SMALL)])
        urls.append(base_url + path)
        texts.append(" ".join(words))
    pq.write_table(pa.table({"url": urls, "caption": texts}), folder / "meta.parquet")
    small = [{"name": n, "category": "subject", "aliases": []} for n in SMALL]
    taken = {normalize(n) for n in SMALL}
    more = [{"name": t.name, "category": t.category, "aliases": t.aliases} for t in make_tags(extra, seed)
            if not ({normalize(a) for a in [t.name, *t.aliases]} & taken)]
    lists = []
    for name, tags in (("small", small), ("large", small + more)):
        path = folder / f"tags_{name}.yaml"
        path.write_text(yaml.safe_dump(tags, allow_unicode=True, sort_keys=False))
        lists.append(path)
    print(f"tag lists: {len(small)} and {len(small) + len(more)} tags; {captions:,} captions")
    return routes, lists[0], lists[1]


def config(folder: Path, tags: Path, workers: int) -> Path:
    cfg = {
        "seed": 0, "num_shards": 4,
        "sources": [{"kind": "metadata", "paths": [str(folder / "meta.parquet")]}],
        "crawl": {"tag_list": str(tags), "allow_private_network": True, "max_candidates_per_tag": 20, "timeout": 5},
        "group": {"min_group_size": 2},
        "split": {"held_out_groups": 2, "held_in_groups": 2},
        "executor": {"name": "local", "workers": workers},
    }
    path = folder / f"curate_{tags.stem}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_once(cfg: Path, out: Path) -> float:
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mrbench.cli", "-q", "curate", "-c", str(cfg), "-o", str(out)],
                          capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode:
        raise SystemExit(f"mrbench curate failed:\n{proc.stderr[-2000:]}")
    return wall


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--captions", type=int, default=10_000)
    ap.add_argument("--extra", type=int, default=30_000, help="synthetic tags added to the 14 of the small list")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, SampleWebServer() as server:
        folder = Path(tmp)
        routes, small, large = write_inputs(folder, server.base_url, args.captions, args.extra, args.seed)
        server.routes.update(routes)
        cfgs = {"small": config(folder, small, args.workers), "large": config(folder, large, args.workers)}
        walls: dict[str, list[float]] = {"small": [], "large": []}
        for rep in range(args.reps):
            for name in (("small", "large") if rep % 2 == 0 else ("large", "small")):
                walls[name].append(run_once(cfgs[name], folder / f"run_{name}_{rep}"))
        releases = {n: (folder / f"run_{n}_0" / "release" / "manifest.json").exists() for n in walls}
        med = {n: statistics.median(w) for n, w in walls.items()}
        for n, w in walls.items():
            print(f"{n:>5}: median {med[n]:.2f} s over {len(w)} runs ({', '.join(f'{x:.2f}' for x in w)}); "
                  f"release written: {releases[n]}")
        print(f"wall-time ratio large/small: {med['large'] / med['small']:.3f} (goal <= 1.1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
