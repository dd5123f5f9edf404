"""Time per generated image of every tiny model, and the evaluation harness's overhead over raw generation.

Run by hand (CPU is fine; everything is tiny and random-weights):

    .venv/bin/python bench/eval.py                      # 8 requests per model, 30 sampling steps (the default)
    .venv/bin/python bench/eval.py --requests 16 --steps 10

For each model, in one process:

- raw: the generator's ``generate`` called directly on the requests, one at a time (what a hand-written loop would
  do), after one warm-up request;
- harness: ``run_eval`` on the same samples and seeds (fresh run folder and cache), with the tiny metric set
  (clip_t, clip_i, dino_i, face on tiny encoders), which adds caching, PNG encoding, JSONL, scoring and summary.

Raw and harness passes alternate ``--repeats`` times and medians are printed, so that load from other processes on a
shared machine hits both arms alike.

Printed: seconds per image for both, the harness/raw ratio, and where the harness's time goes (generation, metrics,
the rest: cache, PNG, JSONL, summary). The harness's one-off setup (benchmark, encoders, model build) is printed
apart, as the raw loop's model build is not timed. For ``lora`` both include training one adapter per reference set (``--train-steps``).
``flux2``, ``qwen-image-edit`` and ``omnigen`` run their tiny diffusers pipelines (32 x 32 outputs, one request per
pipeline call, references capped and resized as their tiny profiles do). Benchmark data: a
generated DreamBench-layout folder (so the numbers do not depend on the shared data being present).
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

MODELS = ["easyref", "ip-adapter", "lora", "flux2", "qwen-image-edit", "omnigen", "reference", "chance"]


def make_dreambench(root: Path, subjects: int = 4, images: int = 4, size: int = 256) -> Path:
    """A DreamBench-layout folder: ``subjects`` x ``images`` photo-like images, 3 object prompts."""
    rng = np.random.default_rng(0)
    lines = ["Classes", "", "subject_name,class"]
    for s in range(subjects):
        (root / f"subj{s}").mkdir(parents=True)
        lines.append(f"subj{s},toy")
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        for k in range(images):
            bg = rng.integers(120, 256, (size // 16, size // 16, 3), dtype=np.uint8)
            im = Image.fromarray(bg).resize((size, size), Image.BICUBIC)
            o = int(rng.integers(10, 60))
            ImageDraw.Draw(im).ellipse([o, o, size - o, size - o], fill=colour)
            im.save(root / f"subj{s}" / f"{k:02d}.jpg", quality=92)
    lines += ["", "Object Prompts", "", "prompt_list = ["]
    lines += [f"'a {{0}} {{1}} {t}'.format(unique_token, class_token)," for t in ("in the snow", "on a table", "at night")]
    lines += ["]", "", "Live Subject Prompts", "", "prompt_list = [", "'a {0} {1}'.format(unique_token, class_token),", "]"]
    (root / "prompts_and_classes.txt").write_text("\n".join(lines) + "\n")
    return root


def bench_model(model: str, bench: str, n: int, steps: int, train_steps: int, out: Path, repeats: int = 3,
                metrics: str | None = None) -> dict[str, float]:
    """Median over ``repeats`` of (raw loop, harness run), interleaved so that load from other processes hits both."""
    import statistics

    from mrbench.evaluation.benchmarks import build_benchmark
    from mrbench.evaluation.generator import GenerationRequest
    from mrbench.evaluation.metrics import _CONTENT_CACHE
    from mrbench.evaluation.runner import build_generator, run_eval

    diffusion = model not in ("reference", "chance")
    args: dict[str, object] = {"num_inference_steps": steps} if diffusion else {}
    if model == "lora":
        args.update(train_steps=train_steps, rank=8)
    b = build_benchmark(bench, limit=n, images_per_prompt=1)
    samples = b.samples()
    gen = build_generator(model, "tiny", dict(args))
    gen.prepare(b.all_samples())
    # Warm-up on a sample outside the timed set (for lora: another reference set, so no timed adapter is pre-trained).
    gen.generate([GenerationRequest(b.all_samples()[-1], 99)])
    # Warm the harness once (encoders load, kernels warm up) with a separate run, as the raw loop was warmed.
    run_eval(model, bench, out / "warm", profile="tiny", model_args=dict(args), limit=1, images_per_prompt=1, seed=99,
             metrics=metrics)
    raws, loops, gens, mets, setups = [], [], [], [], []
    for rep in range(repeats):
        if model == "lora":  # every repetition trains its adapters afresh, in both arms
            gen.config.adapter_dir = str(out / f"raw-adapters-{rep}")
            gen._loaded = None  # type: ignore[attr-defined]
            args["adapter_dir"] = str(out / f"harness-adapters-{rep}")
        t0 = time.perf_counter()
        for s in samples:
            for r in gen.generate([GenerationRequest(s, 0)]):
                r.image.convert("RGB").tobytes()  # the image exists (PIL work the harness also does)
        raws.append((time.perf_counter() - t0) / n)
        _CONTENT_CACHE.clear()  # score from scratch: earlier repetitions produced the same images
        res = run_eval(model, bench, out / f"runs-{rep}", profile="tiny", model_args=dict(args), limit=n,
                       images_per_prompt=1, metrics=metrics)
        t = res.timing
        loops.append((t["wall_s"] - t["setup_s"]) / n)  # the harness once the model is built (setup apart)
        gens.append(t["generate_s"] / n)
        mets.append(t["metrics_s"] / n)
        setups.append(t["setup_s"])
    med = statistics.median
    ratio = med([lp / rw for lp, rw in zip(loops, raws)])
    return {"raw_per_image": med(raws), "harness_per_image": med(loops), "ratio": ratio, "setup_s": med(setups),
            "generate_per_image": med(gens), "metrics_per_image": med(mets),
            "other_per_image": med([lp - g - m for lp, g, m in zip(loops, gens, mets)])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=8, help="images per model")
    ap.add_argument("--steps", type=int, default=30, help="sampling steps (paper: 30)")
    ap.add_argument("--train-steps", type=int, default=20, help="LoRA training steps per adapter")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--repeats", type=int, default=3, help="interleaved (raw, harness) repetitions; medians are printed")
    ap.add_argument("--metrics", default=None, help="metric specs (default: clip_t,clip_i,dino_i,face on tiny encoders)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    a = ap.parse_args()
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)

    print(f"# bench/eval.py on {platform.machine()} {platform.processor() or ''}, torch threads "
          f"{torch.get_num_threads()}, CUDA {torch.cuda.is_available()}; tiny random models, {a.requests} images per "
          f"model, {a.steps} steps, LoRA {a.train_steps} training steps; medians of {a.repeats} interleaved repetitions")
    with tempfile.TemporaryDirectory() as tmp:
        bench = f"dreambench:{make_dreambench(Path(tmp) / 'dreambench')}"
        print(f"{'model':<15} {'raw s/img':>10} {'harness s/img':>14} {'harness/raw':>12} {'gen s/img':>10} "
              f"{'metrics s/img':>14} {'other s/img':>12} {'setup s':>8}")
        for model in a.models.split(","):
            r = bench_model(model, bench, a.requests, a.steps, a.train_steps, Path(tmp) / model, a.repeats, a.metrics)
            print(f"{model:<15} {r['raw_per_image']:>10.3f} {r['harness_per_image']:>14.3f} {r['ratio']:>12.2f} "
                  f"{r['generate_per_image']:>10.3f} {r['metrics_per_image']:>14.3f} {r['other_per_image']:>12.3f} "
                  f"{r['setup_s']:>8.2f}")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
