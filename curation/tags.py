"""Tag lists and caption matching.

A tag list names what to crawl: celebrities, characters, styles and subjects, each with aliases. Matching is
case-insensitive, on word boundaries, after a multilingual-safe normalisation (NFKC, accents folded, casefold,
hyphens/underscores as spaces, whitespace collapsed). Scripts written without spaces between words (CJK, Thai...)
cannot use word boundaries, so aliases in them match as substrings.

Matching runs one Aho-Corasick automaton (pyahocorasick, in C) over the normalised caption, so its cost per caption
does not grow with the number of tags and aliases; only the few occurrences it reports are checked in Python.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import os
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import ahocorasick
import yaml

CATEGORIES = ("celebrity", "character", "style", "subject")
# What a mention of a tag becomes in a leak-free prompt (:meth:`TagMatcher.mask`): the category's noun, so that a
# prompt never names the identity it asks a model to reproduce. A tag's own ``noun`` (a subject's class noun: "a
# dog") overrides its category's.
CATEGORY_NOUN = {"celebrity": "a person", "character": "a character", "style": "the style", "subject": "an object"}
# Separators besides whitespace: each becomes a space, then every run of whitespace one space (str.split() and
# re's \s agree on what whitespace is), which is what replacing runs of ``[\s\-_\u2010-\u2015\u00b7/]`` did.
_ASCII_SEPARATORS = ("-", "_", "/")
_OTHER_SEPARATORS = ("\u00b7", "\u2010", "\u2011", "\u2012", "\u2013", "\u2014", "\u2015")
_ALPHABETIC_LIMIT = 0x0530  # below: Latin, Greek, Cyrillic, Armenian blocks, whose accents are folded away
# Scripts that do not separate words by spaces: their aliases match as substrings.
_UNSPACED = re.compile(
    "["
    "\u0e00-\u0eff"  # Thai, Lao
    "\u1000-\u109f"  # Myanmar
    "\u1780-\u17ff"  # Khmer
    "\u3040-\u30ff"  # Hiragana, Katakana
    "\u3400-\u9fff"  # CJK
    "\uac00-\ud7af"  # Hangul syllables (spaced, but particles attach to names)
    "\uf900-\ufaff"
    "\U00020000-\U0002ffff"
    "]"
)


@functools.cache
def _mark_runs() -> re.Pattern[str]:
    """Runs of combining marks (non-zero canonical combining class) in the BMP, or of any astral character.

    The BMP part compiles to a bitmap, so a scan costs one lookup per character; astral combining marks are few
    and rare, and listing them as ranges would make every character walk that list, so every astral character
    (emoji...) joins a run and :func:`_drop_marks` checks it. Built once per process, on the first non-ASCII text.
    """
    marks = [cp for cp in range(0x10000) if unicodedata.combining(chr(cp))]
    ranges, lo = [], marks[0]
    for prev, cp in zip(marks, marks[1:] + [-1]):
        if cp != prev + 1:
            ranges.append(f"{re.escape(chr(lo))}-{re.escape(chr(prev))}" if prev > lo else re.escape(chr(lo)))
            lo = cp
    return re.compile(f"[{''.join(ranges)}\U00010000-\U0010ffff]+")


def _drop_marks(m: re.Match[str]) -> str:
    """Drop the combining marks of a run that follow a Latin/Greek/Cyrillic character.

    A mark is dropped when the last character kept before it is below U+0530 (that character may be an earlier
    mark of the run), the rule :func:`normalize` has always applied character by character. The character before
    the run is never a mark (runs are maximal), so it is the last one kept.
    """
    start, run = m.start(), m.group()
    last = m.string[start - 1] if start else ""
    kept = []
    for ch in run:
        if last and ord(last) < _ALPHABETIC_LIMIT and unicodedata.combining(ch):
            continue
        kept.append(ch)
        last = ch
    return "".join(kept)


def normalize(text: str) -> str:
    """NFKC, fold accents (é -> e), casefold, turn hyphens/underscores/slashes into single spaces.

    Combining marks are dropped only after a Latin/Greek/Cyrillic base; in other scripts they carry meaning.
    ASCII text skips the Unicode steps (they leave it unchanged), and text without combining marks skips the
    per-mark rule, so the common path is a few calls into C per caption, not a Python loop per character.
    """
    if text.isascii():
        text = text.lower()  # casefold() of ASCII
    else:
        text = unicodedata.normalize("NFKC", text)
        decomposed = unicodedata.normalize("NFD", text)
        runs = _mark_runs()
        if runs.search(decomposed):
            text = unicodedata.normalize("NFC", runs.sub(_drop_marks, decomposed))
        # else NFC(NFD(text)) is text itself: NFKC output is already composed.
        text = text.casefold()
        for sep in _OTHER_SEPARATORS:
            if sep in text:
                text = text.replace(sep, " ")
    for sep in _ASCII_SEPARATORS:
        if sep in text:
            text = text.replace(sep, " ")
    return " ".join(text.split())


def _unspaced_script(text: str) -> bool:
    """True when ``text`` has characters of scripts that do not separate words by spaces."""
    return _UNSPACED.search(text) is not None


def _is_word(ch: str) -> bool:
    """Whether ``ch`` is a word character as Python's ``re`` sees it (Unicode alphanumeric, or underscore)."""
    return ch.isalnum() or ch == "_"


