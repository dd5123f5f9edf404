"""Config dataclasses, YAML loading and ``key.sub=value`` overrides (CLI > YAML > defaults).

Every config is validated before any work starts; a bad value raises :class:`ConfigError` naming the key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is missing, unknown or out of range."""


@dataclass
class SourceConfig:
    """One input source.

    Attributes:
        kind: ``metadata`` (LAION/COYO/DataComp-style parquet, csv or jsonl files) or ``folder`` (local images).
        paths: Files, folders or glob patterns. Folders of ``metadata`` sources are searched for ``*.parquet``.
        url_col: Column holding the image URL (``URL`` in LAION, ``url`` in COYO/DataComp).
        caption_col: Column holding the caption (``TEXT`` in LAION, ``text`` in COYO/DataComp).
        folder_tag: For ``folder`` sources, use the image's sub-folder name as its tag.
    """

    kind: str = "metadata"
    paths: list[str] = field(default_factory=list)
    url_col: str = "url"
    caption_col: str = "caption"
    folder_tag: bool = True


@dataclass
class CrawlConfig:
    """Tag matching and download settings (img2dataset does the downloading).

    Attributes:
        tag_list: Path to the tag list (YAML or TSV: name, category, aliases).
        max_candidates_per_tag: Cap on candidate URLs per tag, chosen by a seeded hash (deterministic).
        require_tag: Drop metadata rows whose caption matches no tag (folder images always keep their folder tag).
        allow_private_network: Allow URLs resolving to private/loopback/link-local/metadata addresses.
        max_body_bytes: Bodies larger than this are refused (``oversize_body``).
        max_image_pixels: Images declaring more pixels are refused (``decompression_bomb``).
        timeout: Per-request timeout in seconds.
        retries: img2dataset retries per URL.
        thread_count: Download threads per shard.
        output_format: img2dataset output format: ``parquet`` or ``webdataset``.
        resize_mode: img2dataset resize mode: ``no``, ``border``, ``keep_ratio``, ``keep_ratio_largest``, ``center_crop``.
        image_size: Target size for resize modes other than ``no``.
        encode_format: ``jpg``, ``png`` or ``webp`` when re-encoding.
        user_agent_token: Appended to img2dataset's user agent.
    """

    tag_list: str = ""
    max_candidates_per_tag: int = 1000
    require_tag: bool = True
    allow_private_network: bool = False
    max_body_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 64_000_000
    timeout: float = 10.0
    retries: int = 0
    thread_count: int = 16
    output_format: str = "parquet"
    resize_mode: str = "no"
    image_size: int = 512
    encode_format: str = "jpg"
    user_agent_token: str = "mrbench"


@dataclass
class GroupConfig:
    """Grouping settings.

    Attributes:
        min_group_size: Groups with fewer ok images are dropped (a target needs at least one reference).
        max_group_size: Larger groups keep this many images, chosen by seeded hash.
        max_references: References per group in the EasyRef export.
        identity_threshold: Face cosine similarity of one identity when clustering the faces of a person group
            (None: the face encoder's default, ``curation.cluster.FACE_THRESHOLDS``); the dominant identity stays.
        consistency_min: Subject and style groups drop images whose similarity to the mean of the rest of the
            group is below this (``inconsistent``; calibrated for ``mobilenet_v2`` on DreamBench); 0 = off.
        consistency_mad: Also drop images below ``median - consistency_mad * MAD`` of their group; 0 = off.
        consistency_categories: Categories the consistency rule applies to (not those of
            ``embed.face_categories`` when a face encoder is set: they are refined by identity). A content encoder
            such as ``mobilenet_v2`` sees what is depicted, not the style: leave ``style`` out unless the encoder
            captures style (CLIP does).
        dedup_threshold: Within a group, images at least this similar are near-duplicates of each other
            (``duplicate_in_group``); None = off.
        visual_groups: Untagged images (tag ``untagged``) are grouped visually into this many groups; 0 infers
            the number (best silhouette) unless ``visual_threshold`` is set.
        visual_threshold: Group untagged images by average-linkage cosine similarity instead.
    """

    min_group_size: int = 2
    max_group_size: int = 64
    max_references: int = 8
    identity_threshold: float | None = None
    consistency_min: float = 0.7
    consistency_mad: float = 0.0
    consistency_categories: list[str] = field(default_factory=lambda: ["subject", "style"])
    dedup_threshold: float | None = 0.92
    visual_groups: int = 0
    visual_threshold: float | None = None


