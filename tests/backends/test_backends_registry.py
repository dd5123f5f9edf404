"""The backend registry: names other modules code against, lazy imports, did-you-mean."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from mrbench.backends import DETECTORS, ENCODERS, get_encoder
from mrbench.registry import UnknownEntryError

ENCODER_NAMES = {"clip", "clip-hf", "clip-tiny", "dino", "dino-v1", "dino-tiny", "mobilenet_v2", "dlib", "insightface",
                 "insightface-tiny", "mobilenet_v2-flip", "mobilenet_v2-center"}
DETECTOR_NAMES = {"rtdetr", "rtdetr-tiny", "mmdet", "mmdet-tiny"}


def test_registered_names_are_the_agreed_ones() -> None:
    assert ENCODER_NAMES <= set(ENCODERS.names())
    assert DETECTOR_NAMES <= set(DETECTORS.names())
    for name in ENCODER_NAMES | DETECTOR_NAMES:
        entry = ENCODERS.entry(name) if name in ENCODER_NAMES else DETECTORS.entry(name)
        assert isinstance(entry.target, str) and ":" in entry.target, f"{name} must be a lazy 'module:Class' entry"
        assert entry.help


def test_importing_backends_imports_no_model_library() -> None:
    code = ("import sys, mrbench.backends; heavy = [m for m in ('torch', 'transformers', 'open_clip', 'dlib', "
            "'onnxruntime', 'insightface', 'mmdet') if m in sys.modules]; print(heavy); assert not heavy")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("name", sorted(ENCODER_NAMES))
def test_every_encoder_entry_resolves(name: str) -> None:
    assert callable(ENCODERS.get(name))


@pytest.mark.parametrize("name", sorted(DETECTOR_NAMES))
def test_every_detector_entry_resolves_without_mmdet_installed(name: str) -> None:
    # mmdet_backend imports mmdet lazily, so the class resolves even where mmdet is not installed.
    assert callable(DETECTORS.get(name))


def test_unknown_encoder_suggests_close_names() -> None:
    with pytest.raises(UnknownEntryError, match="did you mean 'dino'"):
        get_encoder("dimo")


def test_unknown_option_is_a_type_error_before_any_work() -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument 'sed'"):
        get_encoder("clip-tiny", sed=3)


def test_cli_ls_lists_backends() -> None:
    from mrbench.cli import app

    enc = CliRunner().invoke(app, ["ls", "encoders"])
    det = CliRunner().invoke(app, ["ls", "detectors"])
    assert enc.exit_code == 0 and det.exit_code == 0
    assert {line.split()[0] for line in enc.output.splitlines()} >= ENCODER_NAMES
    assert {line.split()[0] for line in det.output.splitlines()} >= DETECTOR_NAMES
    assert "[random weights]" in enc.output
