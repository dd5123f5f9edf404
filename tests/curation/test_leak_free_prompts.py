"""Leak-free prompts: every tag mention (name or alias, found by the crawl's matcher) becomes its noun in the
release's ``prompt`` column, which is what every model is prompted with; the raw caption stays in ``caption``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mrbench.curation.tags import Tag, TagList, TagMatcher, leak_free_prompts, normalize

FACES = Path(__file__).resolve().parents[3] / "shared" / "data" / "faces"
TAGS = [Tag("Taylor Swift", "celebrity", ["T-Swift", "Tay Tay"]), Tag("Mickey Mouse", "character", ["Mickey"]),
        Tag("Van Gogh", "style", ["Vincent van Gogh"]), Tag("corgi", "subject", ["corgis"], noun="a dog"),
        Tag("宮崎駿", "style")]


@pytest.fixture()
def matcher() -> TagMatcher:
    return TagMatcher(TagList(TAGS))


@pytest.mark.parametrize("caption, masked", [
    ("Taylor Swift at the Grammys", "a person at the Grammys"),
    ("TAYLOR   SWIFT and t_swift!", "a person and a person!"),         # case, spacing, separators, aliases
    ("Mickey-Mouse painted by Vincent van Gogh", "a character painted by the style"),  # longest alias wins
    ("a Corgi in the snow", "a dog in the snow"),                      # the subject's class noun; no "a a dog"
    ("The Taylor Swift show", "The person show"),
    ("Tay Tay, Beyoncé and Taylor Swift's cat", "a person, Beyoncé and a person's cat"),  # accents kept elsewhere
    ("宮崎駿のアニメ", "the styleのアニメ"),                              # unspaced scripts: substrings
    ("Taylor Swiftie fans", "Taylor Swiftie fans"),                    # not a whole word: not a mention
    ("Straße, Taylor Swift, ﬁne", "Straße, a person, ﬁne"),            # length-changing normalisation around it
    ("", ""),
])
def test_mask_replaces_every_mention_the_matcher_finds(matcher: TagMatcher, caption: str, masked: str) -> None:
    assert matcher.mask(caption) == masked
    assert matcher.match(matcher.mask(caption)) == []


def test_mask_handles_decomposed_accents_and_unknown_folder_tags() -> None:
    m = TagMatcher(TagList([Tag("Beyoncé", "celebrity")]))
    assert m.mask("Beyonce\u0301 on stage") == "a person on stage"  # NFD input: the trailing mark goes too
    # A folder named after someone not in the list is masked with the row's category.
    out = leak_free_prompts(m, ["Joe Biden", "Beyoncé with Joe Biden"], [["Joe Biden"], ["Beyoncé", "Joe Biden"]],
                            ["celebrity", "celebrity"])
    assert out == ["a person", "a person with an object"]


def _curate_faces(tmp_path: Path) -> Path:
    """A release curated from folders named after real people, tagged as celebrities (with aliases)."""
    from mrbench.app import curate

    photos = tmp_path / "photos"
    for folder, files in {"Barack_Obama": ["obama.jpg", "obama2.jpg", "obama3.jpg", "32bit.png"],
                          "Joe_Biden": ["biden.jpg", "obama_partial_face.jpg"]}.items():
        (photos / folder).mkdir(parents=True)
        for f in files:
            shutil.copy(FACES / f, photos / folder / f)
    tags = tmp_path / "tags.yaml"
    tags.write_text("- {name: Barack Obama, category: celebrity, aliases: [Obama, President Obama]}\n"
                    "- {name: Joe Biden, category: celebrity, aliases: [Biden]}\n")
    curate({"num_shards": 1, "sources": [{"kind": "folder", "paths": [str(photos)]}],
            "crawl": {"tag_list": str(tags)}, "split": {"held_out_groups": 1, "held_in_groups": 1}},
           tmp_path / "run")
    return tmp_path / "run" / "release"


def _names() -> list[str]:
    return [normalize(n) for n in ("Barack Obama", "Obama", "President Obama", "Joe Biden", "Biden")]


def test_release_of_real_people_prompts_name_no_one(tmp_path: Path) -> None:
    from mrbench.baselines.lora import LoRAConfig, LoRAGenerator
    from mrbench.evaluation.benchmarks import build_benchmark
    from mrbench.evaluation.runner import run_eval

    release = _curate_faces(tmp_path)
    manifest = json.loads((release / "manifest.json").read_text())
    assert manifest["format"] == "mrbench-release/3"
    rows = [r for f in sorted((release / "data").glob("*.parquet"))
            for r in pq.read_table(f, columns=["caption", "prompt", "category"]).to_pylist()]
    assert {r["caption"] for r in rows} == {"Barack Obama", "Joe Biden"}  # the raw caption is still there
    assert {r["prompt"] for r in rows} == {"a person"} and {r["category"] for r in rows} == {"celebrity"}

    lora = LoRAGenerator.__new__(LoRAGenerator)  # its prompt builder only (no weights): what the LoRA row samples with
    lora.config = LoRAConfig()
    texts = []
    for split in ("held-out", "held-in"):
        for s in build_benchmark(f"mrbench:{release}", split=split).samples():
            texts += [s.prompt, s.identifier_prompt, s.score_text, lora.prompt_for(s),
                      lora.config.instance_prompt.format(identifier="sks", class_token=s.class_token)]
    assert texts and not [t for t in texts for n in _names() if n in normalize(t)]
    run = run_eval("reference", f"mrbench:{release}", tmp_path / "runs", split="held-in", profile="tiny",
                   metrics="image_sim", images_per_prompt=1, n_boot=10)
    assert {r["prompt"] for r in run.rows} == {"a person"} and run.summary["benchmark"]["prompt"] == "leak-free"
    assert run.summary["benchmark"]["prompt_source"] == "release"
    raw = build_benchmark(f"mrbench:{release}", split="held-in", prompt="raw")
    raw_prompts = {s.prompt for s in raw.samples()}  # prompt=raw: for studies that want the names
    assert raw_prompts and raw_prompts <= {"Barack Obama", "Joe Biden"} and raw.spec().prompt == "raw"


def test_release_without_prompt_column_still_evaluates_leak_free(tmp_path: Path) -> None:
    """A format-2 release (before the prompt column) verifies and evaluates; its prompts are masked from the names
    in its tags column."""
    from mrbench.curation.release_format import RELEASE_SCHEMA_V2
    from mrbench.curation.release_verify import check_release
    from mrbench.evaluation.benchmarks import build_benchmark

    release = _curate_faces(tmp_path)
    import hashlib

    manifest = json.loads((release / "manifest.json").read_text())
    for f in sorted((release / "data").glob("*.parquet")):
        t = pq.read_table(f).drop_columns(["prompt"])
        f.unlink()  # (a hard link to the run's part file: never write through it)
        pq.write_table(t.replace_schema_metadata(RELEASE_SCHEMA_V2.metadata).cast(RELEASE_SCHEMA_V2), f)
        entry = next(e for e in manifest["files"] if e["path"] == f"data/{f.name}")
        entry["bytes"], entry["sha256"] = f.stat().st_size, hashlib.sha256(f.read_bytes()).hexdigest()
    manifest["format"] = "mrbench-release/2"
    (release / "manifest.json").write_text(json.dumps(manifest))
    assert check_release(release).ok
    bench = build_benchmark(f"mrbench:{release}", split="held-in")
    assert {s.prompt for s in bench.samples()} == {"a person"} and bench.spec().prompt_source == "tags_column"
