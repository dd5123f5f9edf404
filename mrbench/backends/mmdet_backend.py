"""Object detection via mmdet: Co-DETR (``mmdet``, the paper's detector) and a tiny random mmdet detector
(``mmdet-tiny``, a RetinaNet built from a config dict) that runs through the same mmdet code.

mmdet is an optional install (``make install-mmdet``: mmcv 2.1.0 built from source once and cached as a wheel under
``~/.cache/mrbench/wheels``, then mmengine and mmdet 3.3.0). Without it these backends fail at construction, before
any work, saying how to install it.

Co-DETR is not part of the mmdet wheel: it lives in the mmdetection repository's ``projects/CO-DETR``. The backend
needs that repository (``code_dir``, put on ``sys.path`` so the config's ``custom_imports`` resolve), a Co-DETR
config file and its checkpoint. Checkpoints load with ``torch.load(weights_only=True)`` (or from ``.safetensors``).

Preprocessing: the config's own test pipeline (for Co-DETR a keep-ratio resize, e.g. to fit 2048x1280 in the 5-scale
Co-DINO configs; ImageNet mean/std and padding in the model's data preprocessor), deterministic; images are handed over
as arrays in the BGR order mmdet configs expect. Batches of ``batch_size`` go through one ``test_step``. Results are taken from
``pred_instances`` (boxes in original pixels), kept when score >= ``threshold``; labels are COCO names.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from PIL import Image

from mrbench.backends import weights as W
from mrbench.backends.base import BackendInfo, Detections, Detector
from mrbench.backends.coco import COCO_CLASSES
from mrbench.backends.torch_common import TorchOptions, batched, pkg_version, resolve_device, seeded, to_rgb

INSTALL_HINT = ("mmdet is not installed (it is optional): run `make install-mmdet` (builds mmcv 2.1.0 from source once, "
                "~20-40 min on 2 cores, cached in ~/.cache/mrbench/wheels; then installs mmengine and mmdet 3.3.0).")

CODETR_CONFIG = "co_dino_5scale_swin_l_16xb1_16e_o365tococo.py"
CODETR_CHECKPOINT = "co_dino_5scale_swin_large_16e_o365tococo-614254c9.pth"


class MMDetUnavailableError(ImportError):
    """mmdet (with mmcv and mmengine) is not importable; the message says how to install it."""


def require_mmdet() -> None:
    """Fail fast, with the install command, when mmdet/mmcv/mmengine cannot be imported."""
    try:
        import mmcv  # noqa: F401
        import mmdet  # noqa: F401
        import mmengine  # noqa: F401
    except ImportError as e:
        raise MMDetUnavailableError(f"{INSTALL_HINT} (import failed: {e})") from e
    except AssertionError as e:  # mmdet asserts the mmcv/mmengine version range at import
        raise MMDetUnavailableError(f"{INSTALL_HINT} ({e})") from e


@dataclass
class MMDetConfig(TorchOptions):
    """Options of the mmdet (Co-DETR) detector.

    Attributes:
        config: Co-DETR config file (default: ``CODETR_CONFIG`` looked up in ``code_dir/projects/CO-DETR/configs/
            codino`` and ``$MRBENCH_WEIGHTS_DIR/mmdet``).
        checkpoint: Checkpoint file (``.pth`` state dict or ``.safetensors``; default ``CODETR_CHECKPOINT`` in
            ``$MRBENCH_WEIGHTS_DIR/mmdet`` or the torch hub cache).
        code_dir: A checkout of the mmdetection repository (for ``projects/CO-DETR``); default
            ``$MRBENCH_WEIGHTS_DIR/mmdetection``.
        threshold: Minimum score of a kept box.
        batch_size: Images per ``test_step`` (16; lower it for Co-DETR's 5-scale Swin-L on small GPUs).
        dtype: Only ``float32``.
    """

    config: str | None = None
    checkpoint: str | None = None
    code_dir: str | None = None
    threshold: float = 0.3

    def __post_init__(self) -> None:
        super().__post_init__()
        _float32_only(self.dtype)


def _float32_only(dtype: str) -> None:
    if dtype != "float32":
        raise ValueError(f"the mmdet backends run in float32 (got dtype={dtype!r})")


class _MMDetBase(Detector):
    options: TorchOptions

    def _setup(self, model: Any, cfg: Any, threshold: float) -> None:
        from mmcv.transforms import Compose

        pipeline = [dict(p) for p in cfg.test_dataloader.dataset.pipeline]
        pipeline[0] = dict(type="mmdet.LoadImageFromNDArray")  # we hand over arrays, not files
        self._pipeline = Compose(pipeline)
        self.model = model.to(resolve_device(self.options.device)).eval()
        self.threshold = threshold
        classes = (getattr(model, "dataset_meta", None) or {}).get("classes") or COCO_CLASSES
        self.classes = tuple(classes)

    def detect(self, images: Sequence[Image.Image]) -> list[Detections]:
        """Detect objects in batches; boxes are x1, y1, x2, y2 in original pixels, labels COCO names."""
        import torch

        out: list[Detections] = []
        with torch.inference_mode():
            for chunk in batched(list(images), self.options.batch_size):
                items = [self._pipeline({"img": np.ascontiguousarray(np.asarray(to_rgb(im))[:, :, ::-1]), "img_id": i})
                         for i, im in enumerate(chunk)]
                data = {"inputs": [d["inputs"] for d in items], "data_samples": [d["data_samples"] for d in items]}
                for sample in self.model.test_step(data):
                    inst = sample.pred_instances
                    scores = inst.scores.float().cpu().numpy()
                    keep = scores >= self.threshold
                    out.append(Detections(
                        boxes=inst.bboxes.float().cpu().numpy()[keep].astype(np.float32).reshape(-1, 4),
                        scores=scores[keep].astype(np.float32),
                        labels=[self.classes[int(i)] for i in inst.labels.cpu().numpy()[keep]],
                    ))
        return out


@contextlib.contextmanager
def _quiet_mmengine() -> Iterator[None]:
    """mmengine logs every parameter's initialisation at INFO; keep model building quiet."""
    from mmengine.logging import MMLogger

    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def load_state_dict_safely(path: Path) -> dict[str, Any]:
    """A checkpoint's state dict: safetensors, else ``torch.load(weights_only=True)`` (never arbitrary pickles)."""
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError (or RuntimeError) for objects outside the safe list
        raise ValueError(
            f"{path} cannot be loaded with torch.load(weights_only=True) ({type(e).__name__}: {e}). Convert it once, "
            f"on a machine where you trust the file, to safetensors: "
            f"safetensors.torch.save_file(torch.load(p, weights_only=False)['state_dict'], 'model.safetensors')."
        ) from e
    return ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else ckpt


class MMDetDetector(_MMDetBase):
    """Co-DETR (mmdet 3.x ``projects/CO-DETR``) on COCO labels; needs ``make install-mmdet`` + config + checkpoint."""

    def __init__(self, **kwargs: Any) -> None:
        self.options = self.config = cfg = MMDetConfig(**kwargs)
        require_mmdet()
        code_dir, config_path, ckpt_path = self._resolve(cfg)
        from mmdet.registry import MODELS
        from mmengine.config import Config
        from mmengine.model import revert_sync_batchnorm
        from mmengine.registry import init_default_scope
        from mmengine.runner.checkpoint import _load_checkpoint_to_model

        if code_dir is not None and str(code_dir) not in sys.path:
            sys.path.insert(0, str(code_dir))  # so custom_imports=['projects.CO-DETR.codetr'] resolve
        mm_cfg = Config.fromfile(str(config_path))
        if "init_cfg" in mm_cfg.model.get("backbone", {}):
            mm_cfg.model.backbone.init_cfg = None  # as mmdet's init_detector: no pretrained-backbone download
        init_default_scope(mm_cfg.get("default_scope", "mmdet"))
        with _quiet_mmengine():
            model = revert_sync_batchnorm(MODELS.build(mm_cfg.model))
            _load_checkpoint_to_model(model, load_state_dict_safely(ckpt_path), strict=False)
        model.cfg = mm_cfg
        model.dataset_meta = {"classes": COCO_CLASSES}
        self._setup(model, mm_cfg, cfg.threshold)
        self.info = BackendInfo(name="mmdet", weights=f"{config_path.name} + {ckpt_path}",
                                version=pkg_version("mmdet", "mmcv", "mmengine", "torch"))

    @staticmethod
    def _resolve(cfg: MMDetConfig) -> tuple[Path | None, Path, Path]:
        mirror = W.mirror_dir()
        code_dir = Path(cfg.code_dir).expanduser() if cfg.code_dir else (mirror / "mmdetection" if mirror else None)
        how = (f"pass config=PATH (projects/CO-DETR/configs/codino/{CODETR_CONFIG} of a mmdetection checkout), "
               f"checkpoint=PATH ({CODETR_CHECKPOINT}, from the Co-DETR README's model zoo) and code_dir=MMDETECTION_REPO, "
               f"or place them under $MRBENCH_WEIGHTS_DIR/mmdet/ and $MRBENCH_WEIGHTS_DIR/mmdetection/.")
        looked: list[str] = []
        if cfg.config:
            config_candidates = [Path(cfg.config).expanduser()]
        else:
            config_candidates = ([code_dir / "projects" / "CO-DETR" / "configs" / "codino" / CODETR_CONFIG] if code_dir else []) + (
                [mirror / "mmdet" / CODETR_CONFIG] if mirror else [])
        config_path = W.first_existing(config_candidates)
        looked += [str(p) for p in config_candidates] or [f"(no config given; {CODETR_CONFIG} not searched: set code_dir)"]
        if cfg.checkpoint:
            ckpt_candidates = [Path(cfg.checkpoint).expanduser()]
        else:
            ckpt_candidates = ([mirror / "mmdet" / CODETR_CHECKPOINT] if mirror else []) + [
                W.torch_hub_checkpoints_dir() / CODETR_CHECKPOINT]
        ckpt_path = W.first_existing(ckpt_candidates)
        looked += [str(p) for p in ckpt_candidates]
        if config_path is None or ckpt_path is None:
            raise W.missing_weights(f"Co-DETR ({CODETR_CONFIG} + {CODETR_CHECKPOINT})", looked, how)
        return (code_dir if code_dir and code_dir.is_dir() else None), config_path, ckpt_path


def tiny_mmdet_config(image_size: int = 64, score_thr: float = 0.0) -> dict[str, Any]:
    """An mmdet config dict for a tiny RetinaNet (ResNet-18 layout at 8 base channels, FPN 16, 80 COCO classes)."""
    return dict(
        default_scope="mmdet",
        model=dict(
            type="RetinaNet",
            data_preprocessor=dict(type="DetDataPreprocessor", mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                                   bgr_to_rgb=True, pad_size_divisor=32),
            backbone=dict(type="ResNet", depth=18, base_channels=8, num_stages=4, out_indices=(1, 2, 3),
                          frozen_stages=-1, norm_cfg=dict(type="BN", requires_grad=True), norm_eval=True, style="pytorch"),
            neck=dict(type="FPN", in_channels=[16, 32, 64], out_channels=16, start_level=0, add_extra_convs="on_input",
                      num_outs=5),
            bbox_head=dict(
                type="RetinaHead", num_classes=80, in_channels=16, stacked_convs=1, feat_channels=16,
                anchor_generator=dict(type="AnchorGenerator", octave_base_scale=4, scales_per_octave=1,
                                      ratios=[0.5, 1.0, 2.0], strides=[8, 16, 32, 64, 128]),
                bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4, target_stds=[1.0] * 4),
                loss_cls=dict(type="FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
                loss_bbox=dict(type="L1Loss", loss_weight=1.0)),
            test_cfg=dict(nms_pre=100, min_bbox_size=0, score_thr=score_thr, nms=dict(type="nms", iou_threshold=0.5),
                          max_per_img=20),
        ),
        test_dataloader=dict(dataset=dict(pipeline=[
            dict(type="LoadImageFromFile"),
            dict(type="Resize", scale=(image_size, image_size), keep_ratio=True),
            dict(type="PackDetInputs", meta_keys=("img_id", "img_path", "ori_shape", "img_shape", "scale_factor")),
        ])),
    )


@dataclass
class TinyMMDetConfig(TorchOptions):
    """Options of the tiny random mmdet detector.

    Attributes:
        seed: Seeds the weights (``init_weights`` runs inside a seeded block).
        threshold: Minimum score of a kept box (random focal-loss heads start near 0.01).
        image_size: Longer side of the test-time resize (keep ratio).
        config_overrides: Merged into :func:`tiny_mmdet_config` (mmengine ``Config.merge_from_dict`` keys).
    """

    seed: int = 0
    threshold: float = 0.0
    image_size: int = 64
    config_overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        _float32_only(self.dtype)


class TinyMMDetDetector(_MMDetBase):
    """A tiny random mmdet RetinaNet built from a config dict, seeded; exercises the ``mmdet`` code path."""

    def __init__(self, **kwargs: Any) -> None:
        self.options = self.config = cfg = TinyMMDetConfig(**kwargs)
        require_mmdet()
        from mmengine.config import Config
        from mmengine.registry import init_default_scope
        from mmdet.registry import MODELS

        mm_cfg = Config(tiny_mmdet_config(cfg.image_size))
        if cfg.config_overrides:
            mm_cfg.merge_from_dict(cfg.config_overrides)
        init_default_scope("mmdet")
        with seeded(cfg.seed), _quiet_mmengine():
            model = MODELS.build(mm_cfg.model)
            model.init_weights()
        model.cfg = mm_cfg
        model.dataset_meta = {"classes": COCO_CLASSES}
        self._setup(model, mm_cfg, cfg.threshold)
        self.info = BackendInfo(name="mmdet-tiny", weights=f"random(seed={cfg.seed}, RetinaNet-tiny {cfg.image_size}px)",
                                version=pkg_version("mmdet", "mmcv", "mmengine", "torch"), random_weights=True)
