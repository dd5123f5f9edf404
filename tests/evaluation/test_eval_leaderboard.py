"""The eval and leaderboard commands: run folders in, markdown / CSV / self-contained HTML out."""

from __future__ import annotations

import csv
import json
import shutil
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
    assert [line.split("|")[1].strip().split(" ")[0] for line in lines[1:4]] == ["ip-adapter", "reference", "chance"]
    # Nothing failed: the failures-as-0 table would repeat the first one, so it is not written.
    assert ": failures counted as 0" not in md and "No row failed" in md
    assert lines[1].split("|")[4].strip() == "0/6 (0.0 %)"  # failure rate column
    assert "clip_t@clip-tiny x2.5" in md and "ceiling" in md
    header = lines[0].split("|")
    assert header[5].strip() == "clip_t@clip-tiny" and header[6].strip() == "clip_t@clip-tiny x2.5"  # run order
    with open(tmp_path / "leaderboard.csv") as f:
        table = list(csv.DictReader(f))
    assert {r["model"] for r in table} == {"ip-adapter", "reference", "chance"}
    ref_row = next(r for r in table if r["model"] == "reference" and r["metric"] == "image_sim@dino-tiny.target")
    assert float(ref_row["ci_low"]) <= float(ref_row["mean"]) <= float(ref_row["ci_high"]) and ref_row["n_groups"] == "3"
    html = (tmp_path / "leaderboard.html").read_text()
    assert html.count("data:image/jpeg;base64,") >= 3 * 3 * 3  # refs, target, generations per model
    assert "random weights" in html and "<script" in html  # the sorting script: inline, nothing fetched
    assert "Failures counted as 0" not in html and "No row failed" in html
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


def _folder_bench(root: Path, mini_dreambench: Path, subjects: list[str], single: bool) -> str:
    """A folder benchmark from mini DreamBench subjects (+ a one-image group whose ceiling row fails)."""
    for s in subjects:
        shutil.copytree(mini_dreambench / s, root / s)  # copies: links out of a benchmark are not followed
    if single:
        (root / "single").mkdir()
        shutil.copy(mini_dreambench / subjects[0] / "00.jpg", root / "single" / "only.jpg")
    return f"folder:{root}"


def test_leaderboard_failures_and_fingerprints(tmp_path: Path, mini_dreambench: Path) -> None:
    from mrbench.evaluation.leaderboard import build_leaderboard
    from mrbench.evaluation.results import estimate
    from mrbench.evaluation.runner import run_eval

    subjects = sorted(p.name for p in mini_dreambench.iterdir() if p.is_dir())
    a_root, b_root = tmp_path / "a", tmp_path / "b"
    a_root.mkdir()
    b_root.mkdir()
    bench_a = _folder_bench(a_root, mini_dreambench, subjects, single=True)
    bench_b = _folder_bench(b_root, mini_dreambench, subjects[:2], single=False)
    kw = dict(profile="tiny", metrics="image_sim@dino-tiny", images_per_prompt=1, n_boot=50)
    ref_a = run_eval("reference", bench_a, tmp_path / "runs", **kw)
    chance_a = run_eval("chance", bench_a, tmp_path / "runs", **kw)
    ref_b = run_eval("reference", bench_b, tmp_path / "runs", **kw)
    assert ref_a.summary["benchmark"]["fingerprint"] != ref_b.summary["benchmark"]["fingerprint"]

    # The summary: failure rate, and the mean with failed rows counted as 0 next to the mean over ok rows.
    key = "image_sim@dino-tiny.target"
    s = ref_a.summary["splits"]["test"]
    n = len(ref_a.rows)
    assert s["failed"] == 1 and s["failure_rate"] == pytest.approx(1 / n)  # the one-image group
    zero_rows = [r if r["status"] == "ok" else {**r, "metrics": {key: 0.0}} for r in ref_a.rows]
    est = s["metrics"][key]
    assert est["failures_as_zero"]["mean"] == pytest.approx(estimate(zero_rows, key).mean)
    assert est["failures_as_zero"]["mean"] < est["mean"] and est["failures_as_zero"]["n_groups"] == est["n_groups"] + 1

    out = tmp_path / "lb"
    build_leaderboard([ref_a.run_dir, chance_a.run_dir, ref_b.run_dir], out)
    md = (out / "leaderboard.md").read_text()
    # Two sample sets, two tables; never one table with two reference rows. Only table a has a failed row: only it
    # has the failures-as-0 twin.
    fa, fb = (r.summary["benchmark"]["fingerprint"][:12] for r in (ref_a, ref_b))
    heads = [line for line in md.splitlines() if line.startswith("## folder / test (fingerprint ")]
    assert len(heads) == 2 and fa in md and fb in md
    assert sum(1 for line in md.splitlines() if line.startswith("### ") and line.endswith(": failures counted as 0")) == 1
    sections = md.split("\n## ")
    sec_a = next(x for x in sections if x.startswith(f"folder / test (fingerprint {fa}"))
    sec_b = next(x for x in sections if x.startswith(f"folder / test (fingerprint {fb}"))
    sec_a, sec_b = (x.split(": by number of references")[0] for x in (sec_a, sec_b))  # the means tables only
    assert sum(1 for line in sec_a.splitlines() if line.startswith("| reference")) == 2  # ok-rows and as-0 tables
    assert sum(1 for line in sec_b.splitlines() if line.startswith("| reference")) == 1
    assert "No row failed" in sec_b and "No row failed" not in sec_a
    assert "| chance" in sec_a and "| chance" not in sec_b
    ref_line = next(line for line in sec_a.splitlines() if line.startswith("| reference"))
    assert f"1/{n} (" in ref_line  # the failure rate is shown
    with open(out / "leaderboard.csv") as f:
        table = list(csv.DictReader(f))
    row = next(r for r in table if r["model"] == "reference" and r["fingerprint"] == ref_a.summary["benchmark"]["fingerprint"]
               and r["metric"] == key)
    assert int(row["failed"]) == 1 and float(row["mean_failures_as_zero"]) == pytest.approx(est["failures_as_zero"]["mean"])
    assert {r["fingerprint"] for r in table} == {ref_a.summary["benchmark"]["fingerprint"], ref_b.summary["benchmark"]["fingerprint"]}
    html = (out / "leaderboard.html").read_text()
    assert html.count("Failures counted as 0") == 1 and f"1/{n} (" in html
