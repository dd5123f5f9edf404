"""Shared machinery of the generators that take several reference images natively through a diffusers pipeline
(``flux2``, ``qwen-image-edit``, ``omnigen``).

Each of those modules only says which pipeline class it drives, how a request becomes that pipeline's call, and how
its tiny random components are built (its ``<name>-tiny`` variant, :class:`TinyMultiRefWeights`). This module does
the rest, the same way for all three:

- **Weights** come from a local diffusers folder, ``$MRBENCH_WEIGHTS_DIR/<hub id>`` or the Hugging Face cache (never
  downloaded). Every component named in ``model_index.json`` is checked before anything loads, so a partial cache
  fails before any work with :class:`~mrbench.backends.base.MissingWeightsError` naming the missing parts.
- **References**: each model documents how many references it accepts (``max_references``). A sample with more gets
  a seeded subsample -- a function of ``(reference_seed, sample id)`` only, so every seed of a sample and every model
  with the same cap see the same subset -- kept in benchmark order; what was used is recorded in the row's ``info``.
- **Randomness**: one request per pipeline call, with its own CPU ``torch.Generator`` seeded from the request's seed.
  Draws a pipeline makes from torch's global RNG (OmniGen samples its VAE posterior without a generator) are
  confined to a forked RNG seeded from the same seed, so an image depends only on its request, bit for bit on CPU,
  and the caller's global RNG is left untouched.
"""

from __future__ import annotations

import json
import random
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterator, Sequence

from PIL import Image

from mrbench.backends import weights as W  # noqa: F401  (offline mode before diffusers/transformers import)
from mrbench.backends.weights import missing_weights
from mrbench.config import ConfigError
from mrbench.evaluation.generator import GenerationRequest, GenerationResult, Generator, ImageRef, Sample

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


@dataclass
class MultiRefConfig:
    """Options shared by the native multi-reference generators (each module documents its own defaults).

    Attributes:
        model: Diffusers folder or hub id (looked up in ``$MRBENCH_WEIGHTS_DIR`` and the HF cache). None: the
            model's default repository.
        num_inference_steps: Sampling steps (None: the model card's default).
        guidance_scale: Guidance scale (None: the model card's default; what it scales is model-specific).
        height: Output height (None: 1024; the tiny variants: 32).
        width: Output width (None: as height).
        max_references: References given to the model; a sample with more gets a seeded subsample. None: the
            model's documented limit; 0: every reference.
        reference_seed: Seed of that subsample (with the sample id).
        prompt_template: How the benchmark prompt becomes the model's prompt; ``{prompt}``, ``{class_token}`` and
            (OmniGen) ``{images}`` are filled in. None: the model's default.
        device: ``cuda``, ``cpu``, ... (None: CUDA when present).
        dtype: ``bfloat16``, ``float16``, ``float32`` (None: bfloat16 on CUDA, float32 on CPU).
        offload: Use diffusers' model CPU offload (large models on one GPU).
        tiny_seed: Seed of the tiny random weights (the ``-tiny`` variants).
    """

    model: str | None = None
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    height: int | None = None
    width: int | None = None
    max_references: int | None = None
    reference_seed: int = 0
    prompt_template: str | None = None
    device: str | None = None
    dtype: str | None = None
    offload: bool = False
    tiny_seed: int = 0

    def validate(self) -> None:
        if self.num_inference_steps is not None and self.num_inference_steps < 1:
            raise ConfigError("num_inference_steps must be >= 1")
        if self.max_references is not None and self.max_references < 0:
            raise ConfigError("max_references must be >= 0 (0: every reference)")
        for side in (self.height, self.width):
            if side is not None and (side < 16 or side % 16):
                raise ConfigError("height and width must be multiples of 16")
        if self.prompt_template is not None and "{prompt}" not in self.prompt_template:
            raise ConfigError("prompt_template must contain {prompt}")


# ------------------------------------------------------------------------------------------------ references


