"""Eval across workers (evaluation/distributed.py): slices merged into the files one worker writes, byte for byte;
a killed worker's rows are kept and a rerun does only the missing ones."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from evalhelpers import kill_run_eval_after
from typer.testing import CliRunner

from mrbench.config import ConfigError
from mrbench.evaluation import distributed
from mrbench.evaluation.results import read_jsonl
from mrbench.evaluation.runner import run_eval

REPO = Path(__file__).resolve().parents[2]
ARGS = dict(model="easyref", profile="tiny", limit=4, images_per_prompt=2, model_args={"num_inference_steps": 2},
            metrics=["clip_t", "image_sim@dino-tiny"])


def _digests(run_dir: Path) -> dict[str, str]:
    """sha256 of what a run computes: samples.jsonl, summary.json and every generated image."""
    files = [run_dir / "samples.jsonl", run_dir / "summary.json", *sorted((run_dir / "images").glob("*.png"))]
    return {str(f.relative_to(run_dir)): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def test_slices_are_whole_batches_round_robin() -> None:
    owners = [[r for r in range(3) if distributed.in_slice(i, 2, r, 3)] for i in range(8)]
    assert owners == [[0], [0], [1], [1], [2], [2], [0], [0]]


def test_launcher_ranks_merge_byte_identical(tmp_path: Path, mini_dreambench: Path) -> None:
    """Ranks started by a launcher (here one after the other): the first leaves its rows, the last merges; the
    merged files equal a single worker's."""
    args = dict(ARGS, benchmark=f"dreambench:{mini_dreambench}")
    one = run_eval(out=tmp_path / "one", **args)
    assert one.timing["generated_images"] == 8

    first = run_eval(out=tmp_path / "two", rank=1, world_size=2, **args)
    assert not first.complete and first.summary == {}
    assert 0 < len(first.rows) < 8 and not (first.run_dir / "samples.jsonl").exists()
    assert len(read_jsonl(first.run_dir / distributed.rows_file(1, 2))) == len(first.rows)
    last = run_eval(out=tmp_path / "two", rank=0, world_size=2, **args)
    assert last.complete and last.run_dir.name == one.run_dir.name
    assert last.timing["generated_images"] == 8  # both workers' counts; nothing generated twice
    assert sorted(last.timing["workers"]) == ["rank0-of-2", "rank1-of-2"]
    assert _digests(last.run_dir) == _digests(one.run_dir)
    assert not distributed.rows_files(last.run_dir) and not list(last.run_dir.glob("timing.rank*"))
    assert last.rows == one.rows


@pytest.mark.slow
def test_workers_resume_after_a_worker_is_killed(tmp_path: Path, mini_dreambench: Path) -> None:
    """Worker 1 of 2 SIGKILLed mid-slice; ``workers=2`` on the same folder keeps its finished rows, generates only
    the missing images (the rest come from its rows or the cache) and merges the single-worker files."""
    args = dict(ARGS, benchmark=f"dreambench:{mini_dreambench}")
    out = tmp_path / "two"
    cached = kill_run_eval_after(out, dict(args, rank=1, world_size=2), 1, REPO)
    assert 1 <= cached < 4  # worker 1's slice is 4 of the 8 images
    [run_dir] = [p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")]
    kept = len(read_jsonl(run_dir / distributed.rows_file(1, 2)))
    assert kept <= cached

    resumed = run_eval(out=out, workers=2, **args)
    assert resumed.complete and resumed.timing["resumed_rows"] == kept
    assert resumed.timing["generated_images"] == 8 - cached
    assert resumed.timing["cached_images"] == cached - kept
    assert (resumed.run_dir / "workers" / "worker-1.log").is_file()
    one = run_eval(out=tmp_path / "one", **args)
    assert _digests(resumed.run_dir) == _digests(one.run_dir)
    assert (resumed.run_dir / "config.json").read_text().replace(str(out), "") == \
        (one.run_dir / "config.json").read_text().replace(str(tmp_path / "one"), "")


def test_worker_settings_are_checked(tmp_path: Path, mini_dreambench: Path) -> None:
    from mrbench.cli import app

    bench = f"dreambench:{mini_dreambench}"
    with pytest.raises(ConfigError, match="rank and world_size go together"):
        run_eval(out=tmp_path, benchmark=bench, rank=1, **{k: v for k, v in ARGS.items()})
    with pytest.raises(ConfigError, match="out of range"):
        run_eval(out=tmp_path, benchmark=bench, rank=2, world_size=2, **ARGS)
    res = CliRunner().invoke(app, ["eval", "-m", "easyref", "-b", bench, "--profile", "tiny", "--workers", "2",
                                   "--rank", "0", "--world-size", "2", "-o", str(tmp_path)])
    assert res.exit_code == 2 and "error: workers starts processes on this machine" in res.output
    assert not list(tmp_path.iterdir())  # nothing started
