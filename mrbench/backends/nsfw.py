"""Safety (NSFW) classifiers on stored CLIP image embeddings.

``laion-nsfw-h14``: LAION's CLIP-based-NSFW-Detector for CLIP ViT-H-14 (laion2b) image embeddings
(https://github.com/LAION-AI/CLIP-based-NSFW-Detector, ``h14_nsfw_model.py`` and ``h14_nsfw.pth``; the classifier
NeMo Curator and clip-retrieval use): an MLP 1024 -> 1024 -> 2048 -> 1024 -> 256 -> 128 -> 16 -> 1, trained with a
squared error on 0/1 labels, so its output reads as the probability of NSFW; it is clipped to [0, 1] here. Its input
is the L2-normalised embedding, which is what the embed step stores. Use it with ``embed.encoder: clip`` and
``encoder_options: {model: ViT-H-14/laion2b_s32b_b79k}``.

Weights: ``checkpoint=PATH`` > ``$MRBENCH_WEIGHTS_DIR/laion/CLIP-based-NSFW-Detector/h14_nsfw.pth`` >
``~/.cache/clip_retrieval/h14_nsfw.pth`` (where clip-retrieval keeps it); nothing is downloaded.

``laion-nsfw-tiny``: the same layer stack at a small width with seeded random weights, its input width taken from
the first embeddings it sees (any encoder), its outputs standardised over each call and put through a sigmoid so
they spread over (0, 1); for tests and the tiny profile. Its scores are random-model scores.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mrbench.backends import weights as W
from mrbench.backends.base import BackendInfo, SafetyClassifier
from mrbench.backends.torch_common import pkg_version, random_info, seeded

H14_FILE = "h14_nsfw.pth"
H14_URL = "https://github.com/LAION-AI/CLIP-based-NSFW-Detector/raw/main/h14_nsfw.pth"
H14_WIDTHS = (1024, 2048, 1024, 256, 128, 16)


class H14Mlp(nn.Module):
    """LAION's ``H14_NSFW_Detector`` layer stack (the state dict's ``layers.N.*`` keys match it); ``widths`` sets the
    hidden sizes (LAION's by default)."""

    def __init__(self, input_size: int = 1024, widths: tuple[int, ...] = H14_WIDTHS) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = input_size
        for k, w in enumerate(widths):
            layers.append(nn.Linear(prev, w))
            if k < len(widths) - 1:  # the last hidden layer (16) goes straight into the output, as LAION's
                layers += [nn.ReLU(), nn.Dropout(0.2)]
            prev = w
        layers.append(nn.Linear(prev, 1))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def _score(model: nn.Module, embeddings: np.ndarray, squash: Any = None, batch_size: int = 4096) -> np.ndarray:
    """The model's outputs, squashed into [0, 1] (clipped by default)."""
    x = np.asarray(embeddings, np.float32)
    out = []
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            raw = model(torch.from_numpy(x[i:i + batch_size])).squeeze(-1)
            out.append((squash(raw) if squash is not None else raw.clamp(0.0, 1.0)).numpy())
    return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)


@dataclass
class NsfwOptions:
    """Options of ``laion-nsfw-h14``.

    Attributes:
        checkpoint: Path to ``h14_nsfw.pth`` (default: looked up as the module docstring says).
    """

    checkpoint: str | None = None


class LaionNsfwH14(SafetyClassifier):
    """LAION's H14 NSFW detector (see the module docstring)."""

    input_size = 1024

    def __init__(self, **kwargs: Any) -> None:
        self.options = NsfwOptions(**kwargs)
        path = resolve_h14_weights(self.options.checkpoint)
        self.model = H14Mlp(self.input_size)
        state = torch.load(path, map_location="cpu", weights_only=True)
        self.model.load_state_dict(state)
        self.model.eval()
        self.info = BackendInfo(name="laion-nsfw-h14", weights=f"LAION-AI/CLIP-based-NSFW-Detector/{H14_FILE} ({path})",
                                version=pkg_version("torch"))

    def score(self, embeddings: np.ndarray) -> np.ndarray:
        if embeddings.shape[-1] != self.input_size:
            raise ValueError(f"laion-nsfw-h14 reads 1024-d CLIP ViT-H-14 embeddings, got {embeddings.shape[-1]}-d: "
                             "set embed.encoder: clip with encoder_options model ViT-H-14/laion2b_s32b_b79k")
        return _score(self.model, embeddings)


def resolve_h14_weights(checkpoint: str | None) -> Path:
    """The ``h14_nsfw.pth`` file, or :class:`MissingWeightsError` naming where it was looked for and how to get it."""
    looked: list[Path] = []
    if checkpoint:
        looked.append(Path(checkpoint).expanduser())
    else:
        mirror = W.mirror_dir()
        if mirror is not None:
            looked.append(mirror / "laion" / "CLIP-based-NSFW-Detector" / H14_FILE)
        looked.append(Path(os.path.expanduser("~/.cache/clip_retrieval")) / H14_FILE)
    found = W.first_existing(looked)
    if found is None:
        raise W.missing_weights(
            f"LAION CLIP-based-NSFW-Detector {H14_FILE}", looked,
            f"on a connected machine download {H14_URL} and pass safety.options.checkpoint=PATH, or put it at "
            f"$MRBENCH_WEIGHTS_DIR/laion/CLIP-based-NSFW-Detector/{H14_FILE}.")
    return found


@dataclass
class TinyNsfwOptions:
    """Options of ``laion-nsfw-tiny``: the seed of its random weights and its hidden widths."""

    seed: int = 0
    widths: tuple[int, ...] = (32, 16)


class TinyNsfwClassifier(SafetyClassifier):
    """A seeded random :class:`H14Mlp` of small width; built on the first call for that embedding width."""

    def __init__(self, **kwargs: Any) -> None:
        self.options = TinyNsfwOptions(**{k: tuple(v) if k == "widths" else v for k, v in kwargs.items()})
        self.info = random_info("laion-nsfw-tiny", {"widths": list(self.options.widths)}, self.options.seed, "torch")
        self._models: dict[int, nn.Module] = {}

    def score(self, embeddings: np.ndarray) -> np.ndarray:
        dim = int(embeddings.shape[-1])
        if dim not in self._models:
            with seeded(self.options.seed):
                self._models[dim] = H14Mlp(dim, self.options.widths).eval()
        # a sigmoid of the standardised output: random weights give outputs near 0, which clipping would send to 0
        return _score(self._models[dim], embeddings, lambda raw: torch.sigmoid((raw - raw.mean()) / (raw.std() + 1e-6))
                      if len(raw) > 1 else torch.sigmoid(raw))
