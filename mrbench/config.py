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
    """

    min_group_size: int = 2
    max_group_size: int = 64
    max_references: int = 8


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
        workers: Parallel shard workers (local), or CPUs per task hint (ray).
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


def from_dict(cls: type[T], data: dict[str, Any] | None, path: str = "") -> T:
    """Build dataclass ``cls`` from a plain dict, rejecting unknown keys and converting nested types."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(sorted(path + k for k in unknown))}")
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
