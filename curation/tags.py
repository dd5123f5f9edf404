"""Tag lists and caption matching.

A tag list names what to crawl: celebrities, characters, styles and subjects, each with aliases. Matching is
case-insensitive, on word boundaries, after a multilingual-safe normalisation (NFKC, accents folded, casefold,
hyphens/underscores as spaces, whitespace collapsed). Scripts written without spaces between words (CJK, Thai...)
cannot use word boundaries, so aliases in them match as substrings.
"""

from __future__ import annotations

import csv
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import yaml

CATEGORIES = ("celebrity", "character", "style", "subject")
_SEPARATORS = re.compile(r"[\s\-_\u2010-\u2015\u00b7/]+")


def normalize(text: str) -> str:
    """NFKC, fold accents (é -> e), casefold, turn hyphens/underscores/slashes into single spaces."""
    text = unicodedata.normalize("NFKC", text)
    decomposed = unicodedata.normalize("NFD", text)
    # Drop combining marks only when the base is Latin/Greek/Cyrillic; in other scripts they carry meaning.
    out = []
    for ch in decomposed:
        if unicodedata.combining(ch) and out and _is_alphabetic_script(out[-1]):
            continue
        out.append(ch)
    text = unicodedata.normalize("NFC", "".join(out)).casefold()
    return _SEPARATORS.sub(" ", text).strip()


def _is_alphabetic_script(ch: str) -> bool:
    return ord(ch) < 0x0530  # Latin, Greek, Cyrillic, Armenian blocks


def _unspaced_script(text: str) -> bool:
    """True when ``text`` has characters of scripts that do not separate words by spaces."""
    for ch in text:
        cp = ord(ch)
        if (
            0x0E00 <= cp <= 0x0EFF  # Thai, Lao
            or 0x1000 <= cp <= 0x109F  # Myanmar
            or 0x1780 <= cp <= 0x17FF  # Khmer
            or 0x3040 <= cp <= 0x30FF  # Hiragana, Katakana
            or 0x3400 <= cp <= 0x9FFF  # CJK
            or 0xAC00 <= cp <= 0xD7AF  # Hangul syllables (spaced, but particles attach to names)
            or 0xF900 <= cp <= 0xFAFF
            or 0x20000 <= cp <= 0x2FFFF
        ):
            return True
    return False


@dataclass
class Tag:
    """One crawl target."""

    name: str
    category: str
    aliases: list[str] = field(default_factory=list)

    @property
    def slug(self) -> str:
        s = re.sub(r"[^\w]+", "_", normalize(self.name)).strip("_")
        return s or "tag"


class TagList:
    """Tags loaded from YAML (list of {name, category, aliases}) or TSV (name, category, aliases|sep|by|bars)."""

    def __init__(self, tags: list[Tag]) -> None:
        seen: set[str] = set()
        for t in tags:
            if t.category not in CATEGORIES:
                raise ValueError(f"tag {t.name!r}: category must be one of {CATEGORIES}, got {t.category!r}")
            if t.name in seen:
                raise ValueError(f"tag {t.name!r} is listed twice")
            seen.add(t.name)
        self.tags = tags
        self.by_name = {t.name: t for t in tags}

    @classmethod
    def load(cls, path: str | Path) -> "TagList":
        path = Path(path)
        if path.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(path.read_text()) or []
            if isinstance(data, dict):
                data = data.get("tags", [])
            tags = []
            for i, item in enumerate(data):
                if not isinstance(item, dict) or "name" not in item or "category" not in item:
                    raise ValueError(f"{path}: entry {i} needs 'name' and 'category'")
                tags.append(Tag(str(item["name"]), str(item["category"]), [str(a) for a in item.get("aliases", [])]))
            return cls(tags)
        tags = []
        with open(path, newline="", encoding="utf-8") as f:
            for i, row in enumerate(csv.reader(f, delimiter="\t")):
                if not row or row[0].startswith("#"):
                    continue
                if len(row) < 2:
                    raise ValueError(f"{path}:{i + 1}: expected name<TAB>category[<TAB>alias|alias]")
                aliases = [a for a in row[2].split("|") if a] if len(row) > 2 else []
                tags.append(Tag(row[0].strip(), row[1].strip(), [a.strip() for a in aliases]))
        return cls(tags)


class TagMatcher:
    """Finds the tags a caption mentions, in order of first mention."""

    def __init__(self, tags: TagList) -> None:
        self.tags = tags
        self._alias_to_tag: dict[str, str] = {}
        spaced, unspaced = [], []
        for tag in tags.tags:
            for alias in [tag.name, *tag.aliases]:
                key = normalize(alias)
                if not key:
                    continue
                owner = self._alias_to_tag.setdefault(key, tag.name)
                if owner != tag.name:
                    raise ValueError(f"alias {alias!r} belongs to both {owner!r} and {tag.name!r}")
                (unspaced if _unspaced_script(key) else spaced).append(key)
        # Longest first so "spider man 2099" wins over "spider man".
        def alternation(keys: list[str]) -> str:
            return "|".join(re.escape(k) for k in sorted(set(keys), key=lambda k: (-len(k), k)))

        self._spaced = re.compile(rf"(?<!\w)(?:{alternation(spaced)})(?!\w)") if spaced else None
        self._unspaced = re.compile(alternation(unspaced)) if unspaced else None

    def match(self, caption: str | None) -> list[str]:
        """Canonical tag names mentioned in ``caption``, first mention first, each once."""
        if not caption:
            return []
        text = normalize(caption)
        hits: list[tuple[int, str]] = []
        for pattern in (self._spaced, self._unspaced):
            if pattern is not None:
                hits.extend((m.start(), self._alias_to_tag[m.group(0)]) for m in pattern.finditer(text))
        out: list[str] = []
        for _, name in sorted(hits):
            if name not in out:
                out.append(name)
        return out
