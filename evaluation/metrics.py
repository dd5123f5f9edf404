"""Metrics, registered with their direction and aggregation.

Every metric is computed by a named encoder from :mod:`mrbench.backends` and keyed ``<metric>@<encoder>`` (e.g.
``clip_i@clip``, ``image_sim@mobilenet_v2``), so scores from different encoders never share a column. Each row also
records the encoder's :class:`~mrbench.backends.base.BackendInfo` (weights, version, ``random_weights``).

Fields per metric (``<key>.<field>``):

- ``clip_t``: raw cosine of the generation with its prompt, or with the sample's caption when the prompt is not it
  (image-only prompting; CLIP-T; summaries also show it x2.5, CLIPScore's w).
- ``clip_i`` / ``dino_i`` / ``image_sim``: ``.target`` cosine with the target image, ``.refs`` mean cosine with the
  references (a reference that *is* the returned real image -- the ceiling row -- is left out), ``.all`` mean cosine
  with every real image of the sample's subject (references and target, the returned real image left out):
  DreamBooth's DINO / CLIP-I convention (Ruiz et al. 2023 compare each generation with all real photos of the
  subject), the headline column on DreamBench.
- ``face``: largest face, identity cosine. ``.target`` / ``.refs`` exclude generations without a face;
  ``.target_zero`` / ``.refs_zero`` count them as 0; ``.detected`` is 1 when the generation has a face (its mean is
  the face-detection rate). Rows whose target (or every reference) has no face carry no value.

Aggregation (all metrics): per-group mean over that group's rows, then the mean over groups of the split, with a
bootstrap 95 % confidence interval over groups (:mod:`mrbench.evaluation.results`).
"""

from __future__ import annotations

import abc
import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Sequence

import numpy as np
from PIL import Image

from mrbench.config import ConfigError
from mrbench.evaluation.generator import Sample, scored_references
from mrbench.evaluation.registry import METRICS, metrics

AGGREGATION = "mean over groups of per-group means; bootstrap 95% CI over groups"
DEFAULT_METRICS = ("clip_t", "clip_i", "dino_i", "face")


@dataclass(frozen=True)
class MetricField:
    """One value a metric writes per row.

    Attributes:
        name: Field name (``target``, ``refs``, ...; empty for single-valued metrics).
        direction: ``higher`` or ``lower`` is better; None (the usual): the metric's registered direction, filled in by
            :func:`metric_fields` (summaries and the leaderboard read it from the registration).
        description: One line for tables.
        display_scale: Also show the value multiplied by this (CLIP-T x2.5); None for no scaled view.
    """

    name: str
    direction: str | None = None
    description: str = ""
    display_scale: float | None = None


@dataclass
class MetricInput:
    """What a metric sees for one generated image."""

    image: Image.Image
    sample: Sample
    source_id: str | None = None