def select_references(sample: Sample, limit: int, seed: int) -> tuple[list[ImageRef], dict[str, Any]]:
    """The references a model sees: all of them when ``limit`` is 0 or not exceeded, else a seeded subsample of
    ``limit`` (a function of ``seed`` and the sample id only), in benchmark order. Returns them and the row's
    record of the choice."""
    refs = list(sample.references)
    if limit and len(refs) > limit:
        rng = random.Random(f"mrbench-references:{seed}:{sample.id}")  # str seeds hash with sha512: stable across runs
        keep = sorted(rng.sample(range(len(refs)), limit))
        used = [refs[i] for i in keep]
        policy = f"seeded subsample of {limit} of {len(refs)} (reference_seed={seed})"
    else:
        used = refs
        policy = "all"
    return used, {"num_references": len(refs), "references_used": [r.id for r in used], "reference_policy": policy}


# ------------------------------------------------------------------------------------------------ weights


def _component_present(folder: Path) -> bool:
    """A component folder that can load: a config (or tokenizer/processor file) and, for models, a weights file."""
    if not folder.is_dir():
        return False
    files = [p for p in folder.rglob("*") if p.is_file()]  # follows HF-cache symlinks; a dangling one is absent
    names = {p.name for p in files}
    if "config.json" in names:  # a model: needs its weights too
        return any(p.name.endswith(_WEIGHT_SUFFIXES) or p.name.endswith(".index.json") for p in files)
    return bool(files)


def resolve_pipeline_dir(repo: str, *, what: str, how: str) -> Path:
    """A local diffusers folder for ``repo`` (a path, or a hub id in the mirror folder or the HF cache) whose
    ``model_index.json`` components are all present.

    Raises:
        MissingWeightsError: naming the pipeline, every place searched, the missing components and how to supply them.
    """
    from mrbench.baselines.sdxl import candidate_dirs

    candidates, looked = candidate_dirs(repo, "model_index.json")
    for c in candidates:
        index = c / "model_index.json"
        if not index.is_file():
            looked.append(f"{c} (no model_index.json)")
            continue
        try:
            spec = json.loads(index.read_text())
        except (OSError, ValueError) as e:
            looked.append(f"{index} (unreadable: {e})")
            continue
        components = [k for k, v in spec.items() if not k.startswith("_") and isinstance(v, list) and v and v[0]]
        missing = [k for k in components if not _component_present(c / k)]
        if not missing:
            return c
        looked.append(f"{c} (model_index.json present; missing or incomplete: {', '.join(missing)})")
    raise missing_weights(what, looked, how)


def resolve_device(device: str | None) -> str:
    from mrbench.baselines.sdxl import resolve_device as sdxl_device

    return sdxl_device(device)


def resolve_dtype(dtype: str | None, device: str) -> Any:
    """None -> bfloat16 on CUDA (these models are trained and released in bfloat16), float32 elsewhere."""
    from mrbench.baselines.sdxl import resolve_dtype as sdxl_dtype

    return sdxl_dtype(dtype or ("bfloat16" if device.startswith("cuda") else "float32"), device)


