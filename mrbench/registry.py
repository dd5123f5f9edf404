"""One typed, lazy registry per kind (stages, encoders, detectors, models, metrics, benchmarks).

Entries are either objects or ``"module:attr"`` strings, imported only when asked for, so that
``--model lora`` never imports what ``easyref`` needs. Third parties plug in through the entry-point
group ``mrbench.<kind>``.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class UnknownEntryError(KeyError):
    """Raised for a name no registry entry answers to; the message suggests close names."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain.
        return str(self.args[0])


@dataclass(frozen=True)
class Entry:
    name: str
    target: Any  # an object, or "module:attr"
    help: str = ""
    meta: tuple[tuple[str, Any], ...] = ()

    def load(self) -> Any:
        if isinstance(self.target, str):
            module_name, _, attr = self.target.partition(":")
            obj: Any = importlib.import_module(module_name)
            for part in attr.split(".") if attr else []:
                obj = getattr(obj, part)
            return obj
        return self.target


class Registry(Generic[T]):
    """A named, lazy registry for one kind of component.

    Args:
        kind: Human name of the kind ("stage", "encoder", ...), also the entry-point suffix.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        self._entry_points_loaded = False

    def register(self, name: str, target: Any = None, *, help: str = "", replace: bool = False,
                 **meta: Any) -> Callable[[T], T] | None:
        """Register ``target`` under ``name``; used bare as a decorator when ``target`` is None.

        Args:
            replace: Replace what is registered under ``name`` (a built-in included), keeping its place in the
                registration order (the order steps are chained and filters run); the entry records the target it
                replaced (``replaces``). Without it a taken name is an error.
        """
        if target is None:

            def decorator(obj: T) -> T:
                self._add(name, obj, help or _first_doc_line(obj), meta, replace)
                return obj

            return decorator
        self._add(name, target, help, meta, replace)
        return None

    def _add(self, name: str, target: Any, help: str, meta: dict[str, Any], replace: bool = False) -> None:
        old = self._entries.get(name)
        if old is not None and old.target is not target and not replace:
            raise ValueError(f"{self.kind} {name!r} is already registered (pass replace=True to replace it)")
        if old is not None and replace:
            meta = {"replaces": dict(old.meta).get("replaces", old.target), **meta}
            help = help or old.help
        self._entries[name] = Entry(name, target, help, tuple(sorted(meta.items())))

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for ep in entry_points(group=f"mrbench.{self.kind}s"):
            if ep.name not in self._entries:
                self._entries[ep.name] = Entry(ep.name, ep.value, f"(plugin {ep.value})", (("entry_point", True),))

    def unregister(self, name: str) -> None:
        """Remove ``name`` (a test's or a session's own registration); unknown names are ignored."""
        self._entries.pop(name, None)

    def refresh_entry_points(self) -> None:
        """Forget the entry-point entries; they are looked up again when next asked for (after installing one)."""
        self._entries = {k: e for k, e in self._entries.items() if not dict(e.meta).get("entry_point")}
        self._entry_points_loaded = False

    def in_order(self) -> list[Entry]:
        """Every entry in registration order, entry-point plugins last."""
        self._load_entry_points()
        entries = list(self._entries.values())
        return [e for e in entries if not dict(e.meta).get("entry_point")] + \
            [e for e in entries if dict(e.meta).get("entry_point")]

    def entry(self, name: str) -> Entry:
        self._load_entry_points()
        if name not in self._entries:
            close = difflib.get_close_matches(name, list(self._entries), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            known = ", ".join(sorted(self._entries))
            raise UnknownEntryError(f"unknown {self.kind} {name!r}{hint} (known: {known})")
        return self._entries[name]

    def get(self, name: str) -> T:
        """Import (if needed) and return the object registered under ``name``."""
        return self.entry(name).load()

    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        self._load_entry_points()
        return name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        self._load_entry_points()
        return iter(self._entries[n] for n in sorted(self._entries))


def _first_doc_line(obj: Any) -> str:
    doc = getattr(obj, "__doc__", None) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


# The curation pipeline's steps and filters (:mod:`mrbench.stage` says what may be registered). Defined here, beside
# the registry type, so that the run layout can find a step's folder by its name without importing the stage module.
STAGES: Registry[Any] = Registry("stage")