@dataclass
class Tag:
    """One crawl target."""

    name: str
    category: str
    aliases: list[str] = field(default_factory=list)
    noun: str = ""  # what a mention becomes in a leak-free prompt; empty: the category's noun

    @property
    def prompt_noun(self) -> str:
        """The words that replace a mention of this tag in a leak-free prompt."""
        return self.noun or CATEGORY_NOUN.get(self.category, CATEGORY_NOUN["subject"])

    @property
    def slug(self) -> str:
        s = re.sub(r"[^\w]+", "_", normalize(self.name)).strip("_")
        return s or "tag"


_NO_DATA = object()


def load_yaml_data(path: str | Path) -> object:
    """``yaml.safe_load`` of a file, built straight from the C parser's events where the document is plain (scalars,
    sequences, mappings): several times faster than composing nodes first (a 30,000-tag list: about 0.3 s instead of
    3 s). Plain scalars are resolved exactly as the safe loader does (``yes`` is True, ``2024`` an int); a document
    with anchors, aliases, explicit tags or merge keys is loaded by the safe loader itself.

    Raises:
        yaml.YAMLError: as ``yaml.safe_load`` (the parser is the same).
    """
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with open(path, encoding="utf-8") as f:
        data = _from_events(yaml.parse(f, Loader=loader))
    if data is _NO_DATA:
        with open(path, encoding="utf-8") as f:
            data = yaml.load(f, Loader=loader)
    return data


