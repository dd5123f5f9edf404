"""The contract between the harness and a generator under evaluation.

A benchmark yields :class:`Sample` s (a group's references, its target and a prompt). The runner turns each sample and
seed into a :class:`GenerationRequest`; a :class:`Generator` takes a batch of requests and returns one
:class:`GenerationResult` per request, in order. Each request carries its own seed, and generators build one
``torch.Generator`` per request from it; nothing sets a global seed, so the same request and seed give the same
image. Sharing a pipeline call with other requests changes at most the float rounding of batched kernels (within one
grey level in the tests); sampling models default to one request per call, which makes every image bit-identical
across runs.

Third-party generators subclass :class:`Generator` and register under the entry-point group ``mrbench.models``.
"""

from __future__ import annotations

import abc
import hashlib
import io
import json
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

from PIL import Image

from mrbench.config import ConfigError, from_dict, to_dict
from mrbench.evaluation.config import PROFILES


@dataclass(frozen=True)
class ImageRef:
    """A real image known by id, loaded on demand (benchmarks never hold a whole split's pixels).

    Attributes:
        id: Stable image id (release row id, or ``subject/file`` for folder benchmarks).
        group: The group the image belongs to.
        loader: Returns the image as RGB.
        size: Returns the ``(width, height)`` the image declares, without decoding it (None: unknown).
    """

    id: str
    group: str
    loader: Callable[[], Image.Image] = field(compare=False, hash=False, repr=False)
    size: Callable[[], tuple[int, int]] | None = field(default=None, compare=False, hash=False, repr=False)

    def load(self) -> Image.Image:
        return self.loader()


@dataclass
class Sample:
    """One benchmark item: references, target, prompt.

    Attributes:
        id: Unique within the benchmark.
        group: Group (subject) id; metrics are averaged per group first.
        split: ``held_in`` / ``held_out`` for MRBench, ``test`` for DreamBench.
        prompt: The text prompt given to generators and scored by CLIP-T (MRBench: the target's caption with every
            tag mention replaced by its noun; empty for image-only prompting).
        references: The group's reference images (what a generator may see).
        target: The held-out image generations are compared with (never shown to generators).
        class_token: Class noun of the subject (``dog``), for DreamBooth-style prompts.
        identifier_prompt: The prompt with the rare identifier (``a sks dog in the snow``), used by per-group
            fine-tuned generators; empty when the benchmark has none.
        category: Free-form category (celebrity, object, live, ...).
        caption: The text CLIP-T scores against when it is not the prompt (image-only prompting: COCO's caption, as
            IP-Adapter's CLIP-T scores the caption of the image prompt); empty: the prompt.
    """

    id: str
    group: str
    split: str
    prompt: str
    references: list[ImageRef]
    target: ImageRef | None
    class_token: str = ""
    identifier_prompt: str = ""
    category: str = ""
    caption: str = ""

    @property
    def score_text(self) -> str:
        """What CLIP-T compares a generation with: the caption when it has one, else the prompt."""
        return self.caption or self.prompt

    def real_images(self) -> list[ImageRef]:
        """The sample's real images: its references, then its target (when it has one)."""
        return [*self.references, *([self.target] if self.target else [])]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "group": self.group, "split": self.split, "prompt": self.prompt,
            "references": [r.id for r in self.references], "target": self.target.id if self.target else None,
            "class_token": self.class_token, "identifier_prompt": self.identifier_prompt, "category": self.category,
            **({"caption": self.caption} if self.caption else {}),  # only when set: older fingerprints stay valid
        }


@dataclass
class GenerationRequest:
    """Generate one image for ``sample`` from ``seed``."""

    sample: Sample
    seed: int

    @property
    def key(self) -> tuple[str, int]:
        return (self.sample.id, self.seed)


@dataclass
class GenerationResult:
    """The answer to one request.

    Attributes:
        image: The generated image (None when ``status`` is not ``ok``).
        status: ``ok`` or a named failure reason (``no_candidate``, ``generation_error``, ...).
        error_message: Human-readable detail for failures.
        source_id: For rows that return a real image (reference/chance), the id of that image; metrics against the
            references leave that image out (:func:`scored_references`).
        info: Small JSON-able extras recorded with the row.
    """

    image: Image.Image | None
    status: str = "ok"
    error_message: str = ""
    source_id: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def failed(cls, status: str, message: str) -> "GenerationResult":
        return cls(image=None, status=status, error_message=message)