@dataclass
class EmbedConfig:
    """Models run per download shard; an empty name turns off every step that needs that model.

    With the defaults (all empty) the curation run is the tag-only foundation. Offline choices with real weights:
    ``encoder: mobilenet_v2`` and ``face_encoder: dlib``.

    Attributes:
        encoder: Image encoder (``mrbench ls encoders``) for dedup, outlier removal, visual grouping and the
            near-duplicate leakage audit.
        encoder_options: Keyword options for it (defaults per encoder in ``curation.embed.ENCODER_DEFAULTS``).
        face_encoder: Face encoder for the face filter, identity grouping and the identity leakage audit; it runs
            on images of ``face_categories`` only.
        face_options: Keyword options for it.
        face_categories: Tag categories whose groups are one person (a celebrity or character).
        detector: Object detector for the object filter; runs on images whose tag names a COCO class.
        detector_options: Keyword options for it.
        batch_size: Images decoded and embedded together.
    """

    encoder: str = ""
    encoder_options: dict[str, Any] = field(default_factory=dict)
    face_encoder: str = ""
    face_options: dict[str, Any] = field(default_factory=dict)
    face_categories: list[str] = field(default_factory=lambda: ["celebrity", "character"])
    detector: str = ""
    detector_options: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 32


@dataclass
class DedupConfig:
    """Near-duplicate removal over all images (global) with faiss; see ``curation.dedup``.

    Attributes:
        enabled: Run it (needs ``embed.encoder``).
        threshold: Cosine similarity at or above which two images are near-duplicates; None uses
            ``curation.dedup.DEFAULT_THRESHOLD`` (chosen from a measured precision/recall curve).
        exact_max: Sets up to this size are range-searched exactly; larger ones are partitioned (k-means).
        nprobe: Cells compared per vector in the partitioned search.
    """

    enabled: bool = True
    threshold: float | None = None
    exact_max: int = 50_000
    nprobe: int = 4


@dataclass
class FilterConfig:
    """Per-image filters; every drop carries its reason (also written to ``filters/`` and the rejects).

    The defaults keep every image (resolution rules off; face and object rules need models from ``embed``);
    e.g. ``min_side: 64``, ``max_aspect: 4`` are reasonable for a web crawl.

    Attributes:
        min_side: Images whose shorter side is smaller are dropped (``low_resolution``); 0 turns it off.
        max_aspect: Images whose longer/shorter side ratio is larger are dropped (``extreme_aspect``); 0 = off.
        face: Apply the face policy to images of ``embed.face_categories`` (needs ``embed.face_encoder``):
            exactly one dominant face, large and confident enough.
        face_min_area: Smallest dominant-face box area, as a fraction of the image area (``face_too_small``).
        face_min_score: Smallest detector score of the dominant face (``face_low_score``).
        face_max_other: A second face with at least this fraction of the dominant face's area makes the image
            ``multiple_faces``.
        object: Require the tag's COCO class to be detected where the tag names one (needs ``embed.detector``).
        object_min_score: Smallest detection score that counts (``object_missing`` otherwise).
        object_classes: Tag name -> COCO class overrides (an empty value: the tag names no class).
    """

    min_side: int = 0
    max_aspect: float = 0.0
    face: bool = True
    face_min_area: float = 0.01
    face_min_score: float = 0.5
    face_max_other: float = 0.5
    object: bool = True
    object_min_score: float = 0.5
    object_classes: dict[str, str] = field(default_factory=dict)


@dataclass
class AuditConfig:
    """Leakage audit across train / held-in / held-out (needs ``embed.encoder`` or ``embed.face_encoder``).

    Attributes:
        enabled: Run the audit and write ``audit/leakage.json`` and ``audit/leaks.parquet``.
        near_dup_threshold: Image cosine similarity at or above which two images in different splits leak.
        identity_threshold: Face cosine similarity for "same person" (None: the face encoder's default).
        remove_train_leaks: Drop the training image of every leaking pair (``leak_near_duplicate``,
            ``leak_identity``); pairs between the two test splits are reported only.
    """

    enabled: bool = True
    near_dup_threshold: float = 0.9
    identity_threshold: float | None = None
    remove_train_leaks: bool = True


