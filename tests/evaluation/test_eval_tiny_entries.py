"""Tiny models are registry entries: ``<name>-tiny`` is a random-weights variant of the real class, ``--profile tiny``
is one spelling of it, and model code never asks which profile it runs under."""

from __future__ import annotations

import ast
from pathlib import Path

from typer.testing import CliRunner

from mrbench.cli import app
from mrbench.evaluation.generator import Generator
from mrbench.evaluation.registry import models, resolve_model
from mrbench.evaluation.runner import run_eval

REPO = Path(__file__).resolve().parents[2]
WITH_WEIGHTS = ["easyref", "ip-adapter", "lora", "prompt-only", "flux2", "qwen-image-edit", "omnigen", "mm-diff"]


def test_every_model_with_weights_has_a_tiny_entry() -> None:
    for name in WITH_WEIGHTS:
        real, tiny = models().get(name), models().get(f"{name}-tiny")
        assert issubclass(tiny, real) and tiny is not real, name
        assert tiny.random_weights and not real.random_weights, name
        assert resolve_model(name, "tiny") == (name, "tiny", f"{name}-tiny")
        assert resolve_model(f"{name}-tiny", "default") == (name, "tiny", f"{name}-tiny")
        assert resolve_model(name, "default") == (name, "default", name)
    for name in ("reference", "chance"):  # real images: no tiny variant, the tiny profile runs the row itself
        assert f"{name}-tiny" not in models() and resolve_model(name, "tiny") == (name, "tiny", name)
    listing = CliRunner().invoke(app, ["ls", "models"]).output
    assert "flux2-tiny" in listing and "[random weights]" in listing


def test_both_spellings_are_one_run(tmp_path: Path, mini_release: Path) -> None:
    """``--model prompt-only-tiny`` and ``--model prompt-only --profile tiny`` name the same run folder: the second
    re-reads the first's rows, labelled random-weights, without generating."""
    kw = dict(benchmark=f"mrbench:{mini_release}", out=tmp_path, split="held-out", limit=1, images_per_prompt=1,
              metrics="image_sim@dino-tiny", model_args={"num_inference_steps": 2})
    first = run_eval("prompt-only-tiny", **kw)
    assert first.timing["generated_images"] == 1 and first.rows[0]["model_random_weights"] is True
    assert first.run_dir.name.startswith("prompt-only-mrbench-held_out-2steps-") and "-seed0-tiny-" in first.run_dir.name
    again = run_eval("prompt-only", profile="tiny", **kw)
    assert again.run_dir == first.run_dir and again.timing["resumed_rows"] == 1 and again.rows == first.rows


def _profile_tests(path: Path) -> list[str]:
    """Every comparison in ``path`` of a name or attribute called ``profile`` with a string (``profile == "tiny"``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            reads = any(getattr(o, "id", getattr(o, "attr", "")) == "profile" for o in operands)
            if reads and any(isinstance(o, ast.Constant) and isinstance(o.value, str) for o in operands):
                found.append(f"{path.name}:{node.lineno}")
    return found


def test_model_code_never_tests_the_profile() -> None:
    found = [hit for p in sorted((REPO / "baselines").glob("*.py")) for hit in _profile_tests(p)]
    found += _profile_tests(REPO / "evaluation" / "generator.py")
    assert not found, f"profile comparisons in model code: {found}"
    assert Generator.option_defaults == {}  # tiny defaults belong to the tiny variants
