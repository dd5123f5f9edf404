"""Config dataclasses, YAML loading and ``key.sub=value`` overrides (CLI > YAML > defaults).

Every config is validated before any work starts; a bad value raises :class:`ConfigError` naming the key.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is missing, unknown or out of range."""


class InputError(ConfigError):
    """An input named by the config (a source file, the tag list) cannot be read; the message names the file."""


# Constraints of one config field, declared next to it with :func:`option` and checked by :func:`validate_fields`
# before any work; a new field gets validated by declaring its range or choices, not by editing ``validate``.
_META = "mrbench"
COSINE = "a cosine similarity"
RESIZE_MODES = ("no", "border", "keep_ratio", "keep_ratio_largest", "center_crop")  # img2dataset's ResizeMode
ENCODE_FORMATS = ("jpg", "png", "webp")  # what img2dataset's resizer encodes
PARQUET_CODECS = ("none", "snappy", "gzip", "brotli", "lz4", "lz4_raw", "zstd")  # what pyarrow's parquet writer takes


def option(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING,
           ge: float | None = None, gt: float | None = None, le: float | None = None, lt: float | None = None,
           choices: tuple[str, ...] | None = None, nonempty: bool = False,
           check: typing.Callable[[Any], str | None] | None = None, why: str = "") -> Any:
    """A dataclass field carrying its constraints.

    Args:
        default: Default value (or ``default_factory`` for lists and dicts).
        ge: Smallest allowed value (numbers); ``gt``, ``le``, ``lt`` likewise.
        choices: Allowed values (strings).
        nonempty: A string or list must not be empty.
        check: ``check(value) -> problem or None`` for rules that need code (e.g. a codec pyarrow lacks).
        why: Added to the error message (e.g. "a cosine similarity").

    Every number is also checked to be finite, and every value to have the field's type (``int`` fields take no
    fractions), whether or not constraints are given.
    """
    meta = {"ge": ge, "gt": gt, "le": le, "lt": lt, "choices": choices, "nonempty": nonempty, "check": check,
            "why": why}
    return field(default=default, default_factory=default_factory,  # type: ignore[call-overload]
                 metadata={_META: {k: v for k, v in meta.items() if v is not None and v is not False and v != ""}})


def _check_license(value: str) -> str | None:
    # The Hub's license ids are lowercase SPDX-like tokens (apache-2.0, cc-by-nc-4.0, other); anything else is
    # rejected by its metadata check.
    if not re.fullmatch(r"[a-z0-9][a-z0-9.+-]*", value):
        return f"must be a Hub license id such as cc-by-4.0, mit or other (lowercase), got {value!r}"
    return None


def _check_compression(value: str) -> str | None:
    if value.lower() not in PARQUET_CODECS:
        return f"must be one of {', '.join(PARQUET_CODECS)}, got {value!r}"
    import pyarrow as pa

    if value.lower() != "none" and not pa.Codec.is_available(value.lower()):
        return f"codec {value!r} is not built into this pyarrow"
    return None


def _check_executor(value: str) -> str | None:
    from mrbench.executors import EXECUTORS  # lazy: executors imports this module

    names = [e.name for e in EXECUTORS]
    return None if value in names else f"must be one of {', '.join(names)}, got {value!r}"