def scored_references(sample: Sample, source_id: str | None) -> list[ImageRef]:
    """The references a row is scored against: the sample's, less the real image the row returned (leave-one-out
    ceiling). Metrics use it and the row records it as ``reference_ids``."""
    return [r for r in sample.references if r.id != source_id]


class Generator(abc.ABC):
    """Base class of every model adapter.

    Subclasses set ``config_cls`` (a dataclass of their options; unknown options are rejected before any work) and
    implement :meth:`generate`. Heavy weights load in ``__init__`` so that missing weights fail before the run starts
    (:class:`~mrbench.backends.base.MissingWeightsError`).

    A model's tiny random variant is a separate class and registry entry (``easyref-tiny``), made by
    :func:`mrbench.baselines.tiny.tiny_model`: it overrides the hooks that locate and load weights with seeded
    in-process builders, sets :attr:`random_weights` and its own :attr:`option_defaults`. Model code never asks which
    profile it runs under.

    Args:
        profile: The run's profile (``default`` or ``tiny``), recorded in :meth:`describe`; a tiny random variant is
            the tiny profile whatever it is given.
        **options: Values for ``config_cls``.
    """

    name: ClassVar[str] = ""
    config_cls: ClassVar[type] = dict  # overridden by subclasses with a dataclass
    default_batch_size: ClassVar[int] = 1  # requests per generate() call unless the run says otherwise
    # True for generators whose weights are random (the tiny variants); travels into every row.
    random_weights: ClassVar[bool] = False
    # Option defaults under the options given (the tiny variants sample a few steps instead of the paper's 30, so a
    # run of the README's tiny examples takes seconds). Keys the generator's config does not have are ignored; the
    # options used are recorded in the run folder as always.
    option_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, profile: str = "default", **options: Any) -> None:
        if profile not in PROFILES:
            raise ConfigError(f"profile must be one of {PROFILES}, got {profile!r}")
        # A tiny variant carries its profile as a class attribute (tiny_model); other generators take the run's.
        self.profile: str = getattr(type(self), "profile", profile)
        # A folder the runner gives the generator for its own artefacts (e.g. per-group adapters); None outside runs.
        self.work_dir: Path | None = None
        if not is_dataclass(self.config_cls):
            raise TypeError(f"{type(self).__name__}.config_cls must be a dataclass")
        names = {f.name for f in fields(self.config_cls)}
        defaults = {k: v for k, v in self.option_defaults.items() if k in names}
        self.config = from_dict(self.config_cls, {**defaults, **options})
        if hasattr(self.config, "validate"):
            self.config.validate()

    @property
    def steps(self) -> int | None:
        """Sampling steps (None for rows that do not sample)."""
        return getattr(self.config, "num_inference_steps", None)

    @property
    def guidance(self) -> float | None:
        """Classifier-free guidance scale (None for rows that do not sample)."""
        return getattr(self.config, "guidance_scale", None)

    def prepare(self, samples: Sequence[Sample]) -> None:
        """Called once with every sample of the run before generation (e.g. to index a pool of real images)."""

    @abc.abstractmethod
    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """One result per request, in order; each request's image depends only on the request and its seed."""

    def weights(self) -> dict[str, Any]:
        """Which weights the generator uses (ids, paths, or the tiny configs and seeds)."""
        return {}

    def describe(self) -> dict[str, Any]:
        """Name, profile, options, weights, random-weights flag: recorded in the run folder."""
        return {
            "name": self.name, "class": f"{type(self).__module__}:{type(self).__qualname__}", "profile": self.profile,
            "options": to_dict(self.config), "weights": self.weights(), "random_weights": self.random_weights,
        }


def options_hash(name: str, profile: str, options: dict[str, Any]) -> str:
    """Short stable hash of a generator's identity and options (cache keys, run folder names)."""
    blob = json.dumps({"name": name, "profile": profile, "options": options}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def image_bytes(image: Image.Image) -> bytes:
    """Lossless PNG bytes of ``image`` (what the cache and run folders store)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()