@dataclass
class SplitConfig:
    """Split by group: held-out groups first, then held-in, the rest train (paper sizes by default)."""

    held_out_groups: int = 50
    held_in_groups: int = 300


@dataclass
class ReleaseConfig:
    """Release settings.

    Attributes:
        name: Dataset name written in the card and manifest.
        easyref_json: Also export EasyRef's training JSON (three record shapes).
        compression: Parquet compression codec.
    """

    name: str = "mrbench"
    easyref_json: bool = True
    compression: str = "zstd"


@dataclass
class ExecutorConfig:
    """Which executor runs the shards.

    Attributes:
        name: ``local`` (processes) or ``ray``.
        workers: Parallel shard workers (local); for ray, the CPUs of the local cluster it starts when no
            ``ray_address`` is given (1: all CPUs). Ray tasks take one CPU each.
        ray_address: Address for ``ray.init`` (None starts a local cluster).
    """

    name: str = "local"
    workers: int = 1
    ray_address: str | None = None


@dataclass
class CurateConfig:
    """Top-level curation config; see ``configs/*.yaml`` for examples."""

    seed: int = 0
    num_shards: int = 4
    sources: list[SourceConfig] = field(default_factory=list)
    crawl: CrawlConfig = field(default_factory=CrawlConfig)
    group: GroupConfig = field(default_factory=GroupConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    release: ReleaseConfig = field(default_factory=ReleaseConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)

    def validate(self) -> None:
        """Raise :class:`ConfigError` for any value that would make the run fail later."""
        if self.num_shards < 1:
            raise ConfigError("num_shards must be >= 1")
        if not self.sources:
            raise ConfigError("sources: at least one source is required")
        for i, src in enumerate(self.sources):
            if src.kind not in ("metadata", "folder"):
                raise ConfigError(f"sources[{i}].kind must be 'metadata' or 'folder', got {src.kind!r}")
            if not src.paths:
                raise ConfigError(f"sources[{i}].paths is empty")
        if any(s.kind == "metadata" for s in self.sources) and not self.crawl.tag_list:
            raise ConfigError("crawl.tag_list is required for metadata sources")
        if self.crawl.tag_list and not Path(self.crawl.tag_list).is_file():
            raise ConfigError(f"crawl.tag_list: no such file {self.crawl.tag_list!r}")
        if self.crawl.output_format not in ("parquet", "webdataset"):
            raise ConfigError("crawl.output_format must be 'parquet' or 'webdataset'")
        modes = ("no", "border", "keep_ratio", "keep_ratio_largest", "center_crop")
        if self.crawl.resize_mode not in modes:
            raise ConfigError(f"crawl.resize_mode must be one of {modes}")
        if self.crawl.max_candidates_per_tag < 1:
            raise ConfigError("crawl.max_candidates_per_tag must be >= 1")
        if self.crawl.timeout <= 0 or self.crawl.max_body_bytes <= 0:
            raise ConfigError("crawl.timeout and crawl.max_body_bytes must be > 0")
        if self.group.min_group_size < 2:
            raise ConfigError("group.min_group_size must be >= 2 (a target needs a reference)")
        if self.group.max_group_size < self.group.min_group_size:
            raise ConfigError("group.max_group_size must be >= group.min_group_size")
        if self.split.held_out_groups < 0 or self.split.held_in_groups < 0:
            raise ConfigError("split sizes must be >= 0")
        if self.executor.name not in ("local", "ray"):
            raise ConfigError("executor.name must be 'local' or 'ray'")
        if self.executor.workers < 1:
            raise ConfigError("executor.workers must be >= 1")
        self._validate_visual()

    def _validate_visual(self) -> None:
        """Embed, dedup, filter, audit and visual grouping settings; model names are checked against the
        registries (no model is loaded here)."""
        from mrbench.curation.embed import check_models

        for name in ("encoder_options", "face_options", "detector_options"):
            if not isinstance(getattr(self.embed, name), dict):
                raise ConfigError(f"embed.{name} must be a mapping")
        if self.embed.batch_size < 1:
            raise ConfigError("embed.batch_size must be >= 1")
        check_models(self.embed)
        for key, value in (("dedup.threshold", self.dedup.threshold), ("group.identity_threshold", self.group.identity_threshold),
                           ("group.dedup_threshold", self.group.dedup_threshold), ("group.visual_threshold", self.group.visual_threshold),
                           ("audit.near_dup_threshold", self.audit.near_dup_threshold),
                           ("audit.identity_threshold", self.audit.identity_threshold)):
            if value is not None and not -1.0 <= value <= 1.0:
                raise ConfigError(f"{key} is a cosine similarity in [-1, 1], got {value}")
        if self.dedup.threshold is not None and self.dedup.threshold <= 0.05:
            raise ConfigError("dedup.threshold must be > 0.05 (it marks near-duplicates)")
        if self.dedup.exact_max < 2 or self.dedup.nprobe < 1:
            raise ConfigError("dedup.exact_max must be >= 2 and dedup.nprobe >= 1")
        if self.filters.min_side < 0 or self.filters.max_aspect < 0:
            raise ConfigError("filters.min_side and filters.max_aspect must be >= 0")
        if not 0.0 <= self.filters.face_min_area <= 1.0 or not 0.0 < self.filters.face_max_other <= 1.0:
            raise ConfigError("filters.face_min_area must be in [0, 1] and filters.face_max_other in (0, 1]")
        if not isinstance(self.filters.object_classes, dict):
            raise ConfigError("filters.object_classes must be a mapping of tag name to COCO class")
        if self.group.visual_groups < 0 or self.group.consistency_mad < 0:
            raise ConfigError("group.visual_groups and group.consistency_mad must be >= 0")


def from_dict(cls: type[T], data: dict[str, Any] | None, path: str = "") -> T:
    """Build dataclass ``cls`` from a plain dict, rejecting unknown keys and converting nested types."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(data) - names
    if unknown:
        raise ConfigError(unknown_keys_message(sorted(unknown), sorted(names), path, "config key"))
    kwargs = {k: _convert(hints[k], v, f"{path}{k}") for k, v in data.items()}
    return cls(**kwargs)


def _convert(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{path} must be a mapping")
        return from_dict(tp, value, path + ".")
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{path} must be a list")
        return [_convert(item_tp, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(args[0], value, path)
    if tp is bool:
        if isinstance(value, str):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
        if not isinstance(value, bool):
            raise ConfigError(f"{path} must be true or false, got {value!r}")
        return value
    if tp in (int, float):
        try:
            return tp(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{path} must be a number, got {value!r}") from None
    if tp is str:
        return str(value)
    return value


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``a.b=value`` (value read as YAML, so ``true``, ``3``, ``[1,2]`` work)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    key, _, raw = text.partition("=")
    return key.strip().split("."), yaml.safe_load(raw)


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> T:
    """Load ``cls`` from defaults, then a YAML file, then ``key=value`` overrides; relative paths in
    the YAML (``paths``, ``tag_list``) are resolved against the YAML file's folder."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
        data = _resolve_paths(loaded, path.parent)
    for ov in overrides:
        keys, value = parse_override(ov)
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {ov!r}: {k} is not a mapping")
        node[keys[-1]] = value
    cfg = from_dict(cls, data)
    if hasattr(cfg, "validate"):
        cfg.validate()
    return cfg


def _resolve_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    def fix(p: str) -> str:
        return p if "://" in p or Path(p).is_absolute() else str((base / p).resolve())

    crawl = data.get("crawl")
    if isinstance(crawl, dict) and isinstance(crawl.get("tag_list"), str) and crawl["tag_list"]:
        crawl["tag_list"] = fix(crawl["tag_list"])
    for src in data.get("sources") or []:
        if isinstance(src, dict) and isinstance(src.get("paths"), list):
            src["paths"] = [fix(p) for p in src["paths"]]
    return data


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-dict view of a config dataclass (for run folders and manifests)."""
    return dataclasses.asdict(cfg)


def unknown_keys_message(unknown: list[str], valid: list[str], prefix: str = "", what: str = "config key") -> str:
    """``unknown config key(s) crawl.timout (did you mean 'crawl.timeout'?); valid keys under crawl: ...``."""
    import difflib

    named = []
    for k in unknown:
        close = difflib.get_close_matches(k, valid, n=1, cutoff=0.6)
        named.append(prefix + k + (f" (did you mean {prefix + close[0]!r}?)" if close else ""))
    where = f" under {prefix.rstrip('.')}" if prefix else ""
    return f"unknown {what}(s) {', '.join(named)}; valid {what}s{where}: {', '.join(valid)}"
