"""The config machinery: declared field constraints, YAML loading and ``key.sub=value`` overrides (CLI > YAML >
defaults).

Each layer declares its own schema with :func:`option` beside its code (``mrbench.curation.config``,
``mrbench.evaluation.config``; the executor's in :mod:`mrbench.executors`). Every config is validated before any
work starts, once per process (:func:`validate_once`); a bad value raises :class:`ConfigError` naming the key.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import field
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


def option(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING,
           ge: float | None = None, gt: float | None = None, le: float | None = None, lt: float | None = None,
           choices: tuple[str, ...] | None = None, nonempty: bool = False,
           check: typing.Callable[[Any], str | None] | None = None, why: str = "", path: bool = False) -> Any:
    """A dataclass field carrying its constraints.

    Args:
        default: Default value (or ``default_factory`` for lists and dicts).
        ge: Smallest allowed value (numbers); ``gt``, ``le``, ``lt`` likewise.
        choices: Allowed values (strings).
        nonempty: A string or list must not be empty.
        check: ``check(value) -> problem or None`` for rules that need code (e.g. a codec pyarrow lacks).
        why: Added to the error message (e.g. "a cosine similarity").
        path: A file path (a string, or a list of them): relative ones in a YAML file are read from the file's
            folder (:func:`load_config`).

    Every number is also checked to be finite, and every value to have the field's type (``int`` fields take no
    fractions), whether or not constraints are given.
    """
    meta = {"ge": ge, "gt": gt, "le": le, "lt": lt, "choices": choices, "nonempty": nonempty, "check": check,
            "why": why, "path": path}
    return field(default=default, default_factory=default_factory,  # type: ignore[call-overload]
                 metadata={_META: {k: v for k, v in meta.items() if v is not None and v is not False and v != ""}})


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
    the YAML (fields declared ``option(path=True)``) are resolved against the YAML file's folder.

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
        data = _resolve_paths(cls, loaded, path.parent)
    for k, v in (values or {}).items():
        data[k] = {**data[k], **v} if isinstance(v, dict) and isinstance(data.get(k), dict) else v
    apply_overrides(data, overrides)
    problems: list[str] = []
    cfg = from_dict(cls, data, problems=problems)
    fields = field_problems(cfg)  # the keys that were read, against their declared constraints
    problems += fields
    if hasattr(cfg, "validate") and not fields:
        try:  # the rules relating several fields (a missing source, a tag list): listed with the rest
            validate_once(cfg)
        except ConfigError as e:
            if not problems:
                raise
            problems.append(str(e))
    if problems:
        raise config_problems_error(problems)
    return cfg


def _config_type(tp: Any) -> Any:
    """The config dataclass in ``tp`` (``C``, ``C | None``, ``list[C]``), or None."""
    args = [a for a in typing.get_args(tp) if a is not type(None)] if typing.get_origin(tp) is not None else [tp]
    return next((a for a in args if dataclasses.is_dataclass(a)), None)


def _resolve_paths(cls: Any, data: Any, base: Path) -> Any:
    """Resolve, in place, the relative paths of YAML-shaped ``data`` for config ``cls`` (its fields declared
    ``option(path=True)``, at any depth) against ``base``; URLs and absolute paths stay."""
    def fix(p: str) -> str:
        return p if "://" in p or Path(p).is_absolute() else str((base / p).resolve())

    if not isinstance(data, dict):
        return data
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        value = data.get(f.name)
        if f.metadata.get(_META, {}).get("path"):
            if isinstance(value, str) and value:
                data[f.name] = fix(value)
            elif isinstance(value, list):
                data[f.name] = [fix(p) if isinstance(p, str) else p for p in value]
        elif (inner := _config_type(hints[f.name])) is not None:
            for item in value if isinstance(value, list) else [value]:
                _resolve_paths(inner, item, base)
    return data


_VALIDATED: set[tuple[type, str]] = set()


def _named_paths(cfg: Any) -> list[str]:
    """The values of ``cfg``'s fields declared ``option(path=True)``, at any depth."""
    out: list[str] = []
    if not dataclasses.is_dataclass(cfg):
        return out
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name, None)
        if f.metadata.get(_META, {}).get("path"):
            out += [v for v in (value if isinstance(value, list) else [value]) if isinstance(v, str) and v]
        else:
            for item in value if isinstance(value, list) else [value]:
                out += _named_paths(item)
    return out


def _file_state(path: str) -> tuple[str, int, int]:
    """(path, size, mtime_ns) of a local file; (path, -1, -1) for a URL, a folder pattern or a missing file."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return (path, -1, -1)
    return (path, st.st_size, st.st_mtime_ns)


def validate_once(cfg: Any) -> None:
    """``cfg.validate()``, unless a config of the same type and values already passed it in this process: the CLI,
    the pipeline and the API each ask, the checks (the tag list, registries, the calibration file) run once.

    Raises:
        ConfigError: from ``cfg.validate()``.
    """
    # dataclass repr: every field, nested configs included; and the state of every file it names (a tag list or
    # calibration file rewritten since is checked again)
    key = (type(cfg), repr(cfg), tuple(_file_state(p) for p in _named_paths(cfg)))
    if key in _VALIDATED:
        return
    cfg.validate()
    _VALIDATED.add(key)


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
