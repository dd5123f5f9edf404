"""Model backends shared by curation and evaluation: image/text encoders, face encoders, object detectors.

Use :func:`get_encoder` / :func:`get_detector`; entries are registered lazily (``module:Class`` strings) so
importing this package imports no model library (no torch). ``mrbench ls encoders`` / ``mrbench ls detectors``
list them. Every backend takes keyword arguments (``device=None`` picks CUDA when present, ``dtype``,
``batch_size=16``; tiny ones ``seed=0``) and reports a :class:`BackendInfo` whose ``random_weights`` flag travels into
every score computed from it. Missing weights raise :class:`MissingWeightsError` at construction, before any work
(see :mod:`mrbench.backends.weights` for where weights are looked up).
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
    SAFETY_CLASSIFIERS,
    SafetyClassifier,
    TextImageEncoder,
    get_detector,
    get_encoder,
    get_safety_classifier,
)

_B = "mrbench.backends"

# kind: "text-image" (CLIP: embed_images + embed_texts), "image", "face" (FaceEncoder.faces).
ENCODERS.register("clip", f"{_B}.clip:OpenClipEncoder", kind="text-image",
                  help="CLIP via open_clip, ARCH/PRETRAINED tag or checkpoint (default ViT-L-14/openai)")
ENCODERS.register("clip-hf", f"{_B}.clip:HFClipEncoder", kind="text-image",
                  help="CLIP via transformers CLIPModel (default openai/clip-vit-large-patch14)")
ENCODERS.register("clip-tiny", f"{_B}.clip:tiny_clip_encoder", kind="text-image", random_weights=True,
                  help="tiny random CLIP, seeded (impl=open_clip|hf) [random weights]")
ENCODERS.register("dino", f"{_B}.dino:Dinov2Encoder", kind="image",
                  help="DINOv2 CLS embedding via transformers (default facebook/dinov2-small)")
ENCODERS.register("dino-v1", f"{_B}.dino:DinoV1Encoder", kind="image",
                  help="DINO v1 ViT-S/16 CLS embedding (facebook/dino-vits16, DreamBench convention)")
ENCODERS.register("dino-tiny", f"{_B}.dino:TinyDinoEncoder", kind="image", random_weights=True,
                  help="tiny random DINO, seeded (variant=v2|v1) [random weights]")
ENCODERS.register("mobilenet_v2", f"{_B}.torchvision_backend:MobileNetV2Encoder", kind="image",
                  help="torchvision MobileNetV2 ImageNet pooled features, 1280-d, multicrop views (offline weights)")
ENCODERS.register("mobilenet_v2-flip", f"{_B}.torchvision_backend:MobileNetV2FlipEncoder", kind="image",
                  help="mobilenet_v2 features, centre crop + mirror averaged (offline weights)")
ENCODERS.register("mobilenet_v2-center", f"{_B}.torchvision_backend:MobileNetV2CenterEncoder", kind="image",
                  help="mobilenet_v2 features, single centre crop (offline weights)")
ENCODERS.register("dlib", f"{_B}.dlib_face:DlibFaceEncoder", kind="face",
                  help="dlib CNN face detector + ResNet 128-d identity, largest face (offline weights)")
ENCODERS.register("insightface", f"{_B}.insightface_face:InsightFaceEncoder", kind="face",
                  help="insightface SCRFD + ArcFace 512-d, largest face (pack=antelopev2|buffalo_l, root=...)")
ENCODERS.register("insightface-tiny", f"{_B}.insightface_face:TinyInsightFaceEncoder", kind="face", random_weights=True,
                  help="tiny random insightface-shaped ONNX pack, seeded [random weights]")

DETECTORS.register("rtdetr", f"{_B}.detectors:RTDetrDetector",
                   help="RT-DETR via transformers, COCO labels (default PekingU/rtdetr_r50vd)")
DETECTORS.register("rtdetr-tiny", f"{_B}.detectors:TinyRTDetrDetector", random_weights=True,
                   help="tiny random RT-DETR, seeded [random weights]")
DETECTORS.register("mmdet", f"{_B}.mmdet_backend:MMDetDetector",
                   help="Co-DETR via mmdet (config=, checkpoint=, code_dir=; needs `make install-mmdet`)")
DETECTORS.register("mmdet-tiny", f"{_B}.mmdet_backend:TinyMMDetDetector", random_weights=True,
                   help="tiny random mmdet RetinaNet from a config dict, seeded (needs `make install-mmdet`) [random weights]")

# Safety classifiers score the stored image embeddings (``safety.classifier``); ``encoder``: the embedding they read.
SAFETY_CLASSIFIERS.register("laion-nsfw-h14", f"{_B}.nsfw:LaionNsfwH14", encoder="clip", arch="ViT-H-14",
                            help="LAION CLIP-based-NSFW-Detector MLP on CLIP ViT-H-14 (laion2b) embeddings (h14_nsfw.pth)")
SAFETY_CLASSIFIERS.register("laion-nsfw-tiny", f"{_B}.nsfw:TinyNsfwClassifier", random_weights=True,
                            help="tiny random MLP of the same shape on any embedding, seeded [random weights]")

__all__ = [
    "DETECTORS", "ENCODERS", "BackendInfo", "Detections", "Detector", "FaceEncoder", "FaceResult",
    "ImageEncoder", "MissingWeightsError", "SAFETY_CLASSIFIERS", "SafetyClassifier", "TextImageEncoder",
    "get_detector", "get_encoder", "get_safety_classifier",
]
