"""Object detection via transformers RT-DETR (``rtdetr``, the light default, COCO) and a tiny random RT-DETR
(``rtdetr-tiny``). Co-DETR through mmdet lives in :mod:`mrbench.backends.mmdet_backend`.

Preprocessing (deterministic, the checkpoint's ``RTDetrImageProcessor``): ``convert("RGB")``, resize to 640x640
(bilinear, aspect ratio not kept, as RT-DETR was trained), scale to [0, 1], no mean/std normalisation. Outputs:
``post_process_object_detection`` (sigmoid scores, top queries, boxes scaled back to the original pixels) keeping
scores >= ``threshold``; labels are COCO names from the checkpoint's ``id2label``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from mrbench.backends import weights as W
from mrbench.backends.base import BackendInfo, Detections, Detector
from mrbench.backends.coco import COCO_CLASSES
from mrbench.backends.torch_common import TorchOptions, batched, pkg_version, place, random_info, seeded, to_rgb

TINY_RTDETR_CFG: dict[str, Any] = {
    "backbone_config": {"embedding_size": 8, "hidden_sizes": [8, 16, 32, 64], "depths": [1, 1, 1, 1],
                        "layer_type": "basic", "out_features": ["stage2", "stage3", "stage4"]},
    "encoder_in_channels": [16, 32, 64], "encoder_hidden_dim": 16, "encoder_ffn_dim": 32, "encoder_attention_heads": 2,
    "d_model": 16, "decoder_in_channels": [16, 16, 16], "decoder_ffn_dim": 32, "decoder_attention_heads": 2,
    "decoder_layers": 1, "num_queries": 20, "num_denoising": 0, "image_size": 64,
    # Random class logits start near this prior: 0.5 so that a 0.5 threshold keeps about half the queries.
    "initializer_bias_prior_prob": 0.5,
}


@dataclass
class RTDetrConfig(TorchOptions):
    """Options of the RT-DETR detector.

    Attributes:
        model: Hub id (local caches only) or a local folder with the checkpoint and its preprocessor config.
        threshold: Minimum score of a kept box.
    """

    model: str = "PekingU/rtdetr_r50vd"
    threshold: float = 0.5


class _HFDetector(Detector):
    options: TorchOptions

    def _setup(self, model: torch.nn.Module, processor: Any, threshold: float) -> None:
        self.model = place(model, self.options)
        self.processor = processor
        self.threshold = threshold
        self.id2label = {int(k): v for k, v in model.config.id2label.items()}

    def detect(self, images: Sequence[Image.Image]) -> list[Detections]:
        """Detect objects in batches; boxes are x1, y1, x2, y2 in original pixels, labels COCO names."""
        out: list[Detections] = []
        device, dtype = self.options.torch_device, self.options.torch_dtype
        with torch.inference_mode():
            for chunk in batched([to_rgb(im) for im in images], self.options.batch_size):
                pixels = self.processor(images=list(chunk), return_tensors="pt")["pixel_values"]
                raw = self.model(pixel_values=pixels.to(device=device, dtype=dtype))
                raw.logits, raw.pred_boxes = raw.logits.float(), raw.pred_boxes.float()
                sizes = [(im.height, im.width) for im in chunk]
                for r in self.processor.post_process_object_detection(raw, threshold=self.threshold, target_sizes=sizes):
                    out.append(Detections(
                        boxes=r["boxes"].cpu().numpy().astype(np.float32).reshape(-1, 4),
                        scores=r["scores"].cpu().numpy().astype(np.float32),
                        labels=[self.id2label.get(int(i), str(int(i))) for i in r["labels"].cpu().tolist()],
                    ))
        return out


class RTDetrDetector(_HFDetector):
    """RT-DETR (transformers), COCO boxes/scores/labels; default ``PekingU/rtdetr_r50vd``."""

    def __init__(self, **kwargs: Any) -> None:
        from transformers import RTDetrForObjectDetection, RTDetrImageProcessor

        self.options = self.config = cfg = RTDetrConfig(**kwargs)
        path = W.resolve_hf_model_dir(
            cfg.model, what=f"RT-DETR {cfg.model}",
            how=W.hf_model_how(cfg.model, "a saved RTDetrForObjectDetection + preprocessor_config.json"))
        model = W.load_hf_pretrained(RTDetrForObjectDetection, path)
        processor = RTDetrImageProcessor.from_pretrained(path, local_files_only=True)
        self._setup(model, processor, cfg.threshold)
        self.info = BackendInfo(name="rtdetr", weights=f"{cfg.model} ({path})", version=pkg_version("transformers", "torch"))


@dataclass
class TinyRTDetrConfig(TorchOptions):
    """Options of the tiny random RT-DETR.

    Attributes:
        seed: Seeds the weights.
        threshold: Minimum score of a kept box (random scores start near 0.5, so about half the queries pass).
        model_cfg: Overrides of :data:`TINY_RTDETR_CFG` (``image_size`` is the processor's square input size).
    """

    seed: int = 0
    threshold: float = 0.5
    model_cfg: dict[str, Any] = field(default_factory=dict)


class TinyRTDetrDetector(_HFDetector):
    """A tiny random RT-DETR (ResNet-basic backbone, 1 decoder layer, 20 queries, 80 COCO labels), seeded."""

    def __init__(self, **kwargs: Any) -> None:
        from transformers import RTDetrConfig as HFRTDetrConfig
        from transformers import RTDetrForObjectDetection, RTDetrImageProcessor, RTDetrResNetConfig

        self.options = self.config = cfg = TinyRTDetrConfig(**kwargs)
        model_cfg = {**TINY_RTDETR_CFG, **cfg.model_cfg}
        size = model_cfg["image_size"]
        hf_cfg = {k: v for k, v in model_cfg.items() if k not in ("backbone_config", "image_size")}
        config = HFRTDetrConfig(
            backbone_config=RTDetrResNetConfig(**model_cfg["backbone_config"]), use_pretrained_backbone=False,
            id2label=dict(enumerate(COCO_CLASSES)), label2id={n: i for i, n in enumerate(COCO_CLASSES)}, **hf_cfg,
        )
        with seeded(cfg.seed):
            model = RTDetrForObjectDetection(config)
        self._setup(model, RTDetrImageProcessor(size={"height": size, "width": size}), cfg.threshold)
        self.info = random_info("rtdetr-tiny", model_cfg, cfg.seed, "transformers", "torch")