@contextmanager
def request_rng(seed: int, device: str) -> Iterator[Any]:
    """The request's CPU ``torch.Generator``; inside the block torch's global RNG (CPU and the pipeline's CUDA
    device) is a fork seeded from the same seed, restored afterwards."""
    import torch

    devices = [torch.device(device).index or 0] if device.startswith("cuda") else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        yield torch.Generator(device="cpu").manual_seed(int(seed))


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' warnings inside the block (diffusers' FLUX.2 text encoding passes tokenizer options the
    legacy way, which transformers 5 accepts but warns about on every call)."""
    from transformers.utils import logging as tlog

    level = tlog.get_verbosity()
    tlog.set_verbosity_error()
    try:
        yield
    finally:
        tlog.set_verbosity(level)


# ------------------------------------------------------------------------------------------------ tokenizers


def tiny_byte_llama_tokenizer(specials: Sequence[str] = (), pad_token: str | None = None) -> Any:
    """A ``LlamaTokenizer`` (sentencepiece-style BPE with byte fallback) whose vocabulary is ``<unk> <s> </s>``, the
    given special tokens and the 256 byte tokens: every text encodes offline, BOS id 1 as in Llama/Mistral/Phi-3."""
    from transformers import LlamaTokenizer

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for tok in specials:
        vocab.setdefault(tok, len(vocab))
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    vocab["\u2581"] = len(vocab)
    tok = LlamaTokenizer(vocab=vocab, merges=[], add_bos_token=True, pad_token=pad_token)
    if specials:
        tok.add_special_tokens({"additional_special_tokens": list(specials)})
    return tok


# ------------------------------------------------------------------------------------------------ generator


class MultiRefGenerator(Generator):
    """Base of the native multi-reference generators: one request per pipeline call, references capped per model.

    Subclasses set ``default_repo``, ``reference_limit`` and the sampling defaults, and implement
    :meth:`pipeline_class`, :meth:`tiny_components` (used by their tiny variant) and :meth:`call_pipeline`.
    """

    config_cls: ClassVar[type] = MultiRefConfig
    default_repo: ClassVar[str] = ""
    reference_limit: ClassVar[int] = 0  # the model's documented number of references (0: no limit)
    default_steps: ClassVar[int] = 50
    default_guidance: ClassVar[float] = 4.0
    default_prompt_template: ClassVar[str] = "{prompt}"
    default_size: ClassVar[int] = 1024  # output side when height is not given
    how: ClassVar[str] = ""  # extra hint on how to supply the weights

    def __init__(self, profile: str = "default", **options: Any) -> None:
        super().__init__(profile, **options)
        self.device = resolve_device(self.config.device)
        self.repo = self.config.model or self.default_repo
        self._folder: Path | None = None
        self.check_weights()  # every weight is located before anything heavy loads
        self.pipe = self._load()

    def check_weights(self) -> None:
        """Locate the pipeline folder, loading nothing (the runner calls this before any work, on an instance that
        holds only the validated options); a miss raises MissingWeightsError."""
        self.repo = self.config.model or self.default_repo
        self._folder = self.locate_pipeline()

    def locate_pipeline(self) -> Path | None:
        """The local diffusers folder of ``self.repo`` (the tiny variant: None, nothing to locate)."""
        return resolve_pipeline_dir(self.repo, what=f"{self.display_name} ({self.repo})", how=self._how())

    # -------------------------------------------------------------------- per-model hooks
    @property
    def display_name(self) -> str:
        return type(self).__name__

    def pipeline_class(self) -> Any:
        """The diffusers pipeline class."""
        raise NotImplementedError

    def tiny_components(self, seed: int) -> dict[str, Any]:
        """Keyword arguments of the pipeline class: tiny random components (diffusers' own test shapes)."""
        raise NotImplementedError

    def call_pipeline(self, prompt: str, images: list[Image.Image], generator: Any) -> Image.Image:
        """One image for one prompt and its references."""
        raise NotImplementedError

    def prepare_references(self, images: list[Image.Image]) -> list[Image.Image]:
        """Reference images as the pipeline should get them (RGB; subclasses may resize them)."""
        return [im.convert("RGB") for im in images]

    # -------------------------------------------------------------------- shared
    def _how(self) -> str:
        return (f"on a connected machine run `hf download {self.repo}` and copy the Hugging Face cache here, place the "
                f"diffusers folder at $MRBENCH_WEIGHTS_DIR/{self.repo}, or pass --model-args model=/local/folder"
                + (f"; {self.how}" if self.how else "") + " (--profile tiny runs without weights)")

    def pipeline(self, cls: Any) -> Any:
        """Pipeline class ``cls`` with its weights, dtype set (the tiny variant builds :meth:`tiny_components`)."""
        dtype = resolve_dtype(self.config.dtype, self.device)
        try:
            return cls.from_pretrained(self._folder, torch_dtype=dtype, local_files_only=True)
        except (OSError, ValueError) as e:
            raise missing_weights(f"{self.display_name} ({self.repo})", [f"{self._folder}: {e}"],
                                  "the folder must hold a complete diffusers checkpoint of this pipeline") from e

    def _load(self) -> Any:
        import torch

        pipe = self.pipeline(self.pipeline_class())
        pipe.set_progress_bar_config(disable=True)
        if self.config.offload and self.device.startswith("cuda"):
            pipe.enable_model_cpu_offload(device=self.device)
        else:
            pipe = pipe.to(self.device)
        for name, module in pipe.components.items():
            if isinstance(module, torch.nn.Module):
                module.eval().requires_grad_(False)
        return pipe

    @property
    def steps(self) -> int:
        return self.config.num_inference_steps or self.default_steps

    @property
    def guidance(self) -> float:
        return self.config.guidance_scale if self.config.guidance_scale is not None else self.default_guidance

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of generations: fixed, never taken from the references."""
        h = self.config.height or self.default_size
        return h, self.config.width or h

    @property
    def max_references(self) -> int:
        return self.reference_limit if self.config.max_references is None else self.config.max_references

    def build_prompt(self, sample: Sample, n_images: int) -> str:
        template = self.config.prompt_template or self.default_prompt_template
        return template.format(prompt=sample.prompt, class_token=sample.class_token or "subject",
                               images=self.image_placeholders(n_images))

    def image_placeholders(self, n: int) -> str:
        return ""

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """One pipeline call per request (each with its own generator), references capped per ``max_references``."""
        out: list[GenerationResult] = []
        for req in requests:
            refs, info = select_references(req.sample, self.max_references, self.config.reference_seed)
            if not refs:
                out.append(GenerationResult.failed("no_references", f"{self.name} needs at least one reference"))
                continue
            prompt = self.build_prompt(req.sample, len(refs))
            images = self.prepare_references([r.load() for r in refs])
            with request_rng(req.seed, self.device) as generator:
                image = self.call_pipeline(prompt, images, generator)
            out.append(GenerationResult(image, info={**info, "prompt": prompt}))
        return out

    def weights(self) -> dict[str, Any]:
        return {"pipeline": self.repo, "folder": str(self._folder)}

    def tiny_weights(self) -> str:
        """How the tiny variant records its random pipeline (its seed and the tiny configs)."""
        return f"random(seed={self.config.tiny_seed}, {type(self).__name__}.tiny_components)"

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["sampling"] = {"steps": self.steps, "guidance": self.guidance, "size": list(self.size),
                         "max_references": self.max_references, "reference_seed": self.config.reference_seed,
                         "prompt_template": self.config.prompt_template or self.default_prompt_template}
        return d


class TinyMultiRefWeights:
    """Weights mixin of the multi-reference generators' tiny variants: the pipeline class built from the model's
    :meth:`~MultiRefGenerator.tiny_components` (seeded with ``tiny_seed``), float32 unless ``dtype`` says otherwise;
    nothing to locate."""

    config: Any
    device: str

    def locate_pipeline(self) -> None:
        return None

    def pipeline(self, cls: Any) -> Any:
        import torch

        pipe = cls(**self.tiny_components(self.config.tiny_seed))  # type: ignore[attr-defined]
        dtype = torch.float32 if self.config.dtype is None else resolve_dtype(self.config.dtype, self.device)
        return pipe if dtype == torch.float32 else pipe.to(dtype=dtype)

    def weights(self) -> dict[str, Any]:
        return {"pipeline": self.tiny_weights()}  # type: ignore[attr-defined]


def tiny_multiref(base: type, **attrs: Any) -> type:
    """The tiny variant of a multi-reference generator: 32 px outputs unless ``attrs`` say otherwise."""
    from mrbench.baselines.tiny import tiny_model

    return tiny_model(base, TinyMultiRefWeights, **{"default_size": 32, **attrs})
