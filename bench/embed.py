"""Benchmark: the embed stage (``curation.embed.EmbedTask`` on one download shard) vs a raw forward of the same model.

A download shard in the real format holds ``--n`` seeded synthetic JPEG photos (``--size`` pixels on the longer
side, varied aspect). Measured in one process, interleaved, medians of ``--reps``:

* **raw forward**: the encoder's ``forward`` (and L2 normalisation) on the view tensors of every image, prepared
  beforehand (same model, same views: ``tta`` as the curation run uses it, same batch size): the model's cost;
* **raw pipeline**: what a hand-written script does: decode, preprocess, forward (for reference);
* **embed stage**: ``EMBED_STEP.task(config, run)(0)``: read the shard, decode, embed, write the feature shard.

Prints the times and the ratio raw forward / embed stage (goal >= 0.9: the stage within 10 % of the model).

Run: ``python bench/embed.py`` (mobilenet_v2 with its offline weights; ``--encoder`` picks another registered image
encoder, e.g. a tiny random one when the weights are absent; ``--tta none`` for a single view).
"""

from __future__ import annotations

import argparse
import io
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_shard(run: Path, n: int, size: int, seed: int) -> list[bytes]:
    """One download shard of ``n`` JPEG photos (smooth seeded colour fields with edges and noise)."""
    from PIL import Image

    from mrbench.records import ImageRecord
    from mrbench.shards import ShardSet, records_to_table, write_parquet_atomic
    from mrbench.stats import Stats

    rng = np.random.default_rng(seed)
    recs, blobs = [], []
    for i in range(n):
        w = size
        h = int(size * rng.uniform(0.6, 1.0))
        if i % 2:
            w, h = h, w
        small = rng.integers(0, 255, (max(2, h // 32), max(2, w // 32), 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((w, h), Image.BICUBIC)
        arr = np.asarray(img).astype(np.int16) + rng.integers(-12, 12, (h, w, 3))
        buf = io.BytesIO()
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
        data = buf.getvalue()
        blobs.append(data)
        recs.append(ImageRecord(id=f"{i:016x}", url=f"https://example.com/{i}.jpg", caption="a photo", tags=["thing"],
                                category="subject", image=data, width=w, height=h, metadata={"format": "jpg"}))
    shards = ShardSet(run / "download", "shard")
    write_parquet_atomic(records_to_table(recs), shards.output(0))
    shards.complete(0, Stats())
    return blobs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=128, help="images in the shard")
    ap.add_argument("--size", type=int, default=512, help="longer side of the photos (img2dataset's default 512)")
    ap.add_argument("--encoder", default="mobilenet_v2")
    ap.add_argument("--tta", default="", help="views (mobilenet_v2: none, flip, multicrop; default: the curation default)")
    ap.add_argument("--batch-size", type=int, default=32, help="embed.batch_size")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import torch

    from mrbench.curation.config import CurateConfig, EmbedConfig, SourceConfig
    from mrbench.curation.embed import EMBED_STEP, build_encoder, decode

    options = {"tta": args.tta} if args.tta else {}
    cfg = CurateConfig(num_shards=1, sources=[SourceConfig(paths=["x.parquet"])],
                       embed=EmbedConfig(encoder=args.encoder, encoder_options=options, batch_size=args.batch_size))
    work = Path(tempfile.mkdtemp(prefix="mrbench_embed_"))
    try:
        blobs = make_shard(work, args.n, args.size, args.seed)
        encoder = build_encoder(args.encoder, options)
        views = options
        task = EMBED_STEP.task(cfg, str(work))
        task._models["encoder"] = encoder  # the same loaded model for every measurement

        images = [decode(b) for b in blobs]
        bs = args.batch_size
        pixels = [encoder.preprocess_batch(images[s : s + bs]) for s in range(0, len(images), bs)]

        def raw_forward() -> np.ndarray:
            out = []
            with torch.inference_mode():
                for px in pixels:
                    for c in range(0, px.shape[0], encoder.options.batch_size):
                        out.append(encoder.forward(px[c : c + encoder.options.batch_size]).float().numpy())
            x = np.concatenate(out)
            return x / np.linalg.norm(x, axis=1, keepdims=True)

        def raw_pipeline() -> np.ndarray:
            out = []
            for s in range(0, len(blobs), bs):
                out.append(encoder.embed_images([decode(b) for b in blobs[s : s + bs]]))
            return np.concatenate(out)

        def stage() -> None:
            shutil.rmtree(work / "embed", ignore_errors=True)
            task(0)

        times: dict[str, list[float]] = {"raw forward": [], "raw pipeline": [], "embed stage": []}
        fns = {"raw forward": raw_forward, "raw pipeline": raw_pipeline, "embed stage": stage}
        stage()  # warm-up (first-call kernel selection) and the check below
        ref = raw_forward()
        import pyarrow.parquet as pq

        got = np.stack(pq.read_table(work / "embed" / "shard_00000.parquet", columns=["embedding"]).column(0).to_pylist())
        agree = float(np.abs(got - ref).max())
        for _ in range(args.reps):
            for name, fn in fns.items():
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"{args.encoder} (views: {views or 'default'}), {args.n} JPEGs of {args.size} px, batch {bs}, "
              f"torch threads {torch.get_num_threads()}; medians of {args.reps}, interleaved")
        for k, v in med.items():
            print(f"  {k:13s} {v:7.2f} s  ({v / args.n * 1000:6.1f} ms/image)  runs: {', '.join(f'{t:.2f}' for t in times[k])}")
        ratio = med["raw forward"] / med["embed stage"]
        print(f"  stage embeddings vs raw forward: max abs difference {agree:.2e}")
        print(f"ratio raw forward / embed stage = {ratio:.3f}  (raw pipeline / embed stage = "
              f"{med['raw pipeline'] / med['embed stage']:.3f}); goal >= 0.9: {'PASS' if ratio >= 0.9 else 'FAIL'}")
        return 0 if ratio >= 0.9 else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
