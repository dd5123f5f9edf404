"""Hostile benchmark inputs through `mrbench eval`: an image too large to decode fails its samples by name (never
decoded), a folder or DreamBench benchmark never follows a symlink out of its root, and a benchmark path that is a
file ends in one ``error:`` line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from evalhelpers import subject_image, write_prompts_file

from webserver import png_bomb

METRIC = "image_sim@dino-tiny"


def eval_cli(benchmark: str, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mrbench.cli", "eval", "--model", "reference", "--profile", "tiny",
                           "--benchmark", benchmark, "--out", str(out), "--metrics", METRIC, "--images-per-prompt", "1",
                           "--set", "n_boot=20", *extra], capture_output=True, text=True, timeout=600)


def samples(out: Path) -> dict[str, dict]:
    (run,) = [p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return {r["sample_id"]: r for r in map(json.loads, (run / "samples.jsonl").read_text().splitlines())}


@pytest.mark.slow
def test_images_over_max_image_pixels_fail_their_samples_by_name(tmp_path: Path):
    root = tmp_path / "bench"
    for group, k0 in (("fine", 0), ("huge", 10), ("large", 20)):
        (root / group).mkdir(parents=True)
        for k in range(2 if group != "fine" else 3):
            subject_image("red_toy", k0 + k).save(root / group / f"{k}.jpg")
    (root / "huge" / "2.png").write_bytes(png_bomb(30000, 30000))  # more than PIL opens at all
    (root / "large" / "2.png").write_bytes(png_bomb(12000, 12000))  # opens, 2.4 GB RSS if decoded
    proc = eval_cli(f"folder:{root}", tmp_path / "runs")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    rows = samples(tmp_path / "runs")
    status = {sid: r["status"] for sid, r in rows.items()}
    assert status == {"fine/00": "ok", "fine/01": "ok", "fine/02": "ok", **{
        f"{g}/{k:02d}": "image_too_large" for g in ("huge", "large") for k in range(3)}}
    assert "12000x12000 pixels > max_image_pixels 64000000" in rows["large/00"]["error_message"]
    assert "huge/2.png" in rows["huge/01"]["error_message"]
    # the limit is a setting: raised over 12000x12000, those samples are evaluated
    proc = eval_cli(f"folder:{root}", tmp_path / "runs2", "--set", "max_image_pixels=200000000", "--limit", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]


def _outside_image(tmp_path: Path) -> Path:
    secret = tmp_path / "private" / "secret.jpg"
    secret.parent.mkdir()
    subject_image("dog9", 1).save(secret)
    return secret


@pytest.mark.slow
def test_folder_benchmark_does_not_follow_symlinks_out_of_its_root(tmp_path: Path):
    secret = _outside_image(tmp_path)
    root = tmp_path / "bench"
    (root / "g").mkdir(parents=True)
    for k in range(3):
        subject_image("red_toy", k).save(root / "g" / f"{k}.jpg")
    (root / "g" / "3.jpg").symlink_to(secret)  # a file link leaving the root
    (root / "linked").symlink_to(secret.parent, target_is_directory=True)  # a folder link leaving the root
    inside = root / "g2"
    inside.mkdir()
    subject_image("blue_can", 1).save(inside / "a.jpg")
    (inside / "b.jpg").symlink_to(root / "g" / "0.jpg")  # a link that stays inside the root is fine
    proc = eval_cli(f"folder:{root}", tmp_path / "runs")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = samples(tmp_path / "runs")
    assert sorted(rows) == ["g/00", "g/01", "g/02", "g2/00", "g2/01"]
    assert "secret" not in json.dumps(list(rows.values()))
    copied = [p for p in (tmp_path / "runs").rglob("*") if p.is_file() and p.read_bytes() == secret.read_bytes()]
    assert copied == []


@pytest.mark.slow
def test_dreambench_does_not_follow_symlinks_out_of_its_root(tmp_path: Path):
    secret = _outside_image(tmp_path)
    root = tmp_path / "dreambench"
    for s in ("red_toy", "blue_can"):
        (root / s).mkdir(parents=True)
        for k in range(3):
            subject_image(s, k).save(root / s / f"{k:02d}.jpg")
    (root / "red_toy" / "03.jpg").symlink_to(secret)
    write_prompts_file(root / "prompts_and_classes.txt", {"red_toy": "toy", "blue_can": "can"})
    proc = eval_cli(f"dreambench:{root}", tmp_path / "runs", "--limit", "50")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = samples(tmp_path / "runs")
    assert rows and "secret" not in json.dumps(list(rows.values())) and "03.jpg" not in json.dumps(list(rows.values()))
    copied = [p for p in (tmp_path / "runs").rglob("*") if p.is_file() and p.read_bytes() == secret.read_bytes()]
    assert copied == []


def test_benchmark_path_that_is_a_file_is_one_error_line(tmp_path: Path):
    f = tmp_path / "photos.zip"
    f.write_bytes(b"PK\x03\x04 not a folder")
    for bench in (f"folder:{f}", f"dreambench:{f}", f"mrbench:{f}"):
        proc = eval_cli(bench, tmp_path / "runs")
        assert proc.returncode == 2, (bench, proc.stderr[-3000:])
        assert "Traceback" not in proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert lines[-1].startswith("error:") and str(f) in lines[-1] and "not a folder" in lines[-1], lines
