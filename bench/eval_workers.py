"""Wall time of ``mrbench eval`` with 1 worker and with ``--workers N``, and whether their files are byte-identical.

Run by hand (CPU is fine; tiny random-weights models):

    .venv/bin/python bench/eval_workers.py                          # easyref, 6 samples x 2 images, 8 steps, N=2
    .venv/bin/python bench/eval_workers.py --limit 12 --steps 20 --workers 2

Both arms start from an empty run folder and cache, in one process, one after the other. Printed: wall seconds of
each, the 1-worker / N-worker ratio (the speed-up), and the sha256 of samples.jsonl and summary.json of both runs
plus whether every generated image is identical. Each extra worker process pays its own start-up (imports, model
and encoder build), so tiny runs gain little; the speed-up grows with the generation time per sample and the number
of free cores or GPUs.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval import make_dreambench  # noqa: E402  (bench/eval.py: the generated DreamBench-layout folder)

from mrbench.evaluation.runner import run_eval  # noqa: E402


def digests(run_dir: Path) -> dict[str, str]:
    files = [run_dir / "samples.jsonl", run_dir / "summary.json", *sorted((run_dir / "images").glob("*.png"))]
    return {str(f.relative_to(run_dir)): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="easyref")
    ap.add_argument("--limit", type=int, default=6)
    ap.add_argument("--images-per-prompt", type=int, default=2)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bench = f"dreambench:{make_dreambench(Path(tmp) / 'dreambench')}"
        args = dict(model=a.model, benchmark=bench, profile="tiny", limit=a.limit, images_per_prompt=a.images_per_prompt,
                    model_args={"num_inference_steps": a.steps}, metrics=["clip_t", "image_sim@dino-tiny"])
        walls, runs = {}, {}
        for n in (1, a.workers):
            t0 = time.perf_counter()
            runs[n] = run_eval(out=Path(tmp) / f"w{n}", workers=n, **args)
            walls[n] = time.perf_counter() - t0
        print(f"{a.model} tiny, {a.limit} samples x {a.images_per_prompt} images, {a.steps} steps, "
              f"{os.cpu_count()} cores")
        for n in walls:
            print(f"workers={n}: wall {walls[n]:.1f} s, generated {runs[n].timing['generated_images']}")
        print(f"speed-up 1 -> {a.workers} workers: {walls[1] / walls[a.workers]:.2f}x")
        d1, dn = digests(runs[1].run_dir), digests(runs[a.workers].run_dir)
        for name in ("samples.jsonl", "summary.json"):
            print(f"{name}: {d1[name]} vs {dn[name]} {'identical' if d1[name] == dn[name] else 'DIFFERENT'}")
        images = [k for k in d1 if k.startswith("images/")]
        same = sum(d1[k] == dn.get(k) for k in images)
        print(f"images: {same}/{len(images)} identical, same set: {set(d1) == set(dn)}")


if __name__ == "__main__":
    main()