def _type_problem(tp: Any, value: Any) -> str | None:
    """Why ``value`` is not of type ``tp`` (None when it is); numbers must be finite."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(tp):
            return None
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
        origin = typing.get_origin(tp)
    if tp is bool:
        return None if isinstance(value, bool) else f"must be true or false, got {value!r}"
    if tp is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else f"must be an integer, got {value!r}"
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"must be a number, got {value!r}"
        return None if math.isfinite(value) else f"must be a finite number, got {value!r}"
    if tp is str:
        return None if isinstance(value, str) else f"must be a string, got {value!r}"
    if origin is list:
        if not isinstance(value, list):
            return f"must be a list, got {value!r}"
        (item_tp,) = typing.get_args(tp)
        for i, v in enumerate(value):
            if not dataclasses.is_dataclass(item_tp) and (problem := _type_problem(item_tp, v)):
                return f"item {i} {problem}"
        return None
    if origin is dict:
        return None if isinstance(value, dict) else f"must be a mapping, got {value!r}"
    return None


def _constraint_problem(meta: dict[str, Any], value: Any) -> str | None:
    if value is None:
        return None
    if meta.get("nonempty") and not value:
        return "must not be empty"
    bounds = (("ge", ">=", lambda v, b: v >= b), ("gt", ">", lambda v, b: v > b),
              ("le", "<=", lambda v, b: v <= b), ("lt", "<", lambda v, b: v < b))
    for key, sign, ok in bounds:
        if key in meta and not ok(value, meta[key]):
            return f"must be {sign} {meta[key]}, got {value!r}"
    if "choices" in meta and value not in meta["choices"]:
        return f"must be one of {', '.join(meta['choices'])}, got {value!r}"
    if "check" in meta:
        return meta["check"](value)
    return None


def field_problems(cfg: Any, path: str = "") -> list[str]:
    """Every type and constraint problem of dataclass ``cfg`` and its nested configs, one ``key problem`` text each."""
    problems: list[str] = []
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value, key = getattr(cfg, f.name), f"{path}{f.name}"
        if dataclasses.is_dataclass(value):
            problems += field_problems(value, key + ".")
            continue
        if isinstance(value, list) and value and all(dataclasses.is_dataclass(v) for v in value):
            for i, v in enumerate(value):
                problems += field_problems(v, f"{key}[{i}].")
            continue
        problem = _type_problem(hints[f.name], value)
        meta = f.metadata.get(_META, {})
        if problem is None:
            problem = _constraint_problem(meta, value)
        if problem:
            problems.append(f"{key} {problem}" + (f" ({meta['why']})" if meta.get("why") else ""))
    return problems


def validate_fields(cfg: Any) -> None:
    """Raise one :class:`ConfigError` listing every field of ``cfg`` that breaks its type or declared constraints."""
    problems = field_problems(cfg)
    if problems:
        raise config_problems_error(problems)


@dataclass
class SourceConfig:
    """One input source.

    Attributes:
        kind: ``metadata`` (LAION/COYO/DataComp-style parquet, csv or jsonl files) or ``folder`` (local images).
        paths: Files, folders or glob patterns. Folders of ``metadata`` sources are searched for ``*.parquet``.
        url_col: Column holding the image URL (``URL`` in LAION, ``url`` in COYO/DataComp).
        caption_col: Column holding the caption (``TEXT`` in LAION, ``text`` in COYO/DataComp).
        folder_tag: For ``folder`` sources, use the image's sub-folder name as its tag.
        where: ``metadata`` sources: a SQL predicate over the source's own columns (duckdb syntax, e.g.
            ``punsafe < 0.1 AND pwatermark < 0.8``); rows for which it is not true are counted
            (``ingest/where_failed``) and never downloaded. Empty: every row.
        keep_columns: ``metadata`` sources: columns of the source carried into the release as columns of their own
            (e.g. ``punsafe``, ``similarity``); a column of that name must not clash with a release column.
    """

    kind: str = option("metadata", choices=("metadata", "folder"))
    paths: list[str] = option(default_factory=list, nonempty=True)
    url_col: str = option("url", nonempty=True)
    caption_col: str = option("caption", nonempty=True)
    folder_tag: bool = True
    where: str = ""
    keep_columns: list[str] = field(default_factory=list)


BLOCKLIST_KINDS = ("url", "domain", "id", "sha256", "phash")


@dataclass
class BlocklistConfig:
    """One block list: a text file, one entry a line (``#`` starts a comment).

    Attributes:
        path: The file.
        kind: ``url`` (exact URL), ``domain`` (a host and its sub-domains), ``id`` (release ids), ``sha256`` (of the
            image bytes as released), ``phash`` (64-bit perceptual hash, 16 hex digits, as ``imagehash.phash``
            prints it).
        max_distance: ``phash`` lists: an image within this many differing bits of an entry is blocked.
    """

    path: str = option("", nonempty=True)
    kind: str = option("url", choices=BLOCKLIST_KINDS)
    max_distance: int = option(4, ge=0, le=32)


@dataclass
class CrawlConfig:
    """Tag matching and download settings (MRBench's fetch loop under the egress policy, ``curation.netguard``).

    Attributes:
        tag_list: Path to the tag list (YAML or TSV: name, category, aliases).
        max_candidates_per_tag: Cap on candidate URLs per tag, chosen by a seeded hash (deterministic).
        require_tag: Drop metadata rows whose caption matches no tag (folder images always keep their folder tag).
        allow_private_network: Allow URLs resolving to private/loopback/link-local/metadata addresses.
        max_body_bytes: Bodies larger than this are refused (``oversize_body``).
        max_image_pixels: Images declaring more pixels are refused (``decompression_bomb``).
        timeout: Per-request timeout in seconds.
        retries: Retries per URL for timeouts, connection errors, 429 and 5xx (never 403/404), with backoff.
        thread_count: Download threads per worker process.
        output_format: Accepted for older configs and ignored: download shards are parquet.
        resize_mode: ``no`` keeps the publisher's bytes; ``border``, ``keep_ratio``, ``keep_ratio_largest``,
            ``center_crop`` (img2dataset's modes) resize to ``image_size`` and re-encode.
        image_size: Target size for resize modes other than ``no``.
        encode_format: ``jpg``, ``png`` or ``webp`` when re-encoding.
        user_agent_token: Named in the downloader's User-Agent.
        max_redirects: Redirects followed per URL; a longer chain is ``too_many_redirects``.
        backoff_base: First retry waits up to this many seconds; each further retry doubles it (full jitter).
        backoff_max: Upper bound of one backoff wait.
        retry_after_max: A server's ``Retry-After`` is honoured up to this many seconds.
        max_per_domain: Concurrent requests per host name, across every download worker and node (0: no limit).
        convert_format: Re-encode every image to ``encode_format`` even without a resize (off: the publisher's
            bytes are kept whenever ``resize_mode`` is ``no``).
        disallowed_header_directives: ``X-Robots-Tag`` directives that make an image ``opted_out`` (before its body
            is read), unscoped or scoped to ``user_agent_token`` (``X-Robots-Tag: mrbench: noai``); img2dataset's
            defaults. An empty list turns the check off.
        honor_tdm_reservation: A ``tdm-reservation: 1`` header (W3C TDMRep) makes an image ``opted_out``.
        blocklists: Files of URLs, domains, record ids, sha256 digests or perceptual hashes never to release
            (``curation.blocklist``); URL, domain and id rows are dropped at selection (never requested), hash
            rows after download.
    """

    tag_list: str = ""
    max_candidates_per_tag: int = option(1000, ge=1)
    require_tag: bool = True
    allow_private_network: bool = False
    max_body_bytes: int = option(20 * 1024 * 1024, ge=1)
    max_image_pixels: int = option(64_000_000, ge=1)
    timeout: float = option(10.0, gt=0, le=3600)
    retries: int = option(0, ge=0, le=100)
    thread_count: int = option(16, ge=1, le=1024)
    output_format: str = option("parquet", choices=("parquet", "webdataset"))
    resize_mode: str = option("no", choices=RESIZE_MODES)
    image_size: int = option(512, ge=1, le=65535)
    encode_format: str = option("jpg", choices=ENCODE_FORMATS)
    user_agent_token: str = "mrbench"
    max_redirects: int = option(10, ge=0, le=100)
    backoff_base: float = option(0.5, ge=0, le=3600)
    backoff_max: float = option(30.0, ge=0, le=3600)
    retry_after_max: float = option(60.0, ge=0, le=3600)
    max_per_domain: int = option(0, ge=0, le=10_000)
    convert_format: bool = False
    disallowed_header_directives: list[str] = field(
        default_factory=lambda: ["noai", "noimageai", "noindex", "noimageindex"])
    honor_tdm_reservation: bool = True
    blocklists: list[BlocklistConfig] = field(default_factory=list)


@dataclass
class GroupConfig:
    """Grouping settings.

    Attributes:
        min_group_size: Groups with fewer ok images are dropped (a target needs at least one reference).
        max_group_size: Larger groups keep this many images, chosen by seeded hash.
        max_references: References per group in the EasyRef export.
        identity_threshold: Face cosine similarity of one identity when clustering the faces of a person group
            (None: the face encoder's identity threshold, ``mrbench.thresholds``); the dominant identity stays.
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

    min_group_size: int = option(2, ge=2, why="a target needs a reference")
    max_group_size: int = option(64, ge=2)
    max_references: int = option(8, ge=1)
    identity_threshold: float | None = option(None, ge=-1.0, le=1.0, why=COSINE)
    consistency_min: float = option(0.7, ge=-1.0, le=1.0, why=COSINE)
    consistency_mad: float = option(0.0, ge=0)
    consistency_categories: list[str] = field(default_factory=lambda: ["subject", "style"])
    dedup_threshold: float | None = option(0.92, ge=-1.0, le=1.0, why=COSINE)
    visual_groups: int = option(0, ge=0)
    visual_threshold: float | None = option(None, ge=-1.0, le=1.0, why=COSINE)


@dataclass
class EmbedConfig:
    """Models run per download shard; an empty name turns off every step that needs that model.

    With the defaults (all empty) the curation run is the tag-only foundation. Offline choices with real weights:
    ``encoder: mobilenet_v2`` and ``face_encoder: dlib``.

    Attributes:
        encoder: Image encoder (``mrbench ls encoders``) for dedup, outlier removal, visual grouping and the
            near-duplicate leakage audit.
        encoder_options: Keyword options for it (``mrbench ls encoders``).
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
    batch_size: int = option(32, ge=1)


@dataclass
class DedupConfig:
    """Near-duplicate removal over all images (global) with faiss; see ``curation.dedup``.

    Attributes:
        enabled: Run it (needs ``embed.encoder``).
        threshold: Cosine similarity at or above which two images are near-duplicates; None uses the image
            encoder's near-duplicate threshold (``mrbench.thresholds``: the run's calibration file, else the one
            measured for the encoder, else an uncalibrated fallback).
        exact_max: Sets up to this size are range-searched exactly; larger ones are partitioned (k-means).
        nprobe: Cells compared per vector in the partitioned search.
    """

    enabled: bool = True
    threshold: float | None = option(None, gt=0.05, le=1.0, why="it marks near-duplicates")
    exact_max: int = option(50_000, ge=2)
    nprobe: int = option(4, ge=1)


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

    min_side: int = option(0, ge=0)
    max_aspect: float = option(0.0, ge=0)
    face: bool = True
    face_min_area: float = option(0.01, ge=0, le=1.0)
    face_min_score: float = option(0.5, ge=0, le=1.0)
    face_max_other: float = option(0.5, gt=0, le=1.0)
    object: bool = True
    object_min_score: float = option(0.5, ge=0, le=1.0)
    object_classes: dict[str, str] = field(default_factory=dict)


@dataclass
class SafetyConfig:
    """The safety filter on stored image embeddings (``curation.safety``), for sources without safety columns.

    Attributes:
        classifier: A registered safety classifier (``mrbench ls safety``: ``laion-nsfw-h14``, LAION's NSFW
            detector on CLIP ViT-H-14 embeddings); empty turns the step off. Needs ``embed.encoder``.
        options: Keyword options for it (``checkpoint: PATH`` for the LAION weights).
        threshold: Images scoring at or above this are dropped (``unsafe``); the score of every image is kept in
            ``safety/``.
    """

    classifier: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    threshold: float = option(0.5, ge=0.0, le=1.0, why="a probability")


@dataclass
class AuditConfig:
    """Leakage audit across train / held-in / held-out (needs ``embed.encoder`` or ``embed.face_encoder``).

    Attributes:
        enabled: Run the audit and write ``audit/leakage.json`` and ``audit/leaks.parquet``.
        near_dup_threshold: Image cosine similarity at or above which two images in different splits leak (None:
            the image encoder's near-duplicate threshold, ``mrbench.thresholds``).
        identity_threshold: Face cosine similarity for "same person" (None: the face encoder's identity threshold,
            ``mrbench.thresholds``).
        remove_train_leaks: Drop the training image of every leaking pair (``leak_near_duplicate``,
            ``leak_identity``); pairs between the two test splits are reported only.
    """

    enabled: bool = True
    near_dup_threshold: float | None = option(None, ge=-1.0, le=1.0, why=COSINE)
    identity_threshold: float | None = option(None, ge=-1.0, le=1.0, why=COSINE)
    remove_train_leaks: bool = True


@dataclass
class SplitConfig:
    """Split by group: held-out groups first, then held-in, the rest train (paper sizes by default)."""

    held_out_groups: int = option(50, ge=0)
    held_in_groups: int = option(300, ge=0)


@dataclass
class ReleaseConfig:
    """Release settings.

    Attributes:
        name: Dataset name written in the card and manifest.
        easyref_json: Also export EasyRef's training JSON (three record shapes).
        compression: Parquet compression codec.
        license: License id written in the dataset card's YAML header (a Hub license id: ``cc-by-4.0``, ``mit``,
            ``other``, ...). ``other`` by default: a web crawl's images stay their owners' property.
        license_note: What the card says under "License" (who holds the image rights).
    """

    name: str = option("mrbench", nonempty=True)
    easyref_json: bool = True
    compression: str = option("zstd", check=_check_compression)
    license: str = option("other", check=_check_license)
    license_note: str = option("The images belong to their rights holders; each row's url names where it came from. "
                               "Check the terms of each source before using an image.", nonempty=True)


@dataclass
class ExecutorConfig:
    """Which executor runs the shards.

    Attributes:
        name: A registered executor (``mrbench ls executors``; built in: processes on this machine, the default,
            and Ray), checked against the registry.
        workers: Parallel shard workers (local); for ray, the CPUs of the local cluster it starts when no
            ``ray_address`` is given (1: all CPUs). Ray tasks take one CPU each.
        ray_address: Address for ``ray.init`` (None starts a local cluster).
        cpus_per_task: CPUs one task of a model step (embed) reserves on Ray; the local executor runs at most
            ``cpu_count / cpus_per_task`` such tasks at once. Other steps' tasks take one CPU.
        gpus_per_task: GPUs one task of a model step reserves (fractions share a GPU: 0.5 runs two tasks per GPU);
            None: 1 where the cluster (Ray) or machine (local: ``CUDA_VISIBLE_DEVICES``, else torch's count) has
            GPUs, 0 where it has none. Other steps' tasks take no GPU. Locally, a step that takes GPUs runs
            ``visible GPUs / gpus_per_task`` workers at most, each pinned to its GPU(s).
        memory_per_task_gb: Memory (GiB) one task of a model step reserves on Ray (0: none); Ray places tasks on
            nodes with that much free. Not reserved by the local executor.
        max_retries: Ray retries a shard whose worker process or node was lost this many times, on any node (shards
            are idempotent: output, stats, then marker are written, so a rerun replaces a half-done shard). An
            error raised by the shard's own code is not retried, except ``ConnectionError`` / ``TimeoutError``
            (storage or network blips).
    """

    name: str = option("local", check=_check_executor)
    workers: int = option(1, ge=1)
    ray_address: str | None = None
    cpus_per_task: float = option(1.0, gt=0)
    gpus_per_task: float | None = option(None, ge=0)
    memory_per_task_gb: float = option(0.0, ge=0)
    max_retries: int = option(3, ge=0)


@dataclass
class CurateConfig:
    """Top-level curation config; see ``configs/*.yaml`` for examples.

    Attributes:
        calibration: A calibration file written by ``mrbench calibrate``: its thresholds apply per encoder (identity
            for the face encoder; near-duplicates for the image encoder) wherever the config sets none.
    """

    seed: int = option(0, ge=0)
    num_shards: int = option(4, ge=1)
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
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    calibration: str = ""

    def validate(self) -> None:
        """Raise :class:`ConfigError` for any value that would make the run fail later.

        Field types, ranges and choices come from each field's :func:`option`; the rules that relate several fields
        or read a file (the tag list) are here.
        """
        validate_fields(self)
        if not self.sources:
            raise ConfigError("sources: at least one source is required")
        if any(s.kind == "metadata" for s in self.sources) and not self.crawl.tag_list:
            raise ConfigError("crawl.tag_list is required for metadata sources")
        if self.crawl.tag_list:
            check_tag_list(self.crawl.tag_list)
        if self.calibration:
            from mrbench.thresholds import load_calibration  # lazy: thresholds imports this module

            load_calibration(self.calibration)
        if self.group.max_group_size < self.group.min_group_size:
            raise ConfigError("group.max_group_size must be >= group.min_group_size")
        if self.crawl.output_format != "parquet":  # kept so that older configs load; say that it does nothing
            from mrbench.log import get_logger, warn_once

            warn_once(get_logger(__name__), "crawl.output_format",
                      f"crawl.output_format={self.crawl.output_format!r} is ignored: download shards and the release "
                      "are parquet (remove the key)")
        self._validate_visual()

    def _validate_visual(self) -> None:
        """Embed, dedup, filter, audit and visual grouping settings; model names are checked against the
        registries (no model is loaded here)."""
        check_embed_models(self.embed)
        if self.safety.classifier:
            check_safety_classifier(self.safety, self.embed)


def check_embed_models(config: EmbedConfig) -> None:
    """Check the configured model names against the backend registries (nothing is loaded); raises ConfigError."""
    from mrbench.backends import DETECTORS, ENCODERS  # lazy: the backends package is not needed to load a config
    from mrbench.registry import UnknownEntryError

    def kind(name: str) -> str:  # image, text-image or face: registered with each encoder
        return dict(ENCODERS.entry(name).meta).get("kind", "image")

    try:
        if config.encoder and kind(config.encoder) == "face":
            raise ConfigError(f"embed.encoder {config.encoder!r} is a face encoder; set it as embed.face_encoder")
        if config.face_encoder and kind(config.face_encoder) != "face":
            raise ConfigError(f"embed.face_encoder {config.face_encoder!r} is not a face encoder")
        if config.detector:
            DETECTORS.entry(config.detector)
    except UnknownEntryError as e:
        raise ConfigError(f"embed: {e}") from None


def check_safety_classifier(safety: SafetyConfig, embed: EmbedConfig) -> None:
    """The safety classifier is registered and reads the embedding the run stores (nothing is loaded)."""
    from mrbench.backends import SAFETY_CLASSIFIERS
    from mrbench.registry import UnknownEntryError

    try:
        meta = dict(SAFETY_CLASSIFIERS.entry(safety.classifier).meta)
    except UnknownEntryError as e:
        raise ConfigError(f"safety: {e}") from None
    if not embed.encoder:
        raise ConfigError(f"safety.classifier {safety.classifier!r} scores image embeddings: set embed.encoder")
    want = meta.get("encoder")
    if want and embed.encoder != want:
        raise ConfigError(f"safety.classifier {safety.classifier!r} reads {want} {meta.get('arch', '')} embeddings, "
                          f"not {embed.encoder!r}: set embed.encoder: {want}")
    arch = meta.get("arch")
    if arch and arch not in str(embed.encoder_options.get("model", "")):
        raise ConfigError(f"safety.classifier {safety.classifier!r} reads {want} {arch} embeddings: set "
                          f"embed.encoder_options.model to a {arch} tag (e.g. {arch}/laion2b_s32b_b79k)")


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
    cfg.validate()
    return cfg


def check_tag_list(path: str | Path) -> None:
    """Load the tag list once (as the crawl will) so a missing, malformed or empty one fails before any work.

    Raises:
        InputError: naming the file (and the line and column of a YAML syntax error).
    """
    import csv

    from mrbench.curation.tags import load_tag_list  # lazy: the core imports no curation module at import time

    path = Path(path)
    if not path.is_file():
        raise InputError(f"crawl.tag_list: no such file {str(path)!r}")
    try:
        tags = load_tag_list(path)  # parsed once per process and file version
    except yaml.YAMLError as e:
        raise InputError(yaml_error_message(path, e)) from None
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except (ValueError, TypeError, KeyError, AttributeError, csv.Error, OSError) as e:
        raise InputError(f"{path}: {e}" if str(path) not in str(e) else str(e)) from None
    if not tags.tags:
        raise InputError(f"crawl.tag_list {path} has no tags: nothing would be crawled")


def yaml_error_message(path: str | Path, error: yaml.YAMLError) -> str:
    """``FILE:LINE:COLUMN: problem`` for a YAML error (PyYAML's own text names ``<unicode string>``)."""
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    problem = " ".join(p for p in (getattr(error, "context", None), getattr(error, "problem", None)) if p)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    return f"{where}: invalid YAML: {problem or error}"


def load_yaml(path: str | Path) -> Any:
    """Parse a YAML file; syntax and encoding errors become :class:`ConfigError` naming file, line and column."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(yaml_error_message(path, e)) from None


def from_dict(cls: type[T], data: dict[str, Any] | None, path: str = "", problems: list[str] | None = None) -> T:
    """Build dataclass ``cls`` from a plain dict, rejecting unknown keys and converting nested types.

    Args:
        problems: Collect every problem here (an unknown key, a value of the wrong type, at any depth) and build the
            config from the valid keys only; None raises :class:`ConfigError` at the first one.
    """
    collect = problems is not None
    problems = [] if problems is None else problems
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(data) - names
    if unknown:
        message = unknown_keys_message(sorted(unknown), sorted(names), path, "config key")
        if not collect:
            raise ConfigError(message)
        problems.append(message)
    kwargs = {}
    for k, v in data.items():
        if k in unknown:
            continue
        try:
            kwargs[k] = _convert(hints[k], v, f"{path}{k}", problems if collect else None)
        except ConfigError as e:
            if not collect:
                raise
            problems.append(str(e))
    return cls(**kwargs)


def config_problems_error(problems: list[str]) -> ConfigError:
    """One :class:`ConfigError` listing every problem (one per line when there are several)."""
    listed = "\n  ".join(problems)
    return ConfigError(problems[0] if len(problems) == 1 else f"{len(problems)} config problems:\n  {listed}")


def _convert(tp: Any, value: Any, path: str, problems: list[str] | None = None) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{path} must be a mapping")
        return from_dict(tp, value, path + ".", problems)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{path} must be a list")
        return [_convert(item_tp, v, f"{path}[{i}]", problems) for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(args[0], value, path, problems)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path} must be a mapping, got {value!r}")
        return value
    if tp is bool:
        if isinstance(value, str):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
        if not isinstance(value, bool):
            raise ConfigError(f"{path} must be true or false, got {value!r}")
        return value
    if tp is int:
        return _to_int(value, path)
    if tp is float:
        # YAML 1.1 reads "1e-3" as a string; non-finite values are refused by validate_fields with the key named.
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{path} must be a number, got {value!r}")
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{path} must be a number, got {value!r}") from None
    if tp is str:
        # A bare YAML scalar such as 2024 is meant as text; lists, mappings, booleans and null are not.
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ConfigError(f"{path} must be a string, got {value!r}")
        return str(value)
    return value


def _to_int(value: Any, path: str) -> int:
    """An integer from an int, a whole float (``2.0``, ``1.0e+6``) or its text; ``2.7`` is an error, not 2."""
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            raise ConfigError(f"{path} must be an integer, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{path} must be an integer, got {value!r}")
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise ConfigError(f"{path} must be an integer, got {value!r}")
        return int(value)
    return value


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``a.b=value`` (value read as YAML, so ``true``, ``3``, ``[1,2]`` work)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    key, _, raw = text.partition("=")
    if not key.strip() or any(not k for k in key.strip().split(".")):
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    try:
        return key.strip().split("."), yaml.safe_load(raw)
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or e
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({problem})") from None


def apply_overrides(data: dict[str, Any], overrides: "typing.Iterable[str]") -> dict[str, Any]:
    """Set each ``key.sub=value`` override (:func:`parse_override`) in the YAML-shaped ``data``, in place; returns it.

    Raises:
        ConfigError: a malformed override, or one that goes through a key that is not a mapping.
    """
    for ov in overrides:
        keys, value = parse_override(ov)
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {ov!r}: {k} is not a mapping")
        node[keys[-1]] = value
    return data


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
                values: dict[str, Any] | None = None) -> T:
    """Load ``cls`` from defaults, then a YAML file, then ``values``, then ``key=value`` overrides; relative paths in
    the YAML (``paths``, ``tag_list``) are resolved against the YAML file's folder.

    ``values`` are top-level values already typed (command-line flags that were given); a mapping value is merged
    into the YAML's mapping (``--model-args`` over ``model_args:``)."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        loaded = load_yaml(path) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
        data = _resolve_paths(loaded, path.parent)
    for k, v in (values or {}).items():
        data[k] = {**data[k], **v} if isinstance(v, dict) and isinstance(data.get(k), dict) else v
    apply_overrides(data, overrides)
    problems: list[str] = []
    cfg = from_dict(cls, data, problems=problems)
    fields = field_problems(cfg)  # the keys that were read, against their declared constraints
    problems += fields
    if hasattr(cfg, "validate") and not fields:
        try:  # the rules relating several fields (a missing source, a tag list): listed with the rest
            cfg.validate()
        except ConfigError as e:
            if not problems:
                raise
            problems.append(str(e))
    if problems:
        raise config_problems_error(problems)
    return cfg


def _resolve_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    def fix(p: str) -> str:
        return p if "://" in p or Path(p).is_absolute() else str((base / p).resolve())

    if isinstance(data.get("calibration"), str) and data["calibration"]:
        data["calibration"] = fix(data["calibration"])
    crawl = data.get("crawl")
    if isinstance(crawl, dict) and isinstance(crawl.get("tag_list"), str) and crawl["tag_list"]:
        crawl["tag_list"] = fix(crawl["tag_list"])
    for block in (crawl.get("blocklists") or []) if isinstance(crawl, dict) else []:
        if isinstance(block, dict) and isinstance(block.get("path"), str) and block["path"]:
            block["path"] = fix(block["path"])
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
