"""Benchmark: tag matching cost per caption vs the size of the tag list.

Synthetic tag lists of 1k, 10k and 100k tags (names from a syllable pool, 1-3 aliases each: reversed order,
initial + surname, joined, accented variants, some CJK names; the smaller lists are prefixes of the larger) and
``--captions`` synthetic captions of web length (6-25 words, mostly ASCII, some accented and some CJK text; about
``--mention`` of them name one of the first 1k tags, so every list has the same hits).

Prints, per list size: captions/s per core (CPU time, normalisation included) of ``TagMatcher.match`` and the
ratio of its cost to a raw automaton (the same keys in a bare pyahocorasick automaton, iterated over text that was
normalised beforehand) measured in the same run, the cost at each size relative to 1k tags, the matcher build time,
the tag-list load time (YAML and TSV), and peak RSS. With ``--ingest-rows``, the whole ingest step (parquet record
batches, matching, candidate file) runs over that many rows at the largest list size, split into row-group
ranges, and its rows/s per core is compared with the matcher's alone. Captions are generated and matched batch by batch (as ingest
does); each batch is timed ``--reps`` times for every configuration, interleaved, and the median counts.

Run: ``python bench/tag_match.py`` (``--captions 50000`` for a quick look). Goals on this machine: >= 50,000
captions/s/core at 100k tags; cost(100k) <= 1.25 x cost(1k); build <= 10 s at 100k; peak RSS <= 1 GB.
"""

from __future__ import annotations

import argparse
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import ahocorasick
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from mrbench.curation.config import CrawlConfig, CurateConfig, SourceConfig
from mrbench.curation.crawl import INGEST_STEP
from mrbench.curation.sources import expand_sources
from mrbench.curation.tags import Tag, TagList, TagMatcher, load_matcher, normalize

SYLLABLES = [
    "ka", "ri", "to", "mo", "na", "shi", "el", "an", "ber", "son", "mar", "li", "ton", "ve", "ra", "del", "go",
    "lin", "da", "vis", "ja", "mes", "ro", "sa", "cha", "ley", "ste", "ven", "wil", "ham", "fer", "nan", "dez",
    "lu", "ca", "pe", "tra", "ov", "ich", "sky", "berg", "man", "ne", "ko", "yu", "mi", "zu", "ha", "ru", "ki",
]
# Caption words other than COMMON: made from other syllables, so a caption names a tag only where one is inserted
# (tag names still occur inside longer words, as real names do; the automaton reports those and the matcher
# rejects them on word boundaries).
WORD_SYLLABLES = [
    "pre", "con", "tion", "ing", "er", "ly", "ment", "able", "ous", "ive", "al", "ic", "ure", "ist", "ness",
    "ful", "port", "form", "graph", "scape", "light", "wood", "stone", "land", "field", "house", "line", "work",
]
COMMON = (
    "a the of and with in on for by at from photo image picture poster wallpaper art illustration painting drawing "
    "print vintage modern new old red blue green black white gold silver beautiful cute small large woman man girl "
    "boy portrait landscape city street house garden tree flower sky sea beach mountain car dog cat bird book cover "
    "design logo icon vector stock free download hd 4k high quality background pattern texture style fashion dress "
    "shirt shoes bag table chair room kitchen living bedroom wedding party birthday christmas summer winter autumn"
).split()
ACCENTED = ["café", "crème", "brûlée", "naïve", "señora", "über", "façade", "jalapeño", "Ångström", "Zürich", "São"]
CJK = "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可她里后小么心多"
CATEGORIES = ("celebrity", "character", "style", "subject")


def word(rng: random.Random, lo: int = 1, hi: int = 3, pool: list[str] = SYLLABLES) -> str:
    return "".join(rng.choice(pool) for _ in range(rng.randint(lo, hi)))


def make_tags(n: int, seed: int) -> list[Tag]:
    """``n`` tags with unique names and aliases (no alias shared by two tags, as the matcher requires)."""
    rng = random.Random(seed)
    tags: list[Tag] = []
    seen: set[str] = set()
    while len(tags) < n:
        if rng.random() < 0.04:
            name = "".join(rng.choice(CJK) for _ in range(rng.randint(2, 4)))
            candidates = [name]
        else:
            first, last = word(rng, 1, 2).title(), word(rng, 2, 3).title()
            name = f"{first} {last}"
            candidates = [name, f"{last} {first}", f"{first[0]}. {last}", f"{first}{last}", f"{first}-{last} Jr"]
            if rng.random() < 0.1:
                candidates.append(f"{first}é {last}")
        keep = [a for a in candidates if normalize(a) not in seen]
        if not keep or keep[0] != name:
            continue
        aliases = rng.sample(keep[1:], min(len(keep) - 1, rng.randint(0, 3)))
        seen.update(normalize(a) for a in [name, *aliases])
        tags.append(Tag(name, CATEGORIES[len(tags) % 4], aliases))
    return tags


