"""Small in-memory samples for the generator tests (a unique module name, imported by the tests)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from mrbench.evaluation.generator import GenerationRequest, ImageRef, Sample


def photo(seed: int, size: int = 64, colour: tuple[int, int, int] = (200, 40, 40)) -> Image.Image:
    """A seeded photo-like image: a coloured disc on a smooth random background."""
    rng = np.random.default_rng(seed)
    im = Image.fromarray(rng.integers(120, 256, (size // 8, size // 8, 3), dtype=np.uint8)).resize((size, size), Image.BICUBIC)
    o = int(rng.integers(4, 16))
    ImageDraw.Draw(im).ellipse([o, o, size - o, size - o], fill=colour)
    return im


def make_sample(group: str = "toy", n_refs: int = 3, seed: int = 0, prompt: str = "a red toy on a table",
                class_token: str = "toy") -> Sample:
    """A sample whose references and target are distinct seeded images (ids unique per image)."""
    images = [photo(seed * 100 + k) for k in range(n_refs + 1)]
    refs = [ImageRef(f"{group}/{seed}/{k}", group, (lambda im=im: im)) for k, im in enumerate(images[1:])]
    target = ImageRef(f"{group}/{seed}/target", group, lambda: images[0])
    return Sample(id=f"{group}/{seed}", group=group, split="test", prompt=prompt, references=refs, target=target,
                  class_token=class_token, identifier_prompt=f"a sks {class_token} on a table")


def request(sample: Sample, seed: int = 0) -> GenerationRequest:
    return GenerationRequest(sample, seed)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)
