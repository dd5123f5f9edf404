"""Backend contracts. Implementations live in sibling modules and register in ENCODERS / DETECTORS.

Every backend reports a :class:`BackendInfo` (name, weights, version, ``random_weights``); the flag travels into
every score computed from it.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from mrbench.registry import Registry

if TYPE_CHECKING:  # numpy and PIL stay unimported until a backend runs (`mrbench ls encoders` starts fast)
    import numpy as np
    from PIL import Image


class MissingWeightsError(RuntimeError):
    """Pretrained weights are not available locally; the message names them and how to supply them.

    Attributes:
        what: The weights, as upstream names them (``ViT-L-14/openai``); "" when the message alone names them.
    """

    what: str = ""


@dataclass(frozen=True)
class BackendInfo:
    """What produced an embedding or a detection: recorded next to every score."""

    name: str
    weights: str
    version: str = ""
    random_weights: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "weights": self.weights, "version": self.version, "random_weights": self.random_weights}


class ImageEncoder(abc.ABC):
    """Maps images to L2-normalised float32 embeddings of shape (N, dim)."""

    info: BackendInfo
    dim: int

    @abc.abstractmethod
    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Embed a batch of RGB PIL images; rows are L2-normalised float32."""


class TextImageEncoder(ImageEncoder):
    """An image encoder with a text tower in the same space (CLIP)."""

    @abc.abstractmethod
    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts; rows are L2-normalised float32."""

    def clip_scores(self, images: Sequence[Image.Image], texts: Sequence[str]) -> np.ndarray:
        """Raw cosine similarity of each image with its paired text (CLIP-T before any scaling), shape (N,).

        torchmetrics' ``CLIPScore`` on the same model and pairs equals ``100 * max(mean(scores), 0)``.
        """
        import numpy as np

        if len(images) != len(texts):
            raise ValueError(f"{len(images)} images but {len(texts)} texts")
        return np.sum(self.embed_images(images) * self.embed_texts(texts), axis=1).astype(np.float32)


@dataclass
class FaceResult:
    """Faces found in one image; ``embedding`` is the largest face's identity vector (None when no face)."""

    num_faces: int
    box: tuple[float, float, float, float] | None = None  # x1, y1, x2, y2 of the largest face
    score: float | None = None
    embedding: np.ndarray | None = None
    all_boxes: list[tuple[float, float, float, float, float]] = field(default_factory=list)  # x1,y1,x2,y2,score


class FaceEncoder(abc.ABC):
    """Detects faces and embeds the largest one (identity embedding, L2-normalised)."""

    info: BackendInfo
    dim: int

    @abc.abstractmethod
    def faces(self, images: Sequence[Image.Image]) -> list[FaceResult]:
        """One :class:`FaceResult` per image."""


@dataclass
class Detections:
    """Objects found in one image: boxes (N, 4) x1y1x2y2 pixels, scores (N,), COCO label names (N)."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: list[str]


class Detector(abc.ABC):
    """Object detector returning COCO-labelled boxes."""

    info: BackendInfo

    @abc.abstractmethod
    def detect(self, images: Sequence[Image.Image]) -> list[Detections]:
        """One :class:`Detections` per image."""


class SafetyClassifier(abc.ABC):
    """Scores stored image embeddings for unsafe (NSFW) content: 0 safe .. 1 unsafe, one score per row."""

    info: BackendInfo

    @abc.abstractmethod
    def score(self, embeddings: np.ndarray) -> np.ndarray:
        """Scores (float32, in [0, 1]) of L2-normalised embeddings of shape (N, dim)."""


ENCODERS: Registry[Any] = Registry("encoder")
DETECTORS: Registry[Any] = Registry("detector")
SAFETY_CLASSIFIERS: Registry[Any] = Registry("safety classifier")


def get_encoder(name: str, **kwargs: Any) -> ImageEncoder | FaceEncoder:
    """Build the encoder registered as ``name`` (loading weights now; fails fast when they are missing)."""
    return ENCODERS.get(name)(**kwargs)


def get_detector(name: str, **kwargs: Any) -> Detector:
    """Build the detector registered as ``name`` (loading weights now; fails fast when they are missing)."""
    return DETECTORS.get(name)(**kwargs)


def get_safety_classifier(name: str, **kwargs: Any) -> SafetyClassifier:
    """Build the safety classifier registered as ``name`` (loading weights now; fails fast when they are missing)."""
    return SAFETY_CLASSIFIERS.get(name)(**kwargs)