def make_captions(n: int, seed: int, mentionable: list[str], mention: float) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = [rng.choice(COMMON) if rng.random() < 0.7 else word(rng, pool=WORD_SYLLABLES) for _ in range(rng.randint(6, 25))]
        r = rng.random()
        if r < 0.08:
            words[rng.randrange(len(words))] = rng.choice(ACCENTED)
        elif r < 0.10:
            words.insert(rng.randrange(len(words)), "".join(rng.choice(CJK) for _ in range(rng.randint(3, 12))))
        if rng.random() < mention:
            alias = rng.choice(mentionable)
            words.insert(rng.randrange(len(words) + 1), alias.upper() if rng.random() < 0.2 else alias)
        caption = " ".join(words)
        out.append(caption[0].upper() + caption[1:] + rng.choice(["", ".", " | Stock Photo", " - HD wallpaper"]))
    return out


def raw_automaton(tags: list[Tag]) -> ahocorasick.Automaton:
    a = ahocorasick.Automaton()
    for t in tags:
        for alias in [t.name, *t.aliases]:
            key = normalize(alias)
            a.add_word(key, len(key))
    a.make_automaton()
    return a


def ingest_cpu(tags: list[Tag], rows: int, batch: int, seed: int, mentionable: list[str], mention: float) -> float:
    """CPU seconds per row of IngestTask over one parquet file of ``rows`` rows in row groups of ``batch`` rows,
    split into ranges of about a quarter of the file (the matcher is built first, as a worker reuses it)."""
    import mrbench.curation.sources as sources

    with tempfile.TemporaryDirectory() as tmp:
        path, tsv = Path(tmp) / "part-00000.parquet", Path(tmp) / "tags.tsv"
        tsv.write_text("".join(f"{t.name}\t{t.category}\t{'|'.join(t.aliases)}\n" for t in tags), encoding="utf-8")
        schema = pa.schema([("URL", pa.string()), ("TEXT", pa.string())])
        with pq.ParquetWriter(path, schema) as w:
            for b, start in enumerate(range(0, rows, batch)):
                caps = make_captions(min(batch, rows - start), seed * 7_000_003 + b, mentionable, mention)
                urls = [f"https://img.example/{start + k}.jpg" for k in range(len(caps))]
                w.write_table(pa.table([urls, caps], schema=schema), row_group_size=batch)
        cfg = CurateConfig(seed=seed, num_shards=1, crawl=CrawlConfig(tag_list=str(tsv)),
                           sources=[SourceConfig(kind="metadata", paths=[str(path)], url_col="URL", caption_col="TEXT")])
        old, sources.ROWS_PER_SHARD = sources.ROWS_PER_SHARD, max(batch, rows // 4)
        try:
            n = len(expand_sources(cfg.sources))
            task = INGEST_STEP.task(cfg, str(Path(tmp) / "run"))
            load_matcher(str(tsv))
            return cpu_of(lambda: [task(i) for i in range(n)]) / rows
        finally:
            sources.ROWS_PER_SHARD = old


def cpu_of(fn) -> float:
    t = time.process_time()
    fn()
    return time.process_time() - t


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--captions", type=int, default=1_000_000)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    ap.add_argument("--batch", type=int, default=20_000, help="captions per batch (one source record batch)")
    ap.add_argument("--reps", type=int, default=3, help="timings per batch and configuration; the median counts")
    ap.add_argument("--mention", type=float, default=0.03, help="share of captions that name a tag")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ingest-rows", type=int, default=200_000, help="rows for the ingest step run (0: skip it)")
    args = ap.parse_args(argv)
    sizes = sorted(args.sizes)

    t0 = time.perf_counter()
    all_tags = make_tags(sizes[-1], args.seed)
    print(f"generated {len(all_tags):,} tags ({sum(1 + len(t.aliases) for t in all_tags):,} names and aliases) "
          f"in {time.perf_counter() - t0:.1f} s")

    # Tag-list load at the largest size, both formats.
    with tempfile.TemporaryDirectory() as tmp:
        yml, tsv = Path(tmp) / "tags.yaml", Path(tmp) / "tags.tsv"
        yml.write_text(yaml.safe_dump([{"name": t.name, "category": t.category, "aliases": t.aliases} for t in all_tags],
                                      allow_unicode=True, sort_keys=False))
        tsv.write_text("".join(f"{t.name}\t{t.category}\t{'|'.join(t.aliases)}\n" for t in all_tags), encoding="utf-8")
        load_yaml = cpu_of(lambda: TagList.load(yml))
        load_tsv = cpu_of(lambda: TagList.load(tsv))
    print(f"load {len(all_tags):,} tags: YAML {load_yaml:.2f} s, TSV {load_tsv:.2f} s (CPU)")

    matchers, raws, builds = {}, {}, {}
    for n in sizes:
        tl = TagList(all_tags[:n])
        t = time.perf_counter()
        matchers[n] = TagMatcher(tl)
        builds[n] = time.perf_counter() - t
        raws[n] = raw_automaton(all_tags[:n])
        print(f"build matcher, {n:,} tags: {builds[n]:.2f} s")
    mentionable = [a for t in all_tags[: sizes[0]] for a in [t.name, *t.aliases]]

    cost = {(n, kind): 0.0 for n in sizes for kind in ("matcher", "raw")}
    hits = {n: 0 for n in sizes}
    done = 0
    for b, start in enumerate(range(0, args.captions, args.batch)):
        captions = make_captions(min(args.batch, args.captions - start), args.seed * 1_000_003 + b, mentionable, args.mention)
        normed = [normalize(c) for c in captions]
        for n in sizes:
            hits[n] += sum(1 for r in matchers[n].match_many(captions) if r)
        reps: dict[tuple[int, str], list[float]] = {k: [] for k in cost}
        for _ in range(args.reps):  # interleaved: every configuration once per round
            for n in sizes:
                reps[(n, "matcher")].append(cpu_of(lambda: matchers[n].match_many(captions)))
                a = raws[n]
                reps[(n, "raw")].append(cpu_of(lambda: [list(a.iter(c)) for c in normed]))
        for k, v in reps.items():
            cost[k] += statistics.median(v)
        done += len(captions)

    print(f"\n{done:,} captions, {args.mention:.0%} name a tag; CPU seconds, medians of {args.reps} interleaved")
    print(f"{'tags':>8} {'captions/s/core':>16} {'us/caption':>11} {'raw automaton':>14} {'ratio to raw':>13} "
          f"{'cost vs ' + format(sizes[0], ','):>14} {'with a tag':>11} {'build s':>8}")
    base = cost[(sizes[0], "matcher")]
    for n in sizes:
        m, r = cost[(n, "matcher")], cost[(n, "raw")]
        print(f"{n:>8,} {done / m:>16,.0f} {1e6 * m / done:>11.2f} {done / r:>12,.0f}/s {m / r:>13.2f} "
              f"{m / base:>14.2f} {hits[n] / done:>11.1%} {builds[n]:>8.2f}")
    top = sizes[-1]
    if args.ingest_rows:
        per_row = ingest_cpu(all_tags[:top], args.ingest_rows, args.batch, args.seed, mentionable, args.mention)
        matcher_only = cost[(top, "matcher")] / done
        print(f"\ningest step, {args.ingest_rows:,} parquet rows, {top:,} tags: {1 / per_row:,.0f} rows/s/core "
              f"({per_row / matcher_only:.2f}x the matcher's cost per caption)")
    print(f"\npeak RSS {peak_rss_gb():.2f} GB (all {len(sizes)} matchers and raw automata held at once)")
    goals = [
        (f"captions/s/core at {top:,} tags >= 50,000", done / cost[(top, 'matcher')] >= 50_000),
        (f"cost({top:,}) <= 1.25 x cost({sizes[0]:,})", cost[(top, "matcher")] <= 1.25 * base),
        (f"build at {top:,} tags <= 10 s", builds[top] <= 10),
        ("peak RSS <= 1 GB", peak_rss_gb() <= 1.0),
    ]
    for text, ok in goals:
        print(f"  {'PASS' if ok else 'FAIL'}  {text}")
    return 0 if all(ok for _, ok in goals) else 1


if __name__ == "__main__":
    sys.exit(main())
