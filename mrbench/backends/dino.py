"""DINO image encoders via transformers: DINOv2 (``dino``, default ``facebook/dinov2-small``, the paper's DINOv2-Small),
DINO v1 ViT-S/16 (``dino-v1``, ``facebook/dino-vits16``, the DreamBench convention) and tiny random ones (``dino-tiny``).

Embedding: the CLS token of the last layer after the final LayerNorm (DINOv2: ``pooler_output``; DINO v1:
``last_hidden_state[:, 0]``), L2-normalised.

Preprocessing (deterministic; the DINO repositories' evaluation transform, which is also what DINOv2's Hugging Face
processor does): ``convert("RGB")``, resize the shorter side to 256 (bicubic, antialiased), centre crop 224, scale to
[0, 1], normalise with ImageNet mean (0.485, 0.456, 0.406) / std (0.229, 0.224, 0.225). For DINO v1 this deliberately
differs from the ``facebook/dino-vits16`` hub processor (a plain 224x224 resize that distorts the aspect ratio).
Tiny models use the same recipe at their own input size (resize = 8/7 of the crop).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from mrbench.backends import weights as W
from mrbench.backends.base import BackendInfo
from mrbench.backends.torch_common import TorchImageEncoder, TorchOptions, pkg_version, place, random_info, seeded

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

TINY_DINOV2_CFG: dict[str, Any] = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                                   "intermediate_size": 64, "image_size": 56, "patch_size": 14}
TINY_DINOV1_CFG: dict[str, Any] = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                                   "intermediate_size": 64, "image_size": 32, "patch_size": 8}


def dino_transform(resize: int = 256, crop: int = 224) -> Any:
    """The DINO evaluation transform: shorter side -> ``resize`` (bicubic), centre crop ``crop``, ImageNet norm."""
    from torchvision import transforms as T

    return T.Compose([
        T.Resize(resize, interpolation=T.InterpolationMode.BICUBIC, antialias=True),
        T.CenterCrop(crop),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


@dataclass
class DinoConfig(TorchOptions):
    """Options of the DINO encoders.

    Attributes:
        model: Hub id (looked up in local caches only) or a local folder with ``config.json`` + weights.
        resize: Shorter side before the crop.
        crop: Centre crop size (the model's input size).
    """

    model: str = "facebook/dinov2-small"
    resize: int = 256
    crop: int = 224


def _hf_classes(variant: str) -> tuple[Any, Any, dict[str, Any]]:
    """The transformers model and config classes of a DINO variant, and the model's construction options."""
    import transformers

    if variant == "v2":
        return transformers.Dinov2Model, transformers.Dinov2Config, {}
    # DINO v1 has no pooler: the embedding is the layer-normed CLS token of last_hidden_state.
    return transformers.ViTModel, transformers.ViTConfig, {"add_pooling_layer": False}


class _DinoBase(TorchImageEncoder):
    variant: str = "v2"

    def _setup(self, model: torch.nn.Module, resize: int, crop: int) -> None:
        self.model = place(model, self.options)
        self._transform = dino_transform(resize, crop)
        self.dim = int(model.config.hidden_size)

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return self._transform(image)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=pixels)
        # DINOv2's pooler_output is the layer-normed CLS token; ViTModel's last_hidden_state is already layer-normed.
        return out.pooler_output if self.variant == "v2" else out.last_hidden_state[:, 0]


class _PretrainedDino(_DinoBase):
    """A DINO checkpoint loaded from a local folder or cache; subclasses name the variant and its defaults."""

    name: str
    family: str
    config_cls: type[DinoConfig]

    def __init__(self, **kwargs: Any) -> None:
        self.options = self.config = cfg = self.config_cls(**kwargs)
        path = W.resolve_hf_model_dir(cfg.model, what=f"{self.family} {cfg.model}",
                                      how=W.hf_model_how(cfg.model, "a saved transformers checkpoint"))
        model_cls, _, options = _hf_classes(self.variant)
        self._setup(W.load_hf_pretrained(model_cls, path, **options), cfg.resize, cfg.crop)
        self.info = BackendInfo(name=self.name, weights=f"{cfg.model} ({path})", version=pkg_version("transformers", "torch"))


@dataclass
class DinoV1Config(DinoConfig):
    model: str = "facebook/dino-vits16"


class Dinov2Encoder(_PretrainedDino):
    """DINOv2 CLS embedding (default ``facebook/dinov2-small``, 384-d)."""

    variant, name, family, config_cls = "v2", "dino", "DINOv2", DinoConfig


class DinoV1Encoder(_PretrainedDino):
    """DINO v1 ViT-S/16 CLS embedding (``facebook/dino-vits16``, 384-d), as DreamBench's DINO score uses."""

    variant, name, family, config_cls = "v1", "dino-v1", "DINO v1", DinoV1Config


@dataclass
class TinyDinoConfig(TorchOptions):
    """Options of the tiny random DINO.

    Attributes:
        seed: Seeds the weights.
        variant: ``v2`` (a ``Dinov2Model``) or ``v1`` (a ``ViTModel``, DINO v1's architecture).
        model_cfg: Overrides of :data:`TINY_DINOV2_CFG` / :data:`TINY_DINOV1_CFG`.
    """

    seed: int = 0
    variant: str = "v2"
    model_cfg: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.variant not in ("v1", "v2"):
            raise ValueError(f"variant must be 'v1' or 'v2', got {self.variant!r}")


class TinyDinoEncoder(_DinoBase):
    """A tiny random DINO (v2 by default, 32-d), seeded; exercises the ``dino`` / ``dino-v1`` code path."""

    def __init__(self, **kwargs: Any) -> None:
        self.options = self.config = cfg = TinyDinoConfig(**kwargs)
        self.variant = cfg.variant
        base = TINY_DINOV2_CFG if cfg.variant == "v2" else TINY_DINOV1_CFG
        model_cfg = {**base, **cfg.model_cfg}
        model_cls, config_cls, options = _hf_classes(cfg.variant)
        with seeded(cfg.seed):
            model = model_cls(config_cls(**model_cfg), **options)
        crop = model_cfg["image_size"]
        self._setup(model, resize=crop * 8 // 7, crop=crop)
        self.info = random_info("dino-tiny", {"variant": cfg.variant, **model_cfg}, cfg.seed, "transformers", "torch")
