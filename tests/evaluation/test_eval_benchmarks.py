"""Benchmarks: DreamBench parsing and sample construction, MRBench release splits, folder benchmarks, specs."""

from __future__ import annotations

from pathlib import Path

import pytest
from evalhelpers import MINI_SUBJECTS, shared

from mrbench.config import ConfigError
from mrbench.evaluation.benchmarks import build_benchmark, parse_benchmark_arg, parse_dreambench_prompts
from mrbench.registry import UnknownEntryError


def test_parse_real_dreambench_prompts() -> None:
    parsed = parse_dreambench_prompts(shared("dreambench") / "prompts_and_classes.txt")
    assert len(parsed.classes) == 30
    assert parsed.classes["bear_plushie"] == "stuffed animal"
    assert len(parsed.object_prompts) == 25 and len(parsed.live_prompts) == 25
    assert parsed.object_prompts[0] == "a {0} {1} in the jungle"
    assert parsed.live_prompts[10] == "a {0} {1} wearing a red hat"
    assert sum(parsed.is_live(s) for s in parsed.classes) == 9  # DreamBench: 21 objects, 9 live subjects


def test_real_dreambench_samples() -> None:
    bench = build_benchmark(f"dreambench:{shared('dreambench')}")
    samples = bench.all_samples()
    assert len(samples) == 30 * 25
    assert len({s.group for s in samples}) == 30
    s = next(x for x in samples if x.id == "dog/10")
    assert s.prompt == "a dog wearing a red hat" and s.identifier_prompt == "a sks dog wearing a red hat"
    assert s.class_token == "dog" and s.category == "live"
    t = next(x for x in samples if x.id == "can/20")
    assert t.prompt == "a red can" and t.category == "object"
    for x in samples:
        assert x.target is not None and x.target.id not in {r.id for r in x.references}
        assert len(x.references) >= 1
    # The first 30 samples (round robin) cover all 30 subjects.
    assert len({x.group for x in samples[:30]}) == 30
    assert bench.spec().num_samples == 750 and bench.spec().seeds == [0, 1, 2, 3]


def test_rotating_target_covers_every_photo(mini_dreambench: Path) -> None:
    bench = build_benchmark(f"dreambench:{mini_dreambench}")
    targets = {s.target.id for s in bench.all_samples() if s.group == "red_toy"}
    assert targets == {f"red_toy/{k:02d}.jpg" for k in range(3)}
    dog = [s for s in bench.all_samples() if s.group == "dog9"]
    assert dog[1].prompt == "a dog wearing a red hat"  # live-subject templates for the dog


def test_limit_and_spec(mini_dreambench: Path) -> None:
    bench = build_benchmark(f"dreambench:{mini_dreambench}", limit=4, seed=7, images_per_prompt=2)
    samples = bench.samples()
    assert len(samples) == 4 and len({s.group for s in samples[:3]}) == 3
    spec = bench.spec()
    assert spec.version == "dreambench/1" and spec.seeds == [7, 8] and spec.num_samples == 4
    again = build_benchmark(f"dreambench:{mini_dreambench}", limit=4, seed=7, images_per_prompt=2)
    assert again.spec().fingerprint == spec.fingerprint


def test_mrbench_release_splits(mini_release: Path) -> None:
    held_out = build_benchmark(f"mrbench:{mini_release}")
    assert held_out.split == "held_out"
    samples = held_out.samples()
    assert [s.group for s in samples] == ["held_out_g0", "held_out_g1"]
    s = samples[0]
    assert s.target.id == "held_out_g0_img0" and [r.id for r in s.references] == ["held_out_g0_img1", "held_out_g0_img2"]
    assert s.prompt == "photo 0 of a toy" and s.class_token == "red toy"
    assert s.target.load().size == (64, 64)
    held_in = build_benchmark(f"mrbench:{mini_release}", split="held-in")
    assert held_in.split == "held_in" and {x.group for x in held_in.samples()} == {"held_in_g0", "held_in_g1"}
    with pytest.raises(ConfigError):
        build_benchmark(f"mrbench:{mini_release}", split="train")
    assert parse_benchmark_arg(str(mini_release)) == ("mrbench", str(mini_release))


def test_folder_benchmark_leave_one_out(tmp_path: Path, mini_dreambench: Path) -> None:
    for s in MINI_SUBJECTS:
        (tmp_path / s).symlink_to(mini_dreambench / s)
    (tmp_path / "classes.csv").write_text("group,class\nred_toy,toy robot\n")
    bench = build_benchmark(f"folder:{tmp_path}")
    samples = bench.all_samples()
    assert len(samples) == 9
    toy = [s for s in samples if s.group == "red_toy"]
    assert toy[0].prompt == "a photo of a toy robot" and len(toy[0].references) == 2


def test_bad_benchmarks(tmp_path: Path) -> None:
    with pytest.raises(UnknownEntryError, match="did you mean"):
        build_benchmark(f"dreambenc:{tmp_path}")
    with pytest.raises(ConfigError):
        build_benchmark(f"dreambench:{tmp_path / 'missing'}")
    with pytest.raises(ConfigError, match="prompts_and_classes"):
        build_benchmark(f"dreambench:{tmp_path}").all_samples()
