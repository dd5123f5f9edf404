"""Provenance: package versions, git hash, hardware; written into every run folder."""

from __future__ import annotations

import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

TRACKED_PACKAGES = (
    "mrbench", "torch", "torchvision", "numpy", "pyarrow", "img2dataset", "pillow", "faiss-cpu",
    "open_clip_torch", "transformers", "diffusers", "peft", "dlib-bin", "insightface", "onnxruntime", "ray",
)


def package_versions(names: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str]:
    out = {}
    for n in names:
        try:
            out[n] = version(n)
        except PackageNotFoundError:
            continue
    return out


def git_hash() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def hardware() -> dict[str, Any]:
    info: dict[str, Any] = {"machine": platform.machine(), "python": platform.python_version()}
    import os
    import sys

    info["cpus"] = os.cpu_count()
    # Only when a model step has loaded torch already: importing it here costs seconds a model-free run never needs.
    torch = sys.modules.get("torch")
    if torch is not None:
        info["cuda"] = torch.cuda.is_available()
        if info["cuda"]:
            info["gpu"] = torch.cuda.get_device_name(0)
    return info


def provenance() -> dict[str, Any]:
    return {"versions": package_versions(), "git": git_hash(), "hardware": hardware()}
