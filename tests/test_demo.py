"""`mrbench demo` as a user runs it: offline curation of the sample web, the tiny-model eval and the leaderboard."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.slow


def _demo(out: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "mrbench.cli", "demo", "--out", str(out)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={"COLUMNS": "200", **_env()})


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "COLUMNS"}


def _summaries(out: Path) -> dict[tuple[str, str], dict]:
    got = {}
    for f in sorted((out / "eval").glob("*/summary.json")):
        s = json.loads(f.read_text())
        for split, body in s["splits"].items():
            got[(s["model"], split)] = {"random": s["model_random_weights"], **body}
    return got


def test_demo_curates_evaluates_and_resumes(tmp_path):
    out = tmp_path / "demo"
    first = _demo(out)
    assert first.returncode == 0, first.stdout + first.stderr
    text = first.stdout
    for expected in ("rows per status", "near_duplicate", "leakage audit", "held_out", "demo leaderboard",
                     "[random weights]", "demo finished"):
        assert expected in text, expected
    # the release: every row has its bytes and a split; the manifest verifies
    rows = [r for f in sorted((out / "run" / "release" / "data").glob("*.parquet"))
            for r in pq.read_table(f, columns=["group", "split"]).to_pylist()]
    assert rows and {r["split"] for r in rows} == {"held_out", "held_in", "train"}
    verify = subprocess.run([sys.executable, "-m", "mrbench.cli", "release", "verify", str(out / "run" / "release")],
                            capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    # the eval: six rows per split; tiny generators flagged random, the real rows not; the ceiling beats chance
    runs = _summaries(out)
    models = {"reference", "chance", "prompt-only", "easyref", "ip-adapter", "lora"}
    assert {m for m, _ in runs} == models and {s for _, s in runs} == {"held_out", "held_in"}
    key = "image_sim@mobilenet_v2.target"
    for split in ("held_out", "held_in"):
        assert runs[("reference", split)]["metrics"][key]["mean"] > runs[("chance", split)]["metrics"][key]["mean"] + 0.2
        for m in models:
            assert runs[(m, split)]["random"] == (m not in ("reference", "chance"))
    board = (out / "leaderboard" / "leaderboard.md").read_text()
    assert "easyref [random weights]" in board and "| reference |" in board
    assert (out / "leaderboard" / "leaderboard.html").stat().st_size > 1000
    # rerun: nothing is downloaded or generated again, and the leaderboard is the same
    before = {p: p.stat().st_mtime_ns for p in sorted((out / "eval").glob("*/samples.jsonl"))}
    second = _demo(out)
    assert second.returncode == 0, second.stdout + second.stderr
    assert (out / "leaderboard" / "leaderboard.md").read_text() == board
    assert {p: p.stat().st_mtime_ns for p in before} == before