class Metric(abc.ABC):
    """A metric bound to one encoder.

    Args:
        encoder_name: Registered encoder name (``mrbench ls encoders``).
        encoder: The built encoder.
    """

    name: ClassVar[str] = ""
    encoder_kind: ClassVar[str] = "image"  # "text-image", "image" or "face"
    default_encoder: ClassVar[str] = ""
    tiny_encoder: ClassVar[str] = ""
    # What the default metric set uses instead when this metric's default weights are not on the machine (a spec
    # whose weights ship with the install); "" when there is none (the metric is then skipped, saying why).
    offline_alternative: ClassVar[str] = ""
    fields: ClassVar[tuple[MetricField, ...]] = ()

    def __init__(self, encoder_name: str, encoder: Any) -> None:
        from mrbench.backends.base import FaceEncoder, ImageEncoder, TextImageEncoder

        need = {"text-image": TextImageEncoder, "image": ImageEncoder, "face": FaceEncoder}[self.encoder_kind]
        if not isinstance(encoder, need):
            raise ConfigError(f"metric {self.name!r} needs a {self.encoder_kind} encoder; {encoder_name!r} is a "
                              f"{type(encoder).__name__}")
        self.encoder_name = encoder_name
        self.encoder = encoder
        self.encoder_key = f"{encoder_name}#{id(encoder)}"  # build_metrics sets the (name, options) key
        self._cache: dict[str, Any] = {}  # real image id -> embedding / face result

    @property
    def key(self) -> str:
        return f"{self.name}@{self.encoder_name}"

    @property
    def info(self) -> dict[str, Any]:
        return self.encoder.info.to_dict()

    def field_keys(self) -> list[str]:
        return [f"{self.key}.{f.name}" if f.name else self.key for f in self.fields]

    @abc.abstractmethod
    def compute(self, items: Sequence[MetricInput]) -> list[dict[str, float | None]]:
        """One ``{field key: value or None}`` per item."""

    def _by_content(self, images: Sequence[Image.Image], fn: Any) -> list[Any]:
        """``fn`` over ``images``, reusing results for identical pixels (process-wide, per encoder): a real image
        returned by a real-image row, or seen by an earlier run in this process, is encoded once."""
        keys = [(self.encoder_key, content_key(im)) for im in images]
        todo = [i for i, k in enumerate(keys) if k not in _CONTENT_CACHE]
        if todo:
            for i, value in zip(todo, fn([images[i] for i in todo])):
                _CONTENT_CACHE[keys[i]] = value
            while len(_CONTENT_CACHE) > _CONTENT_CACHE_SIZE:
                _CONTENT_CACHE.pop(next(iter(_CONTENT_CACHE)))
        return [_CONTENT_CACHE[k] for k in keys]

    def _generated(self, items: Sequence[MetricInput], fn: Any) -> list[Any]:
        """``fn`` over the generated images."""
        return self._by_content([it.image for it in items], fn)

    def _cached(self, refs: Sequence[Any], fn: Any) -> list[Any]:
        """``fn`` over real images, loaded once per run (by id) and encoded once per content."""
        todo = {r.id: r for r in refs if r.id not in self._cache}
        if todo:
            ids = sorted(todo)
            for rid, value in zip(ids, self._by_content([todo[i].load() for i in ids], fn)):
                self._cache[rid] = value
        return [self._cache[r.id] for r in refs]


# Encoder outputs by (encoder, pixel content), shared by every run in the process; encoders are deterministic, so a
# cached value equals a recomputed one. Oldest entries go first beyond the size bound.
_CONTENT_CACHE: dict[tuple[str, str], Any] = {}
_CONTENT_CACHE_SIZE = 200_000


def content_key(image: Image.Image) -> str:
    """sha256 of an image's mode, size and pixels."""
    h = hashlib.sha256(f"{image.mode}{image.size}".encode())
    h.update(image.tobytes())
    return h.hexdigest()


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of two embeddings (encoders return L2-normalised rows; normalised again to be safe)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def _ref_pool(item: MetricInput) -> list[Any]:
    return scored_references(item.sample, item.source_id)


class _EmbeddingSimilarity(Metric):
    """Cosine of image embeddings with the target and (mean) with the references."""

    fields = (
        MetricField("target", description="cosine with the target image"),
        MetricField("refs", description="mean cosine with the references"),
        MetricField("all", description="mean cosine with every real image of the subject (DreamBench)"),
    )

    def compute(self, items: Sequence[MetricInput]) -> list[dict[str, float | None]]:
        gen = self._generated(items, self.encoder.embed_images)
        embed = self.encoder.embed_images
        out = []
        for it, g in zip(items, gen):
            row: dict[str, float | None] = {f"{self.key}.{f.name}": None for f in self.fields}
            if it.sample.target is not None:
                (t,) = self._cached([it.sample.target], embed)
                row[f"{self.key}.target"] = _cos(g, t)
            refs = _ref_pool(it)
            if refs:
                row[f"{self.key}.refs"] = float(np.mean([_cos(g, e) for e in self._cached(refs, embed)]))
            # by id: a COCO sample's single reference is its target
            real = list({r.id: r for r in it.sample.real_images() if r.id != it.source_id}.values())
            if real:
                row[f"{self.key}.all"] = float(np.mean([_cos(g, e) for e in self._cached(real, embed)]))
            out.append(row)
        return out


@METRICS.register("clip_i", direction="higher", aggregation=AGGREGATION)
class ClipI(_EmbeddingSimilarity):
    """CLIP-I: CLIP image-embedding cosine with the target and the references."""

    name = "clip_i"
    default_encoder = "clip"
    tiny_encoder = "clip-tiny"
    offline_alternative = "image_sim@mobilenet_v2"


@METRICS.register("dino_i", direction="higher", aggregation=AGGREGATION)
class DinoI(_EmbeddingSimilarity):
    """DINO-I: DINO CLS-embedding cosine with the target and the references."""

    name = "dino_i"
    default_encoder = "dino"
    tiny_encoder = "dino-tiny"
    offline_alternative = "image_sim@mobilenet_v2"


