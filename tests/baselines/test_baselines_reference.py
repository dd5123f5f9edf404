"""Real-image rows: the ceiling returns another image of the same group, chance an image of another group."""

from __future__ import annotations

from pathlib import Path

from baselinehelpers import make_sample, photo, request

from mrbench.baselines.reference import ChanceRow, ReferenceRow
from mrbench.evaluation.generator import ImageRef, scored_references


def test_reference_row_leaves_one_reference_out() -> None:
    gen = ReferenceRow()
    s = make_sample(n_refs=4)
    gen.prepare([s])  # every image of the group is in the sample: one reference is left out
    ids = {r.id for r in s.references}
    picks = [gen.generate([request(s, seed)])[0] for seed in range(12)]
    assert all(p.status == "ok" and p.source_id in ids and p.source_id != s.target.id for p in picks)
    assert len({p.source_id for p in picks}) > 1  # the seed chooses
    assert gen.generate([request(s, 3)])[0].source_id == picks[3].source_id  # same seed, same image
    for p in picks:  # scored against exactly the other references
        scored = [r.id for r in scored_references(s, p.source_id)]
        assert len(scored) == 3 and p.source_id not in scored and s.target.id not in scored
    assert gen.random_weights is False and ReferenceRow(profile="tiny").random_weights is False


def test_reference_row_prefers_a_group_image_outside_the_sample() -> None:
    # Two samples of one group with different targets (an MRBench group with two targets): the other target is a
    # real image of the group that is neither this target nor a reference, so the references stay whole.
    a = make_sample("g", n_refs=3, seed=1)
    b = make_sample("g", n_refs=3, seed=1)
    b.target = ImageRef("g/other-target", "g", a.target.loader)
    b.id = "g/1b"
    gen = ReferenceRow()
    gen.prepare([a, b])
    for seed in range(5):
        (res,) = gen.generate([request(a, seed)])
        assert res.source_id == "g/other-target"
        assert [r.id for r in scored_references(a, res.source_id)] == [r.id for r in a.references]


def test_reference_row_too_small_group_is_a_named_failure() -> None:
    gen = ReferenceRow()
    for n_refs in (0, 1):  # nothing to return, or nothing left to score against
        s = make_sample(n_refs=n_refs)
        gen.prepare([s])
        (res,) = gen.generate([request(s)])
        assert res.status == "no_candidate" and res.image is None and s.group in res.error_message


def test_ceiling_rows_record_their_references(tmp_path: Path) -> None:
    """In a run, the ceiling row's reference_ids are the references it was scored against, never its own image."""
    from PIL import Image

    from mrbench.evaluation.runner import run_eval

    root = tmp_path / "bench"
    for g, colour in (("a", (200, 30, 30)), ("b", (30, 30, 200))):
        (root / g).mkdir(parents=True)
        for k in range(4):
            photo(10 * k + len(g), colour=colour).save(root / g / f"{k}.png")
    (root / "tiny").mkdir()
    Image.new("RGB", (32, 32), (9, 9, 9)).save(root / "tiny" / "0.png")
    Image.new("RGB", (32, 32), (90, 9, 9)).save(root / "tiny" / "1.png")
    res = run_eval("reference", f"folder:{root}", tmp_path / "runs", profile="tiny", images_per_prompt=2,
                   metrics=["image_sim"], n_boot=10)
    key = "image_sim@dino-tiny.refs"
    for row in res.rows:
        if row["group"] == "tiny":  # target + one reference: nothing to leave out
            assert row["status"] == "no_candidate"
            continue
        assert row["status"] == "ok" and row["source_id"] not in row["reference_ids"]
        assert row["source_id"] != row["target_id"] and row["source_id"].startswith(row["group"] + "/")
        assert len(row["reference_ids"]) == 2 and row["target_id"] not in row["reference_ids"]
        assert row["metrics"][key] < 0.999999  # no self-match among the references


def test_chance_row_returns_another_group() -> None:
    gen = ChanceRow()
    samples = [make_sample("a", seed=1), make_sample("b", seed=2), make_sample("c", seed=3)]
    gen.prepare(samples)
    out = gen.generate([request(samples[0], seed) for seed in range(10)])
    assert all(o.status == "ok" and o.info["source_group"] != "a" for o in out)
    assert {o.info["source_group"] for o in out} == {"b", "c"}
    lonely = ChanceRow()
    lonely.prepare(samples[:1])
    assert lonely.generate([request(samples[0])])[0].status == "no_candidate"
