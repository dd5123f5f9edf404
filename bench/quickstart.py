"""CPU time of the README's first-hour commands: the quickstart block and the tiny eval examples, each run as its
own `mrbench` process the way a user pastes it, against a CPU-time budget.

Run by hand (CPU only; everything tiny or offline):

    .venv/bin/python bench/quickstart.py                 # photos from ../shared/data/dreambench when present
    .venv/bin/python bench/quickstart.py --budget 240

Printed per command: wall and CPU seconds (user + system of the process and its children). For the two tiny eval
examples (the README's LoRA example with its eval.yaml, and EasyRef on 4 images) the same command is also run with
the settings the tiny profile used before it had its own defaults (the paper's 30 sampling steps; LoRA with 4
gradient-accumulation batches per step), interleaved in one run, and the ratio old / new is printed. The last line
says whether the quickstart fitted the budget (exit 1 when it did not); tests/test_quickstart.py runs the same block
without timing it.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "dreambench"
MRBENCH = Path(sys.executable).parent / "mrbench"
OLD_TINY = {"lora": ["--set", "model_args.num_inference_steps=30", "--set", "model_args.gradient_accumulation_steps=4"],
            "easyref": ["--set", "model_args.num_inference_steps=30"]}


def quickstart_block() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text[text.index("## Quickstart"):], re.S).group(1)
    return [ln.split("#", 1)[0].strip() for ln in block.splitlines() if ln.strip().startswith("mrbench ")]


def photos(root: Path) -> str:
    """photos/<subject>/: two DreamBench subjects when the shared data is there, else generated images."""
    if SHARED.is_dir():
        for subject in ("cat", "dog"):
            shutil.copytree(SHARED / subject, root / "photos" / subject)
        return "DreamBench cat, dog"
    import numpy as np
    from PIL import Image

    for s, subject in enumerate(("cat", "dog")):
        (root / "photos" / subject).mkdir(parents=True)
        for k in range(4):
            rng = np.random.default_rng(10 * s + k)
            Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).resize((256, 256)).save(
                root / "photos" / subject / f"{k}.jpg")
    return "generated"


def timed(args: list[str], cwd: Path) -> tuple[float, float, int]:
    """(wall s, CPU s, exit status) of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    r = subprocess.run(args, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                       env={**os.environ, "COLUMNS": "120"})
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if r.returncode:
        print(f"  exit {r.returncode}: {r.stderr.strip()[-400:]}")
    return wall, cpu, r.returncode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=240.0, help="CPU seconds the quickstart may take")
    args = ap.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="mrbench-quickstart-") as tmp:
        root = Path(tmp)
        print(f"photos: {photos(root)}")
        total_cpu = total_wall = 0.0
        failed = 0
        print(f"{'command':<100} {'wall s':>7} {'CPU s':>7}")
        for line in quickstart_block():
            argv = [str(MRBENCH), *shlex.split(line)[1:]]
            # as the shell would: a pattern expands to the paths it matches (sorted), relative to the folder
            argv = [p for a in argv for p in (sorted(glob.glob(a, root_dir=root)) if "*" in a else [a])]
            wall, cpu, rc = timed(argv, root)
            total_cpu, total_wall, failed = total_cpu + cpu, total_wall + wall, failed + bool(rc)
            print(f"{line[:100]:<100} {wall:7.1f} {cpu:7.1f}")
        print(f"{'quickstart: ' + str(len(quickstart_block())) + ' commands':<100} {total_wall:7.1f} {total_cpu:7.1f}")

        (root / "eval.yaml").write_text(  # the README's eval.yaml example, on the quickstart's release
            "model: lora\nbenchmark: mrbench:runs/v1/release\nsplit: held-out\nprofile: tiny\nimages_per_prompt: 2\n"
            "metrics: [image_sim@mobilenet_v2, face@dlib]\nmodel_args: {train_steps: 8}\n")
        examples = {
            "lora": ["eval", "--config", "eval.yaml", "--limit", "4", "--set", "model_args.rank=8", "--set", "n_boot=200"],
            "easyref": ["eval", "--model", "easyref", "--profile", "tiny", "--benchmark", "mrbench:runs/v1/release",
                        "--images-per-prompt", "4", "--limit", "1", "--metrics", "image_sim@mobilenet_v2,face@dlib"],
        }
        print(f"\n{'tiny example':<12} {'now CPU s':>10} {'before CPU s':>13} {'before / now':>13}")
        for name, cmd in examples.items():
            now = timed([str(MRBENCH), *cmd, "--out", "runs/bench-now"], root)
            old = timed([str(MRBENCH), *cmd, *OLD_TINY[name], "--out", "runs/bench-old"], root)
            failed += bool(now[2]) + bool(old[2])
            print(f"{name:<12} {now[1]:10.1f} {old[1]:13.1f} {old[1] / now[1]:13.2f}x")
    ok = not failed and total_cpu <= args.budget
    print(f"\nquickstart CPU {total_cpu:.1f} s of a {args.budget:.0f} s budget ({total_cpu / args.budget:.2f}); "
          f"{'within budget' if ok else 'OVER BUDGET or a command failed'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
