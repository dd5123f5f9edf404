"""Test data builders for the evaluation tests (imported by conftest.py and tests; a unique module name)."""

from __future__ import annotations

import io
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"

MINI_SUBJECTS = {"red_toy": "toy", "blue_can": "can", "dog9": "dog"}
MINI_COLORS = {"red_toy": (200, 30, 30), "blue_can": (30, 60, 210), "dog9": (120, 90, 40)}


def shared(sub: str) -> Path:
    path = SHARED_DATA / sub
    if not path.exists():
        pytest.skip(f"shared data not found at {path}")
    return path


def subject_image(subject: str, k: int, size: int = 64) -> Image.Image:
    """A photo-like image of ``subject``: its colour and shape on a varying background (seeded)."""
    rng = np.random.default_rng(zlib.crc32(subject.encode()) % 1000 + 17 * k)
    bg = rng.integers(150, 256, (size // 8, size // 8, 3), dtype=np.uint8)
    im = Image.fromarray(bg).resize((size, size), Image.BICUBIC)
    d = ImageDraw.Draw(im)
    c = MINI_COLORS[subject]
    o = int(rng.integers(4, 14))
    if subject == "blue_can":
        d.rectangle([o, o, size - o, size - o // 2], fill=c)
    elif subject == "red_toy":
        d.ellipse([o, o, size - o, size - o], fill=c)
    else:
        d.polygon([(size // 2, o), (size - o, size - o), (o, size - o)], fill=c)
    return im


def write_prompts_file(path: Path, subjects: dict[str, str]) -> None:
    """A prompts_and_classes.txt in DreamBench's published format (3 object and 3 live templates)."""
    lines = ["Classes", "", "subject_name,class", *[f"{s},{c}" for s, c in subjects.items()], "", "Prompts", "",
             "Object Prompts", "", "prompt_list = ["]
    lines += [f"'{t}'.format(unique_token, class_token)," for t in
              ("a {0} {1} in the jungle", "a {0} {1} in the snow", "a red {0} {1}")]
    lines += ["]", "", "Live Subject Prompts", "", "prompt_list = ["]
    lines += [f"'{t}'.format(unique_token, class_token)," for t in
              ("a {0} {1} in the jungle", "a {0} {1} wearing a red hat", "a wet {0} {1}")]
    lines += ["]", ""]
    path.write_text("\n".join(lines))


def png_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def require_encoder(name: str) -> None:
    """Skip when a real-weights encoder cannot be built here (its weights ship with `make install`)."""
    from mrbench.backends import MissingWeightsError, get_encoder

    try:
        get_encoder(name)
    except (MissingWeightsError, ImportError) as e:
        pytest.skip(f"encoder {name} unavailable: {e}")


def kill_run_eval_after(out: Path, args: dict, cached_images: int, cwd: Path) -> int:
    """Start ``run_eval(out=out, **args)`` in a subprocess that stops for good right after its ``cached_images``-th
    generation is in the cache, SIGKILL it there, and return how many are cached after the kill.

    The stop is a hook, not a clock: the child's ``GenerationCache.put`` blocks forever once it has written that many
    entries (after writing a marker file), so the kill always lands at the same point of the run.
    """
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    marker = out.parent / f"{out.name}.stopped"
    script = textwrap.dedent("""
        import json, sys, threading
        from pathlib import Path
        from mrbench.evaluation.results import GenerationCache
        from mrbench.evaluation.runner import run_eval
        put, done, stop_after, marker = GenerationCache.put, [0], int(sys.argv[3]), Path(sys.argv[4])
        def blocking_put(self, *a, **kw):
            put(self, *a, **kw)
            done[0] += 1
            if done[0] == stop_after:
                marker.write_text(str(done[0]))
                threading.Event().wait()  # until SIGKILL
        GenerationCache.put = blocking_put
        run_eval(out=sys.argv[1], **json.loads(sys.argv[2]))
    """)
    cache = out / ".cache" / "generations"
    proc = subprocess.Popen([sys.executable, "-c", script, str(out), json.dumps(args), str(cached_images), str(marker)],
                            cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300  # a hang guard, not a speed check
        while not marker.exists():
            assert proc.poll() is None, "the run finished before it could be killed"
            assert time.time() < deadline, "the run never reached the point to kill it at"
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    return len(list(cache.rglob("*.json")))