@METRICS.register("image_sim", direction="higher", aggregation=AGGREGATION)
class ImageSim(_EmbeddingSimilarity):
    """Image similarity with any image encoder (e.g. mobilenet_v2 when CLIP/DINO weights are absent)."""

    name = "image_sim"
    default_encoder = "mobilenet_v2"
    tiny_encoder = "dino-tiny"


@METRICS.register("clip_t", direction="higher", aggregation=AGGREGATION)
class ClipT(Metric):
    """CLIP-T: raw cosine of the generation with its prompt (also shown x2.5)."""

    name = "clip_t"
    encoder_kind = "text-image"
    default_encoder = "clip"
    tiny_encoder = "clip-tiny"
    fields = (MetricField("", description="cosine with the prompt (raw)", display_scale=2.5),)

    def __init__(self, encoder_name: str, encoder: Any) -> None:
        super().__init__(encoder_name, encoder)
        self._text_cache: dict[str, np.ndarray] = {}

    def compute(self, items: Sequence[MetricInput]) -> list[dict[str, float | None]]:
        gen = self._generated(items, self.encoder.embed_images)
        prompts = sorted({it.sample.score_text for it in items} - set(self._text_cache))
        if prompts:
            for p, e in zip(prompts, self.encoder.embed_texts(prompts)):
                self._text_cache[p] = e
        return [{self.key: _cos(g, self._text_cache[it.sample.score_text])} for it, g in zip(items, gen)]


@METRICS.register("face", direction="higher", aggregation=AGGREGATION)
class FaceSimilarity(Metric):
    """Face identity similarity (largest face, cosine) with detection rate; "no face" both as 0 and excluded."""

    name = "face"
    encoder_kind = "face"
    default_encoder = "insightface"
    tiny_encoder = "insightface-tiny"
    offline_alternative = "face@dlib"
    fields = (
        MetricField("target", description="identity cosine with the target (no face: excluded)"),
        MetricField("target_zero", description="identity cosine with the target (no face: 0)"),
        MetricField("refs", description="mean identity cosine with the references (no face: excluded)"),
        MetricField("refs_zero", description="mean identity cosine with the references (no face: 0)"),
        MetricField("detected", description="face-detection rate of the generations"),
    )

    def compute(self, items: Sequence[MetricInput]) -> list[dict[str, float | None]]:
        gen = self._generated(items, self.encoder.faces)
        out = []
        k = self.key
        for it, g in zip(items, gen):
            has = g.embedding is not None
            row: dict[str, float | None] = {f"{k}.{f.name}": None for f in self.fields}
            row[f"{k}.detected"] = 1.0 if has else 0.0
            if it.sample.target is not None:
                (t,) = self._cached([it.sample.target], self.encoder.faces)
                if t.embedding is not None:
                    row[f"{k}.target"] = _cos(g.embedding, t.embedding) if has else None
                    row[f"{k}.target_zero"] = row[f"{k}.target"] if has else 0.0
            ref_faces = [r for r in self._cached(_ref_pool(it), self.encoder.faces) if r.embedding is not None]
            if ref_faces:
                row[f"{k}.refs"] = float(np.mean([_cos(g.embedding, r.embedding) for r in ref_faces])) if has else None
                row[f"{k}.refs_zero"] = row[f"{k}.refs"] if has else 0.0
            out.append(row)
        return out


METRICS.register("judge", "mrbench.evaluation.judge:JudgeMetric", direction="higher", aggregation=AGGREGATION,
                 help="VLM judge@HF_ID|DIR[:omnicontext] (default Qwen2.5-VL-7B-Instruct): subject consistency, "
                      "prompt following, visual quality, 0-10 each, greedy; :omnicontext: OmniContext's separate PF "
                      "and SC calls, overall = sqrt(PF x SC); unparsable answers are named failures")


@dataclass
class MetricSpec:
    """A metric name and, optionally, the encoder that computes it (``face@dlib``)."""

    metric: str
    encoder: str | None = None
    encoder_args: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> "MetricSpec":
        name, _, enc = text.strip().partition("@")
        if not name:
            raise ConfigError(f"bad metric spec {text!r}; write NAME or NAME@ENCODER")
        return cls(name, enc or None)


