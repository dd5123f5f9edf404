"""Model backends shared by curation and evaluation: image/text encoders, face encoders, object detectors.

Use :func:`get_encoder` / :func:`get_detector`; entries are registered lazily (``module:Class`` strings) so
importing this package imports no model library.
"""

from mrbench.backends.base import (
    DETECTORS,
    ENCODERS,
    BackendInfo,
    Detections,
    Detector,
    FaceEncoder,
    FaceResult,
    ImageEncoder,
    MissingWeightsError,
    TextImageEncoder,
    get_detector,
    get_encoder,
)

__all__ = [
    "DETECTORS", "ENCODERS", "BackendInfo", "Detections", "Detector", "FaceEncoder", "FaceResult",
    "ImageEncoder", "MissingWeightsError", "TextImageEncoder", "get_detector", "get_encoder",
]
