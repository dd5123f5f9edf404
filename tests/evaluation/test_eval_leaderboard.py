"""The eval and leaderboard commands: run folders in, markdown / CSV / self-contained HTML out."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mrbench.cli import app

METRICS = "clip_t,image_sim@dino-tiny"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, mini_dreambench: Path) -> list[Path]:
    out = tmp_path_factory.mktemp("runs")
    cli = CliRunner()
    dirs = []
    for model, extra in (("ip-adapter", ["--model-args", "num_inference_steps=2"]), ("reference", []), ("chance", [])):
        res = cli.invoke(app, ["eval", "--model", model, "--benchmark", f"dreambench:{mini_dreambench}", "--out",
                               str(out), "--limit", "3", "--images-per-prompt", "2", "--metrics", METRICS,
                               "--profile", "tiny", *extra])
        assert res.exit_code == 0, res.output
        assert "run folder:" in res.output and "image_sim@dino-tiny.target" in res.output
        (d,) = [p for p in out.iterdir() if p.name.startswith(model + "-")]
        dirs.append(d)
    return dirs


def test_eval_command_writes_run_folder(runs: list[Path]) -> None:
    ip = runs[0]
    assert ip.name.startswith("ip-adapter-dreambench-test-2steps-cfg7.5-seed0-tiny-")
    rows = [json.loads(line) for line in (ip / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all((ip / r["image"]).is_file() for r in rows)
    assert {"sample_id", "group", "model", "seed", "prompt", "image", "metrics", "encoders", "random_weights"} <= set(rows[0])
    assert rows[0]["random_weights"] is True


def test_leaderboard_files(runs: list[Path], tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["leaderboard", *map(str, runs), "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    md = (tmp_path / "leaderboard.md").read_text()
    assert "## dreambench / test" in md and "ip-adapter [random weights]" in md
    lines = [line for line in md.splitlines() if line.startswith("| ")]
    assert [line.split("|")[1].strip().split(" ")[0] for line in lines[1:]] == ["ip-adapter", "reference", "chance"]
    assert "clip_t@clip-tiny x2.5" in md and "ceiling" in md
    header = lines[0].split("|")
    assert header[4].strip() == "clip_t@clip-tiny" and header[5].strip() == "clip_t@clip-tiny x2.5"  # run order
    with open(tmp_path / "leaderboard.csv") as f:
        table = list(csv.DictReader(f))
    assert {r["model"] for r in table} == {"ip-adapter", "reference", "chance"}
    ref_row = next(r for r in table if r["model"] == "reference" and r["metric"] == "image_sim@dino-tiny.target")
    assert float(ref_row["ci_low"]) <= float(ref_row["mean"]) <= float(ref_row["ci_high"]) and ref_row["n_groups"] == "3"
    html = (tmp_path / "leaderboard.html").read_text()
    assert html.count("data:image/jpeg;base64,") >= 3 * 3 * 3  # refs, target, generations per model
    assert "random weights" in html and "<script" in html  # the sorting script: inline, nothing fetched
    assert "src='http" not in html and "src=\"http" not in html


def test_eval_command_errors(tmp_path: Path, mini_dreambench: Path) -> None:
    cli = CliRunner()
    res = cli.invoke(app, ["eval", "--model", "easyref", "--benchmark", f"dreambench:{mini_dreambench}", "--out",
                           str(tmp_path), "--metrics", "image_sim@dino-tiny"])
    assert res.exit_code == 3 and "not available offline" in res.output and "--profile tiny" in res.output
    res = cli.invoke(app, ["eval", "--model", "lorra", "--benchmark", f"dreambench:{mini_dreambench}", "--out",
                           str(tmp_path), "--metrics", "image_sim@dino-tiny"])
    assert res.exit_code == 2 and "did you mean 'lora'" in res.output


def test_ls_lists_models_metrics_benchmarks() -> None:
    cli = CliRunner()
    models = cli.invoke(app, ["ls", "models"]).output
    assert all(m in models for m in ("easyref", "ip-adapter", "lora", "reference", "chance"))
    assert all(m in cli.invoke(app, ["ls", "metrics"]).output for m in ("clip_t", "clip_i", "dino_i", "face", "image_sim"))
    assert all(b in cli.invoke(app, ["ls", "benchmarks"]).output for b in ("mrbench", "dreambench", "folder"))
