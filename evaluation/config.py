"""The eval config: :class:`EvalConfig` declares every option of one evaluation run (``mrbench eval`` flags,
``--config eval.yaml``, ``--set``, :func:`~mrbench.evaluation.runner.run_eval`'s keywords), with its constraints
(:func:`mrbench.config.option`)."""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mrbench.config import ConfigError, option, unknown_keys_message, validate_fields, validate_once

PROFILES = ("default", "tiny")  # pretrained weights, or tiny random models and encoders (no download)


@dataclass
class EvalConfig:
    """Options of one evaluation run, declared once: ``mrbench eval`` maps its flags, ``--config eval.yaml`` and
    ``--set key=value`` onto these fields (CLI > YAML > defaults), :func:`~mrbench.evaluation.runner.run_eval` takes
    one (or keyword overrides of these names), and the run folder's ``config.json`` records it under ``eval``.

    Paths are relative to the working directory, in a YAML file as on the command line.

    Attributes:
        model: Registered model name (``mrbench ls models``); required.
        benchmark: ``dreambench:PATH``, ``mrbench:RELEASE``, ``folder:PATH`` (or a bare release / DreamBench path);
            required.
        out: Parent folder of run folders.
        split: ``held-in`` / ``held-out`` for MRBench releases (default held-out); ``test`` otherwise.
        model_args: Generator options (``mrbench ls models``; each model's config dataclass documents them).
        profile: ``default`` (pretrained weights) or ``tiny`` (tiny random models and encoders).
        limit: Evaluate only the first N samples.
        seed: First seed; image k of a sample uses ``seed + k``.
        images_per_prompt: Images per sample.
        metrics: Metric specs (``clip_t``, ``face@dlib``; an item may hold several, comma-separated); None for the
            default set. A metric without an encoder uses the benchmark's convention where it has one (``dino_i``:
            ``dino-v1`` on DreamBench, ``dino`` -- DINOv2-S -- on MRBench releases), else the metric's default.
        image_encoder: Replace clip_i/dino_i by ``image_sim@<encoder>``.
        batch_size: Requests per ``generate`` call (default: the generator's preference).
        cache_dir: Generation cache (default ``OUT/.cache/generations``).
        metric_device: Device for metric encoders (default: CUDA when present).
        n_boot: Bootstrap resamples for confidence intervals.
        prompt: Prompt mode: ``auto`` (the benchmark's convention: ``image-only`` on COCO, as IP-Adapter's protocol;
            ``leak-free`` elsewhere: a release's captions with every tag mention replaced by its noun), ``leak-free``,
            ``raw`` (captions as written: names included) or ``image-only`` (no text prompt; CLIP-T scores the
            caption). Recorded in ``config.json`` / ``summary.json`` (``benchmark.prompt``).
        max_image_pixels: A sample with a reference or target image declaring more pixels fails as
            ``image_too_large`` (the image is never decoded).
        workers: Worker processes on this machine (each on its own GPU when there are GPUs); the samples are
            spread over them and their rows merged (see ``mrbench/evaluation/distributed.py``).
        rank: This worker's index when a launcher (torchrun, Slurm, a shell loop on several nodes) starts the
            workers; needs ``world_size``. The last worker to finish merges the rows.
        world_size: How many workers the launcher starts (with ``rank``).
    """

    model: str = ""
    benchmark: str = ""
    out: str = option("runs", nonempty=True)
    split: str | None = None
    model_args: dict[str, Any] = field(default_factory=dict)
    profile: str = option("default", choices=PROFILES)
    limit: int | None = option(None, ge=1)
    seed: int = option(0, ge=0)
    images_per_prompt: int = option(4, ge=1)
    metrics: list[str] | None = None
    image_encoder: str | None = None
    batch_size: int | None = option(None, ge=1)
    cache_dir: str | None = None
    metric_device: str | None = None
    n_boot: int = option(1000, ge=1)
    prompt: str = option("auto", choices=("auto", "leak-free", "raw", "image-only"))
    max_image_pixels: int = option(64_000_000, ge=1)
    workers: int = option(1, ge=1)
    rank: int | None = option(None, ge=0)
    world_size: int | None = option(None, ge=1)

    def validate(self) -> None:
        """Raise :class:`ConfigError` for a missing model or benchmark, or inconsistent worker settings (ranges
        and choices: :func:`option`)."""
        validate_fields(self)
        for key in ("model", "benchmark"):
            if not getattr(self, key):
                raise ConfigError(f"{key} is required: --{key} NAME, or {key}: in the eval config")
        if (self.rank is None) != (self.world_size is None):
            raise ConfigError("rank and world_size go together: --rank R --world-size N (0 <= R < N)")
        if self.rank is not None and self.world_size is not None and self.rank >= self.world_size:
            raise ConfigError(f"rank {self.rank} is out of range for world_size {self.world_size} (0 <= rank < N)")
        if self.rank is not None and self.workers > 1:
            raise ConfigError("workers starts processes on this machine; with a launcher's --rank/--world-size "
                              "leave it at 1 (start one process per worker instead)")


def parse_model_args(items: "typing.Sequence[str] | str | None") -> dict[str, Any]:
    """``["k=v,k2=v2", "k3=v3"]`` -> dict; values are YAML scalars (``0.5``, ``true``, ``[1, 2]``)."""
    if items is None:
        return {}
    if isinstance(items, str):
        items = [items]
    out: dict[str, Any] = {}
    for chunk in items:
        for part in re.split(r",(?=\s*[A-Za-z_][\w.-]*=)", chunk):
            if not part.strip():
                continue
            key, sep, value = part.partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"model argument {part!r} is not key=value")
            try:
                out[key.strip()] = yaml.safe_load(value)
            except yaml.YAMLError:
                raise ConfigError(f"model argument {part!r}: the value is not valid YAML") from None
    return out


def eval_config(config: EvalConfig | None = None, **overrides: Any) -> EvalConfig:
    """``config`` (default: :class:`EvalConfig`'s defaults) with keyword ``overrides``, checked and validated.

    An override of None means "not given" (the config's value stays). ``model_args`` may be ``"k=v,k2=v2"``
    strings, ``metrics`` one comma-separated string, ``out`` / ``cache_dir`` paths.

    Raises:
        ConfigError: an unknown option (with the closest name), a bad type, range or choice, a missing model.
    """
    names = [f.name for f in dataclasses.fields(EvalConfig)]
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise ConfigError(unknown_keys_message(unknown, names, what="eval option"))
    given = {k: v for k, v in overrides.items() if v is not None}
    if "model_args" in given:  # a copy: the config never shares the caller's dict
        args = given["model_args"]
        given["model_args"] = dict(args) if isinstance(args, dict) else parse_model_args(args)
    if isinstance(given.get("metrics"), str):
        given["metrics"] = [given["metrics"]]
    elif "metrics" in given and isinstance(given["metrics"], (list, tuple)):
        given["metrics"] = list(given["metrics"])
    for key in ("out", "cache_dir"):
        if isinstance(given.get(key), Path):
            given[key] = str(given[key])
    cfg = dataclasses.replace(config, **given) if config is not None else EvalConfig(**given)
    validate_once(cfg)
    return cfg