def parse_metric_specs(metrics_arg: str | Sequence[str] | None, image_encoder: str | None = None) -> list[MetricSpec]:
    """``"clip_t,face@dlib"`` (or a list of such strings) -> specs. ``image_encoder`` replaces clip_i/dino_i by
    ``image_sim@<encoder>``."""
    if metrics_arg is None:
        items = list(DEFAULT_METRICS)
    else:
        chunks = [metrics_arg] if isinstance(metrics_arg, str) else metrics_arg
        items = [m for chunk in chunks for m in chunk.split(",") if m.strip()]
    specs = [MetricSpec.parse(m) for m in items]
    if image_encoder:
        kept = [s for s in specs if s.metric not in ("clip_i", "dino_i", "image_sim")]
        specs = kept + [MetricSpec("image_sim", image_encoder)]
    keys = [f"{s.metric}@{s.encoder}" for s in specs]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"metric listed twice in {', '.join(items)}")
    return specs


def apply_benchmark_encoders(specs: Sequence[MetricSpec], encoders: dict[str, str], profile: str = "default",
                             tiny_args: dict[str, dict[str, Any]] | None = None) -> list[MetricSpec]:
    """Give metrics that name no encoder the benchmark's conventional one (``dino_i`` -> ``dino-v1`` on DreamBench).

    With ``profile="tiny"`` the metric keeps its tiny random encoder, with the options that mirror the convention
    (``variant=v1``). An explicit ``METRIC@ENCODER`` is left alone.
    """
    out = []
    for s in specs:
        if s.encoder is None and s.metric in encoders:
            if profile == "tiny":
                s = MetricSpec(s.metric, None, {**(tiny_args or {}).get(s.metric, {}), **s.encoder_args})
            else:
                s = MetricSpec(s.metric, encoders[s.metric], dict(s.encoder_args))
        out.append(s)
    return out


# Encoders built in this process, reused by later runs (several runs in one process -- a demo, a benchmark script,
# tests -- load each model once). Encoders hold no per-run state; the embedding caches live in the Metric objects.
_ENCODERS: dict[str, Any] = {}


def build_metrics(specs: Sequence[MetricSpec], profile: str = "default", device: str | None = None) -> list[Metric]:
    """Build every metric with its encoder (loading weights now: missing ones fail before any generation).

    With ``profile="tiny"`` a metric without an explicit encoder uses its tiny random encoder.
    """
    from mrbench.backends import get_encoder

    built: list[Metric] = []
    for spec in specs:
        cls = metrics().get(spec.metric)
        enc_name = spec.encoder or (cls.tiny_encoder if profile == "tiny" else cls.default_encoder)
        kwargs = dict(spec.encoder_args)
        if device:
            kwargs["device"] = device
        key = json.dumps([enc_name, kwargs], sort_keys=True, default=str)
        if key not in _ENCODERS:
            # A metric whose "encoder" is not a registered backend (judge@MODEL: a VLM) builds its own.
            builder = getattr(cls, "build_encoder", None)
            _ENCODERS[key] = builder(enc_name, **kwargs) if builder else get_encoder(enc_name, **kwargs)
        metric = cls(enc_name, _ENCODERS[key])
        metric.encoder_key = key
        built.append(metric)
    return built


def metric_fields(built: Sequence[Metric]) -> dict[str, MetricField]:
    """Field key -> field description, over every built metric; a field's direction is its metric's registered one
    unless the field declares its own."""
    out: dict[str, MetricField] = {}
    for m in built:
        direction = registered_metric(m.name)["direction"]
        for f, key in zip(m.fields, m.field_keys()):
            out[key] = f if f.direction else replace(f, direction=direction)
    return out


def metric_name(key: str) -> str:
    """The registered metric a summary key belongs to: ``image_sim@mobilenet_v2.target`` -> ``image_sim``,
    ``clip_t@clip-tiny`` -> ``clip_t``, ``judge@Qwen/Qwen2.5-VL.parsed`` -> ``judge``."""
    return key.partition("@")[0].partition(".")[0]


def registered_metric(key: str) -> dict[str, Any]:
    """What the metric registry says about the metric of ``key`` (a metric name or a summary key): ``direction``
    (``higher`` / ``lower``) and ``aggregation`` as registered, ``registered`` False (and no direction) for a
    metric this installation does not know (a run scored by a plug-in that is not installed here).

    Read from the registry entry, without importing the metric's module.
    """
    from mrbench.registry import UnknownEntryError

    try:
        meta = dict(metrics().entry(metric_name(key)).meta)
    except UnknownEntryError:
        return {"registered": False, "direction": None, "aggregation": None}
    return {"registered": True, "direction": meta.get("direction", "higher"), "aggregation": meta.get("aggregation")}
