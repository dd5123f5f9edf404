"""Shared machinery of the torch backends: device and dtype choice, seeded construction, batched inference."""

from __future__ import annotations

import abc
import contextlib
from dataclasses import dataclass
from typing import Any, Iterator, Sequence, TypeVar

import numpy as np
import torch
from PIL import Image

from mrbench.backends.base import BackendInfo, ImageEncoder
from mrbench.provenance import package_versions

T = TypeVar("T")

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class TorchOptions:
    """Runtime options every torch backend accepts.

    Attributes:
        device: ``cuda``, ``cuda:1``, ``cpu`` ...; None picks CUDA when present, else CPU.
        dtype: Compute dtype of the model: ``float32`` (default), ``float16`` or ``bfloat16``. Embeddings are
            always returned as float32.
        batch_size: Images per forward pass.
    """

    device: str | None = None
    dtype: str = "float32"
    batch_size: int = 16

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")

    @property
    def torch_device(self) -> torch.device:
        return resolve_device(self.device)

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]


def resolve_device(device: str | None) -> torch.device:
    """``None`` -> CUDA when available, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def place(model: torch.nn.Module, options: TorchOptions) -> torch.nn.Module:
    """``model`` on the options' device and dtype, in eval mode."""
    return model.to(device=options.torch_device, dtype=options.torch_dtype).eval()


def pkg_version(*names: str) -> str:
    """``name==version`` for the installed packages among ``names`` (recorded in BackendInfo.version)."""
    return " ".join(f"{n}=={v}" for n, v in package_versions(names).items())


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch's CPU generator inside the block only; the global RNG state is restored afterwards.

    Tiny random models are built inside this block so that the same seed gives the same weights bit for bit,
    without any global seeding.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def batched(items: Sequence[T], n: int) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, as float32 (all-zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


def to_rgb(image: Image.Image) -> Image.Image:
    """Every backend sees RGB: palette, grey and alpha images are converted with PIL's ``convert("RGB")``."""
    return image if image.mode == "RGB" else image.convert("RGB")


class TorchImageEncoder(ImageEncoder):
    """An image encoder made of a per-image ``preprocess`` (PIL -> CHW tensor) and a batched ``forward``.

    Subclasses set ``self.model``, ``self.info``, ``self.dim`` and ``self.options`` and implement the two methods;
    this class does batching, device and dtype placement, ``inference_mode`` and L2 normalisation.
    """

    options: TorchOptions
    model: torch.nn.Module

    @abc.abstractmethod
    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """One RGB image -> a float CHW tensor (deterministic)."""

    @abc.abstractmethod
    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """A (B, C, H, W) batch on the model's device and dtype -> (B, dim) features (not yet normalised)."""

    def preprocess_batch(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """A batch of RGB images -> a stacked tensor; override when a processor is faster on whole batches."""
        return torch.stack([self.preprocess(im) for im in images])

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Embed RGB PIL images in batches of ``batch_size``; rows are L2-normalised float32 of shape (N, dim)."""
        if len(images) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = []
        device, dtype = self.options.torch_device, self.options.torch_dtype
        with torch.inference_mode():
            for chunk in batched(list(images), self.options.batch_size):
                pixels = self.preprocess_batch([to_rgb(im) for im in chunk]).to(device=device, dtype=dtype)
                out.append(self.forward(pixels).float().cpu().numpy())
        return l2_normalize(np.concatenate(out))


def random_info(name: str, config: Any, seed: int, *packages: str) -> BackendInfo:
    """BackendInfo of a tiny random backend: ``weights`` names the seed and the architecture config."""
    return BackendInfo(name=name, weights=f"random(seed={seed}, {config})", version=pkg_version(*packages), random_weights=True)

