"""SDXL through diffusers, shared by the easyref, ip-adapter and lora generators.

Real weights come from a local folder or the Hugging Face cache (``stabilityai/stable-diffusion-xl-base-1.0`` by
default; nothing is downloaded: the hub is off and every load passes ``local_files_only=True``). The tiny variants
(``--profile tiny``) build the same pipeline class from tiny random components (:mod:`mrbench.baselines.tiny`).

Sampling defaults are the paper's: DDIM, 30 steps, guidance 7.5 [seed 001]; the negative prompt is the one the
EasyRef / IP-Adapter SDXL code uses when none is given. Each request gets its own CPU ``torch.Generator`` seeded with
the request's seed, so an image depends only on its request (not on the batch it shares, nor on the device's RNG).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from mrbench.backends import weights as W  # noqa: F401  (offline mode before diffusers/transformers import)
from mrbench.backends.weights import (
    MissingWeightsError, hf_cached_file, merge_missing, mirror_dir, missing_weights, weight_checks,
)
from mrbench.config import ConfigError
from mrbench.evaluation.generator import Generator

SDXL_BASE = "stabilityai/stable-diffusion-xl-base-1.0"
DEFAULT_NEGATIVE = "monochrome, lowres, bad anatomy, worst quality, low quality"
SCHEDULERS = ("ddim", "ddpm", "euler", "dpm++")


@dataclass
class SDXLConfig:
    """Options shared by the SDXL generators.

    Attributes:
        base_model: SDXL diffusers folder or hub id (looked up in ``$MRBENCH_WEIGHTS_DIR`` and the HF cache).
        num_inference_steps: Sampling steps (paper: 30).
        guidance_scale: Classifier-free guidance (paper: 7.5).
        scheduler: ``ddim`` (paper), ``ddpm``, ``euler`` or ``dpm++``.
        eta: DDIM eta (0: deterministic given the initial noise).
        height: Output height (None: 1024, or the tiny model's 64).
        width: Output width (None: as height).
        negative_prompt: Negative prompt (EasyRef/IP-Adapter code default).
        device: ``cuda``, ``cpu``, ... (None: CUDA when present).
        dtype: ``float16``, ``bfloat16``, ``float32`` (None: float16 on CUDA, float32 on CPU).
        batch_size: Requests per ``generate`` call; requests that can share a pipeline call do (each keeps its own
            generator). On CPU an image does not depend on its batch; GPU kernels may differ by batch size in the
            last bits, so keep one batch size when comparing runs.
        variant: Weight-file variant to load (``fp16`` for repos or caches holding only ``*.fp16.safetensors``).
        tiny_seed: Seed of the tiny random weights (``--profile tiny``).
    """

    base_model: str = SDXL_BASE
    num_inference_steps: int = 30
    guidance_scale: float = 7.5
    scheduler: str = "ddim"
    eta: float = 0.0
    height: int | None = None
    width: int | None = None
    negative_prompt: str = DEFAULT_NEGATIVE
    device: str | None = None
    dtype: str | None = None
    batch_size: int = 1
    variant: str | None = None
    tiny_seed: int = 0

    def validate(self) -> None:
        if self.num_inference_steps < 1:
            raise ConfigError("num_inference_steps must be >= 1")
        if self.scheduler not in SCHEDULERS:
            raise ConfigError(f"scheduler must be one of {SCHEDULERS}, got {self.scheduler!r}")
        if self.batch_size < 1:
            raise ConfigError("batch_size must be >= 1")
        for side in (self.height, self.width):
            if side is not None and side % 8:
                raise ConfigError("height and width must be multiples of 8")


def resolve_device(device: str | None) -> str:
    """``None`` -> ``cuda`` when available, else ``cpu`` (the backends' rule), as a string."""
    from mrbench.backends.torch_common import resolve_device as torch_device

    return str(torch_device(device))


_DTYPE_ALIASES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}


def resolve_dtype(dtype: str | None, device: str) -> Any:
    """A torch dtype from its name (or ``fp16``/``bf16``/``fp32``); None: float16 on CUDA, float32 elsewhere."""
    from mrbench.backends.torch_common import DTYPES

    name = dtype or ("float16" if device.startswith("cuda") else "float32")
    name = _DTYPE_ALIASES.get(name, name)
    if name not in DTYPES:
        raise ConfigError(f"dtype must be float16, bfloat16 or float32, got {dtype!r}")
    return DTYPES[name]


def candidate_dirs(repo: str, marker: str) -> tuple[list[Path], list[str]]:
    """Where a local copy of ``repo`` may be: the path itself, or for a hub id its folder in the mirror
    (``$MRBENCH_WEIGHTS_DIR``) and the HF-cache snapshot holding ``marker``; plus the places already ruled out."""
    looked: list[str] = []
    p = Path(repo).expanduser()
    candidates: list[Path] = []
    if p.is_dir() or repo.startswith((".", "/", "~")):
        candidates.append(p)
    else:
        mirror = mirror_dir()
        if mirror is not None:
            candidates.append(mirror / repo)
        cached = hf_cached_file(repo, [marker])
        if cached is not None:
            root = cached
            for _ in Path(marker).parts:
                root = root.parent
            candidates.append(root)
        else:
            looked.append(f"Hugging Face cache: {repo} ({marker} not cached)")
    return candidates, looked


def resolve_local_repo(repo: str, marker: str, *, what: str, how: str) -> Path:
    """A local folder for ``repo`` (a path, or a hub id found in the mirror folder or the HF cache) holding ``marker``.

    Raises:
        MissingWeightsError: naming the weights, every place searched and how to supply them.
    """
    candidates, looked = candidate_dirs(repo, marker)
    for c in candidates:
        if (c / marker).is_file():
            return c
        looked.append(f"{c} (no {marker})")
    raise missing_weights(what, looked, how)


def make_scheduler(name: str, base_config: Any) -> Any:
    """The sampler named ``name``, configured from the pipeline's own scheduler config (betas, offsets)."""
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler

    cls = {"ddim": DDIMScheduler, "ddpm": DDPMScheduler, "euler": EulerDiscreteScheduler,
           "dpm++": DPMSolverMultistepScheduler}[name]
    if name == "ddim":
        # IP-Adapter/EasyRef's SDXL DDIM settings: no clipping, alpha_T from the schedule.
        return cls.from_config(base_config, clip_sample=False, set_alpha_to_one=False)
    return cls.from_config(base_config)


def resolve_sdxl(cfg: SDXLConfig) -> Path:
    """The local SDXL folder for ``cfg.base_model`` (MissingWeightsError when absent)."""
    return resolve_local_repo(
        cfg.base_model, "model_index.json", what=f"SDXL ({cfg.base_model})",
        how=(f"put a diffusers copy of {SDXL_BASE} in the HF cache (`hf download {SDXL_BASE}` on a "
             "connected machine, then copy ~/.cache/huggingface) or pass --model-args base_model=/local/sdxl"),
    )


def load_sdxl_pipeline(cfg: SDXLConfig) -> Any:
    """The SDXL pipeline from the local folder of ``cfg.base_model`` (MissingWeightsError when absent or broken)."""
    from diffusers import StableDiffusionXLPipeline

    folder = resolve_sdxl(cfg)
    dtype = resolve_dtype(cfg.dtype, resolve_device(cfg.device))
    try:
        return StableDiffusionXLPipeline.from_pretrained(folder, torch_dtype=dtype, variant=cfg.variant,
                                                         local_files_only=True)
    except (OSError, ValueError) as e:
        raise missing_weights(f"SDXL ({cfg.base_model})", [f"{folder}: {e}"],
                              "the folder must hold a complete diffusers SDXL checkpoint") from e


def ready_sdxl_pipeline(pipe: Any, cfg: SDXLConfig) -> Any:
    """``pipe`` (dtype already set) with the configured sampler, on device, in eval mode, without progress bars."""
    pipe.scheduler = make_scheduler(cfg.scheduler, pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    pipe = pipe.to(resolve_device(cfg.device))
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        getattr(pipe, name).eval().requires_grad_(False)
    return pipe


@contextmanager
def quiet_diffusers() -> Iterator[None]:
    """Silence diffusers' informational warnings inside the block (e.g. loading an IP-Adapter without its image
    encoder, which the tiny variant does on purpose)."""
    from diffusers.utils import logging as dlog

    level = dlog.get_verbosity()
    dlog.set_verbosity_error()
    try:
        yield
    finally:
        dlog.set_verbosity(level)


def generators_for(seeds: Sequence[int]) -> list[Any]:
    """One CPU ``torch.Generator`` per request, seeded with the request's seed (device-independent noise)."""
    import torch

    return [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]


class SDXLGenerator(Generator):
    """Base of the SDXL generators: builds the pipeline (failing fast on missing weights) and samples."""

    config_cls = SDXLConfig

    def __init__(self, profile: str = "default", **options: Any) -> None:
        super().__init__(profile, **options)
        self.device = resolve_device(self.config.device)
        missing = weight_checks(self)  # every weight is located before anything heavy loads; all misses at once
        if missing:
            raise merge_missing(missing)
        self.pipe = ready_sdxl_pipeline(self.sdxl_pipeline(), self.config)

    def check_weights(self) -> None:
        """Locate every weight file the generator needs, before any loading. A miss goes to ``self.missing`` (so a
        subclass's checks still run after ``super().check_weights()``) or is raised; the constructor reports them
        all in one MissingWeightsError."""
        self.missing: list[MissingWeightsError] = []
        try:
            resolve_sdxl(self.config)
        except MissingWeightsError as e:
            self.missing.append(e)

    def sdxl_pipeline(self) -> Any:
        """The SDXL pipeline with its weights, dtype set (the tiny variant builds random components)."""
        return load_sdxl_pipeline(self.config)

    def sdxl_weights(self) -> str:
        """Which SDXL weights (a hub id or folder; the tiny variant: its seed and config)."""
        return self.config.base_model

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of generations."""
        default = self.pipe.default_sample_size * self.pipe.vae_scale_factor
        h = self.config.height or default
        return h, self.config.width or h

    def sample(self, seeds: Sequence[int], **pipe_kwargs: Any) -> list[Any]:
        """Run the pipeline once for ``len(seeds)`` images with one generator per image."""
        h, w = self.size
        return self.pipe(
            num_inference_steps=self.config.num_inference_steps, guidance_scale=self.config.guidance_scale,
            eta=self.config.eta, height=h, width=w, generator=generators_for(seeds), **pipe_kwargs,
        ).images

    def weights(self) -> dict[str, Any]:
        return {"sdxl": self.sdxl_weights()}