def _from_events(events: Iterable[yaml.Event]) -> object:
    """The document built from parser events, or ``_NO_DATA`` when it uses what only the full loader handles."""
    resolver, constructor = yaml.resolver.Resolver(), yaml.constructor.SafeConstructor()
    str_tag = "tag:yaml.org,2002:str"
    stack: list[list] = []  # [container, pending mapping key]
    root: object = None
    documents = 0

    def add(value: object) -> None:
        nonlocal root
        if not stack:
            root = value
            return
        top = stack[-1]
        if isinstance(top[0], list):
            top[0].append(value)
        elif top[1] is _NO_DATA:
            top[1] = value
        else:
            try:
                top[0][top[1]] = value
            except TypeError:  # an unhashable key: the full loader says so
                raise _Fallback from None
            top[1] = _NO_DATA

    try:
        for ev in events:
            if isinstance(ev, yaml.DocumentStartEvent):
                documents += 1
                if documents > 1:
                    return _NO_DATA  # the safe loader raises its own error for several documents
            elif isinstance(ev, (yaml.StreamStartEvent, yaml.StreamEndEvent, yaml.DocumentEndEvent)):
                continue
            elif isinstance(ev, yaml.AliasEvent) or getattr(ev, "anchor", None):
                return _NO_DATA
            elif isinstance(ev, yaml.ScalarEvent):
                if ev.tag not in (None, "!"):
                    return _NO_DATA
                plain = not ev.style  # None from the Python parser, "" from the C one
                tag = resolver.resolve(yaml.ScalarNode, ev.value, ev.implicit) if plain else str_tag
                if tag == str_tag or ev.tag == "!":
                    add(ev.value)
                elif tag == "tag:yaml.org,2002:merge":
                    return _NO_DATA
                else:
                    add(constructor.yaml_constructors[tag](constructor, yaml.ScalarNode(tag, ev.value)))
            elif isinstance(ev, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
                if ev.tag is not None and not ev.implicit:
                    return _NO_DATA
                stack.append([[] if isinstance(ev, yaml.SequenceStartEvent) else {}, _NO_DATA])
            elif isinstance(ev, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                add(stack.pop()[0])
    except _Fallback:
        return _NO_DATA
    return root


class _Fallback(Exception):
    """The document needs the full loader."""


class TagList:
    """Tags loaded from YAML (list of {name, category, aliases, noun}) or TSV (name, category, aliases|sep|by|bars,
    noun); ``noun`` (optional) is what a mention becomes in a leak-free prompt (a subject's class noun: "a dog")."""

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
        """Read a YAML or TSV tag list (the C YAML parser when PyYAML has it: 100k entries in seconds)."""
        path = Path(path)
        if path.suffix in (".yaml", ".yml"):
            data = load_yaml_data(path) or []
            if isinstance(data, dict):
                data = data.get("tags", [])
            tags = []
            for i, item in enumerate(data):
                if not isinstance(item, dict) or "name" not in item or "category" not in item:
                    raise ValueError(f"{path}: entry {i} needs 'name' and 'category'")
                tags.append(Tag(str(item["name"]), str(item["category"]), [str(a) for a in item.get("aliases", [])],
                                str(item.get("noun") or "")))
            return cls(tags)
        tags = []
        with open(path, newline="", encoding="utf-8") as f:
            for i, row in enumerate(csv.reader(f, delimiter="\t")):
                if not row or row[0].startswith("#"):
                    continue
                if len(row) < 2:
                    raise ValueError(f"{path}:{i + 1}: expected name<TAB>category[<TAB>alias|alias]")
                aliases = [a for a in row[2].split("|") if a] if len(row) > 2 else []
                noun = row[3].strip() if len(row) > 3 else ""
                tags.append(Tag(row[0].strip(), row[1].strip(), [a.strip() for a in aliases], noun))
        return cls(tags)


class TagMatcher:
    """Finds the tags a caption mentions, in order of first mention.

    Semantics (unchanged from the regex matcher this replaces): aliases of spaced scripts match whole words
    (not preceded or followed by a word character); aliases with characters of unspaced scripts match anywhere.
    Each kind is scanned left to right without overlaps, and at each position the longest alias that fits wins
    (so "spider man 2099" beats "spider man"). Tags come out ordered by the position of their first match.
    """

    def __init__(self, tags: TagList) -> None:
        self.tags = tags
        self._alias_to_tag: dict[str, str] = {}
        self._automaton: ahocorasick.Automaton | None = None
        automaton = ahocorasick.Automaton()
        for tag in tags.tags:
            for alias in [tag.name, *tag.aliases]:
                key = normalize(alias)
                if not key:
                    continue
                owner = self._alias_to_tag.setdefault(key, tag.name)
                if owner != tag.name:
                    raise ValueError(f"alias {alias!r} belongs to both {owner!r} and {tag.name!r}")
                # value: (length, tag, substring match?) -- the length turns a reported end into a start
                automaton.add_word(key, (len(key), tag.name, _unspaced_script(key)))
        if len(automaton):
            automaton.make_automaton()
            self._automaton = automaton

    def match(self, caption: str | None) -> list[str]:
        """Canonical tag names mentioned in ``caption``, first mention first, each once."""
        if not caption or self._automaton is None:
            return []
        out: list[str] = []
        for _, _, name in self._spans(normalize(caption)):
            if name not in out:
                out.append(name)
        return out

    def _spans(self, text: str) -> list[tuple[int, int, str]]:
        """(start, end, tag) of every mention in the normalised ``text``, by start: the occurrences :meth:`match`
        counts (whole words for spaced scripts, substrings for unspaced ones; leftmost-longest, no overlaps)."""
        if self._automaton is None:
            return []
        spaced: list[tuple[int, int, str]] = []
        unspaced: list[tuple[int, int, str]] = []
        last = len(text) - 1
        for end, (n, name, substring) in self._automaton.iter(text):
            start = end - n + 1
            if substring:
                unspaced.append((start, -n, name))
            elif not ((start and _is_word(text[start - 1])) or (end < last and _is_word(text[end + 1]))):
                spaced.append((start, -n, name))
        if not spaced and not unspaced:
            return []
        return sorted(_leftmost_longest(spaced) + _leftmost_longest(unspaced))

    def mask(self, caption: str | None, extra: "TagMatcher | None" = None) -> str:
        """``caption`` with every mention of a tag (name or alias, found exactly as :meth:`match` finds them)
        replaced by the tag's noun (:attr:`Tag.prompt_noun`: "a person", "a character", "the style", a subject's
        class noun); the rest of the caption is kept as written (case, accents, punctuation).

        Mentions are found in the normalised caption and mapped back to the caption's own characters by the
        length of the normalised prefix (normalisation never shortens a prefix, so a binary search finds each
        boundary). The result is matched again until nothing is found (a replacement can make a new word boundary),
        so no mention survives. ``extra`` is a second matcher (tags outside the list, e.g. folder names) applied the
        same way.
        """
        text = caption or ""
        for matcher in (self, extra) if extra is not None else (self,):
            for _ in range(4):  # a replacement can expose another mention; more than a few rounds means none left
                spans = matcher._spans(normalize(text))
                if not spans:
                    break
                text = _replace_spans(text, spans, matcher.tags.by_name)
        return text

    def match_many(self, captions: Iterable[str | None]) -> list[list[str]]:
        """:meth:`match` over a batch of captions (one record batch of a source)."""
        match = self.match
        return [match(c) for c in captions]


def _leftmost_longest(occurrences: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """From all (start, -length, tag) occurrences, the non-overlapping (start, end, tag) a left-to-right scan
    keeps: the earliest start first, the longest alias at that start, then on from its end (what ``re.finditer``
    does with an alternation sorted longest first)."""
    occurrences.sort()
    kept: list[tuple[int, int, str]] = []
    cursor = 0
    for start, neg_len, name in occurrences:
        if start >= cursor:
            cursor = start - neg_len
            kept.append((start, cursor, name))
    return kept


_ARTICLES = ("a", "an", "the")
_ENDS_WITH_ARTICLE = re.compile(r"(?:^|\W)(?:a|an|the)\s+$", re.IGNORECASE)


def _raw_offset(raw: str, norm_pos: int, *, end: bool) -> int:
    """The position in ``raw`` of normalised position ``norm_pos``: for a start, the first raw character whose
    prefix normalises past it; for an end (exclusive), the first raw prefix whose normalisation reaches it. The
    normalised length of ``raw[:i]`` never decreases with ``i``, so a binary search finds it."""
    lo, hi = 0, len(raw)
    while lo < hi:
        mid = (lo + hi) // 2
        n = len(normalize(raw[: mid if end else mid + 1]))
        if (n >= norm_pos) if end else (n > norm_pos):
            hi = mid
        else:
            lo = mid + 1
    return lo


def _replace_spans(raw: str, spans: list[tuple[int, int, str]], by_name: dict[str, Tag]) -> str:
    """``raw`` with each normalised-text span replaced by its tag's noun (combining marks that trail a span go
    with it)."""
    out: list[str] = []
    cursor = 0
    for start, stop, name in spans:
        a = _raw_offset(raw, start, end=False)
        b = _raw_offset(raw, stop, end=True)
        while b < len(raw) and unicodedata.combining(raw[b]):
            b += 1
        if a < cursor or b <= a:  # overlapping or empty after mapping: leave it to the next round
            continue
        noun = by_name[name].prompt_noun
        article, _, bare = noun.partition(" ")
        if bare and article.lower() in _ARTICLES and _ENDS_WITH_ARTICLE.search(raw[:a]):
            noun = bare  # "a Corgi" -> "a dog", not "a a dog"
        out += [raw[cursor:a], noun]
        cursor = b
    out.append(raw[cursor:])
    return "".join(out)


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes (the tag list's identity: its fingerprint and the key of its compiled form)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_COMPILED_FORMAT = 2  # bump when the compiled form changes (2: each tag's leak-free noun)


@functools.lru_cache(maxsize=4)
def _parsed(path: str, mtime_ns: int, size: int) -> TagList:
    return TagList.load(path)


@functools.lru_cache(maxsize=4)
def _loaded(digest: str, path: str, mtime_ns: int, size: int, cache_dir: str) -> TagList:
    """The tag list, from its compiled form in ``cache_dir`` when there is one, else parsed (and the compiled form
    written there: plain JSON, tens of times faster to read than the YAML)."""
    compiled = Path(cache_dir) / f"tag_list-{digest}.json" if cache_dir else None
    if compiled is not None and compiled.is_file():
        try:
            data = json.loads(compiled.read_text(encoding="utf-8"))
            if data.get("format") == _COMPILED_FORMAT:
                return TagList([Tag(*row) for row in data["tags"]])
        except (OSError, ValueError, TypeError, KeyError):
            pass  # unreadable or from another version: parsed again and rewritten
    tags = _parsed(path, mtime_ns, size)
    if compiled is not None:
        from mrbench.shards import atomic_write_text

        rows = [[t.name, t.category, t.aliases, t.noun] for t in tags.tags]
        atomic_write_text(compiled, json.dumps({"format": _COMPILED_FORMAT, "tags": rows}, ensure_ascii=False))
    return tags


def load_tag_list(path: str | Path, cache_dir: str | Path | None = None) -> TagList:
    """The tag list at ``path``, parsed once per process and file version; with ``cache_dir`` (a run folder's
    :attr:`~mrbench.layout.RunLayout.cache`) its compiled form, keyed by the file's sha256, is read from there or
    written there, so validation and every worker of a run share one parse.

    Raises:
        OSError, ValueError, yaml.YAMLError: an unreadable or malformed list (:func:`mrbench.curation.config.check_tag_list`
            turns them into one line naming the file).
    """
    st = os.stat(path)
    resolved = str(Path(path).resolve())
    if cache_dir is None:
        return _parsed(resolved, st.st_mtime_ns, st.st_size)
    return _loaded(file_sha256(resolved), resolved, st.st_mtime_ns, st.st_size, str(cache_dir))


@functools.lru_cache(maxsize=2)
def _matcher(tags: TagList) -> TagMatcher:
    return TagMatcher(tags)


def load_matcher(path: str | Path | None, cache_dir: str | Path | None = None) -> tuple[TagList, TagMatcher]:
    """The tag list at ``path`` (:func:`load_tag_list`) and its matcher, built once per process and file version
    (every ingest shard a worker runs reuses them); an empty list when ``path`` is empty."""
    if not path:
        tags = TagList([])
        return tags, TagMatcher(tags)
    tags = load_tag_list(path, cache_dir)
    return tags, _matcher(tags)


def leak_free_prompts(matcher: TagMatcher, captions: Iterable[str | None], row_tags: Iterable[list[str] | None],
                      categories: Iterable[str | None]) -> list[str]:
    """Each caption with every tag mention replaced by its noun (:meth:`TagMatcher.mask`): the release's ``prompt``
    column. A row's tags that the list does not hold (a folder source names its group by its folder) are masked
    too, with the row's category for its first tag and the subject noun for the others."""
    extra: dict[tuple[tuple[str, str], ...], TagMatcher] = {}
    out = []
    for caption, tags, category in zip(captions, row_tags, categories):
        unknown = tuple((t, (category or "subject") if i == 0 else "subject")
                        for i, t in enumerate(tags or []) if t not in matcher.tags.by_name)
        unknown = tuple((t, c if c in CATEGORIES else "subject") for t, c in unknown)
        if unknown and unknown not in extra:
            extra[unknown] = TagMatcher(TagList([Tag(t, c) for t, c in dict(unknown).items()]))
        out.append(matcher.mask(caption, extra.get(unknown)))
    return out
