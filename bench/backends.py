"""Throughput of every model backend on this machine (images/s at batch 16), printed as a table. Run by hand:

    .venv/bin/python bench/backends.py                # every registered backend that can be built here
    .venv/bin/python bench/backends.py --full-arch    # + the pretrained architectures, randomly initialised

Timing covers the whole call (PIL preprocessing + forward + post-processing) over ``--images`` DreamBench photos
(512 px JPEGs; random images if the data is absent), after one warm-up batch. Backends whose weights are not available
offline are listed as such. ``--full-arch`` times the same architectures as ``clip`` (ViT-L-14), ``dino``
(DINOv2-Small), ``dino-v1`` (ViT-S/16) and ``rtdetr`` (R50vd) with random weights, through the same code paths:
their speed equals the pretrained models' speed, their outputs are meaningless.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "dreambench"

RTDETR_R50VD: dict[str, Any] = {
    "backbone_config": {"embedding_size": 64, "hidden_sizes": [256, 512, 1024, 2048], "depths": [3, 4, 6, 3],
                        "layer_type": "bottleneck", "out_features": ["stage2", "stage3", "stage4"]},
    "encoder_in_channels": [512, 1024, 2048], "encoder_hidden_dim": 256, "encoder_ffn_dim": 1024,
    "encoder_attention_heads": 8, "d_model": 256, "decoder_in_channels": [256, 256, 256], "decoder_ffn_dim": 1024,
    "decoder_attention_heads": 8, "decoder_layers": 6, "num_queries": 300, "num_denoising": 100, "image_size": 640,
}


def load_images(n: int) -> list[Image.Image]:
    files = sorted(DATA.glob("*/*.jpg"))
    if files:
        return [Image.open(files[i % len(files)]).convert("RGB") for i in range(n)]
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)) for _ in range(n)]


def full_arch_variants() -> list[tuple[str, str, dict[str, Any]]]:
    import open_clip

    vit_l14 = open_clip.get_model_config("ViT-L-14")
    return [
        ("clip: ViT-L-14 (random init)", "clip-tiny", {"model_cfg": vit_l14}),
        ("dino: DINOv2-Small (random init)", "dino-tiny", {"model_cfg": {
            "hidden_size": 384, "num_hidden_layers": 12, "num_attention_heads": 6, "intermediate_size": 1536,
            "image_size": 224, "patch_size": 14}}),
        ("dino-v1: ViT-S/16 (random init)", "dino-tiny", {"variant": "v1", "model_cfg": {
            "hidden_size": 384, "num_hidden_layers": 12, "num_attention_heads": 6, "intermediate_size": 1536,
            "image_size": 224, "patch_size": 16}}),
        ("rtdetr: R50vd (random init)", "rtdetr-tiny", {"model_cfg": RTDETR_R50VD}),
    ]


def run_one(build: Callable[[], Any], images: list[Image.Image], batch: int) -> tuple[float, str]:
    from mrbench.backends import Detector, FaceEncoder

    backend = build()
    if isinstance(backend, Detector):
        call = backend.detect
    elif isinstance(backend, FaceEncoder):
        call = backend.faces
    else:
        call = backend.embed_images
    call(images[:batch])  # warm-up
    start = time.perf_counter()
    for i in range(0, len(images), batch):
        call(images[i : i + batch])
    rate = len(images) / (time.perf_counter() - start)
    note = "RANDOM weights" if backend.info.random_weights else backend.info.weights[:60]
    return rate, note


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default=None)
    parser.add_argument("--full-arch", action="store_true", help="also time the pretrained architectures, random init")
    parser.add_argument("--only", nargs="*", help="only these names")
    args = parser.parse_args()

    import torch

    from mrbench.backends import DETECTORS, ENCODERS, MissingWeightsError, get_detector, get_encoder
    from mrbench.backends.mmdet_backend import MMDetUnavailableError

    images = load_images(args.images)
    common = {"batch_size": args.batch_size, **({"device": args.device} if args.device else {})}
    jobs: list[tuple[str, Callable[[], Any]]] = []
    for name in ENCODERS.names():
        jobs.append((name, lambda n=name: get_encoder(n, **common)))
    for name in DETECTORS.names():
        jobs.append((name, lambda n=name: get_detector(n, **common)))
    if args.full_arch:
        for label, name, kw in full_arch_variants():
            build = get_detector if name.startswith("rtdetr") else get_encoder
            jobs.append((label, lambda n=name, k=kw, b=build: b(n, **common, **k)))
    if args.only:
        jobs = [j for j in jobs if j[0].split(":")[0] in args.only]

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, device {device}, "
          f"batch {args.batch_size}, {len(images)} images ({'DreamBench 512px' if DATA.is_dir() else 'random 512px'})")
    width = max(len(j[0]) for j in jobs)
    print(f"{'backend':<{width}}  {'images/s':>9}  note")
    for label, build in jobs:
        try:
            rate, note = run_one(build, images, args.batch_size)
            print(f"{label:<{width}}  {rate:>9.2f}  {note}", flush=True)
        except MissingWeightsError as e:
            print(f"{label:<{width}}  {'n/a':>9}  weights missing: {str(e).splitlines()[0][12:70]}", flush=True)
        except MMDetUnavailableError:
            print(f"{label:<{width}}  {'n/a':>9}  mmdet not installed (make install-mmdet)", flush=True)


if __name__ == "__main__":
    main()
