"""Eval options declared once (:class:`~mrbench.evaluation.config.EvalConfig`): ``mrbench eval --config/--set`` (CLI > YAML >
defaults, flags without defaults of their own), ``run_eval`` with a config, keyword overrides or a built generator."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from mrbench.cli import app
from mrbench.config import ConfigError
from mrbench.evaluation.config import EvalConfig
from mrbench.evaluation.runner import run_eval

METRIC = "image_sim@dino-tiny"


def test_cli_reads_yaml_then_flags_then_set(tmp_path: Path, mini_dreambench: Path) -> None:
    cfg = {"model": "reference", "benchmark": f"dreambench:{mini_dreambench}", "out": str(tmp_path / "runs"),
           "profile": "tiny", "limit": 2, "images_per_prompt": 3, "seed": 5, "metrics": [METRIC], "n_boot": 50}
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(cfg))
    result = CliRunner().invoke(app, ["-q", "eval", "--config", str(path), "--images-per-prompt", "1",
                                      "--set", "seed=7", "--set", "n_boot=20"])
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "runs").glob("reference-*")
    recorded = json.loads((run_dir / "config.json").read_text())["eval"]
    assert recorded["limit"] == 2 and recorded["metrics"] == [METRIC]  # YAML
    assert recorded["images_per_prompt"] == 1  # the flag over the YAML
    assert recorded["seed"] == 7 and recorded["n_boot"] == 20  # --set over the YAML
    assert recorded["batch_size"] is None and recorded["split"] is None  # defaults
    rows = (run_dir / "samples.jsonl").read_text().splitlines()
    assert len(rows) == 2 and {json.loads(r)["seed"] for r in rows} == {7}
    bad = CliRunner().invoke(app, ["eval", "--config", str(path), "--set", "images_per_promt=2"])
    assert bad.exit_code == 2 and "did you mean 'images_per_prompt'" in bad.stderr
    missing = tmp_path / "nomodel.yaml"
    missing.write_text(yaml.safe_dump({k: v for k, v in cfg.items() if k != "model"}))
    bad = CliRunner().invoke(app, ["eval", "--config", str(missing)])
    assert bad.exit_code == 2 and "model is required" in bad.stderr


def test_flags_have_no_defaults_of_their_own() -> None:
    """Every ``mrbench eval`` flag maps onto an EvalConfig field and defaults to "not given"; the help shows the
    field's default, so a default changed in EvalConfig changes both."""
    command = typer.main.get_command(app).commands["eval"]  # type: ignore[attr-defined]
    names = {f.name: f for f in dataclasses.fields(EvalConfig)}
    options = [p for p in command.params if p.name not in ("config", "set_")]
    assert {p.name for p in options} <= set(names)
    for p in options:
        assert p.default in (None, []) or (p.multiple and not p.default), (p.name, p.default)
    by_name = {p.name: p for p in options}
    assert f"(default: {names['images_per_prompt'].default})" in by_name["images_per_prompt"].help
    assert f"(default: {names['profile'].default})" in by_name["profile"].help


def test_run_eval_checks_keyword_options_against_the_config() -> None:
    with pytest.raises(ConfigError, match="did you mean 'images_per_prompt'"):
        run_eval("reference", "folder:/nowhere", images_per_promt=1)
    with pytest.raises(ConfigError, match="images_per_prompt must be >= 1"):
        run_eval("reference", "folder:/nowhere", images_per_prompt=0)
    with pytest.raises(ConfigError, match="benchmark is required"):
        run_eval("reference")


def test_built_generator_name_and_config_give_the_same_run(tmp_path: Path, mini_dreambench: Path) -> None:
    """``run_eval(model=...)`` takes a name or a built generator (lm-eval's ``simple_evaluate(model: str | LM)``):
    same run folder name, config, rows and summary; an EvalConfig or a YAML file through the API gives the same."""
    from mrbench.app import evaluate
    from mrbench.baselines.reference import ReferenceRow

    bench = f"dreambench:{mini_dreambench}"
    kwargs = {"profile": "tiny", "limit": 2, "images_per_prompt": 1, "metrics": METRIC, "n_boot": 50}
    by_name = run_eval("reference", bench, tmp_path / "a", **kwargs)
    built = run_eval(ReferenceRow(profile="tiny"), bench, tmp_path / "b", **kwargs)
    config = EvalConfig(model="reference", benchmark=bench, out=str(tmp_path / "c"), profile="tiny", limit=2,
                        images_per_prompt=1, metrics=[METRIC], n_boot=50)
    by_config = run_eval(config=config)
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump({"benchmark": bench, **kwargs, "metrics": [METRIC]}))
    by_yaml = evaluate("reference", out=tmp_path / "d", config=tmp_path / "eval.yaml")
    for other in (built, by_config, by_yaml):
        assert other.run_dir.name == by_name.run_dir.name
        assert other.rows == by_name.rows and other.summary == by_name.summary
        model = json.loads((other.run_dir / "config.json").read_text())["model"]
        assert model == json.loads((by_name.run_dir / "config.json").read_text())["model"]
    with pytest.raises(ConfigError, match="built generator"):
        run_eval(ReferenceRow(profile="tiny"), bench, tmp_path / "e", model_args={"x": 1})
    with pytest.raises(ConfigError, match="differs from the built generator"):
        run_eval(ReferenceRow(profile="tiny"), bench, tmp_path / "e", profile="default")


def test_prompt_mode_flag_recorded_and_checked(tmp_path: Path, mini_dreambench: Path) -> None:
    """``--prompt image-only`` reaches the benchmark (empty prompts, CLIP-T text kept) and config.json records it; an
    unknown mode is one error line."""
    args = ["-q", "eval", "--model", "reference", "--benchmark", f"dreambench:{mini_dreambench}", "--out",
            str(tmp_path / "runs"), "--profile", "tiny", "--limit", "2", "--images-per-prompt", "1", "--metrics", METRIC]
    ok = CliRunner().invoke(app, [*args, "--prompt", "image-only"])
    assert ok.exit_code == 0, ok.output
    (run_dir,) = (tmp_path / "runs").glob("reference-*")
    config = json.loads((run_dir / "config.json").read_text())
    assert config["eval"]["prompt"] == "image-only" and config["benchmark"]["prompt"] == "image-only"
    rows = [json.loads(r) for r in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert {r["prompt"] for r in rows} == {""}
    bad = CliRunner().invoke(app, [*args, "--prompt", "rawish"])
    assert bad.exit_code == 2 and bad.stderr.count("\n") == 1 and "prompt must be one of auto" in bad.stderr
