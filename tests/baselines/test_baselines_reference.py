"""Real-image rows: the ceiling returns another image of the same group, chance an image of another group."""

from __future__ import annotations

from baselinehelpers import make_sample, request

from mrbench.baselines.reference import ChanceRow, ReferenceRow


def test_reference_row_returns_a_reference_never_the_target() -> None:
    gen = ReferenceRow()
    s = make_sample(n_refs=4)
    ids = {r.id for r in s.references}
    picks = [gen.generate([request(s, seed)])[0] for seed in range(12)]
    assert all(p.status == "ok" and p.source_id in ids for p in picks)
    assert len({p.source_id for p in picks}) > 1  # the seed chooses
    assert gen.generate([request(s, 3)])[0].source_id == picks[3].source_id  # same seed, same image
    assert gen.random_weights is False and ReferenceRow(profile="tiny").random_weights is False
    assert gen.generate([request(make_sample(n_refs=0))])[0].status == "no_candidate"


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
