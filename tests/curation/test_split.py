from collections import Counter

import pytest

from mrbench.curation.config import SplitConfig
from mrbench.curation.split import split_groups


@pytest.mark.parametrize("n,out,held_in", [(1000, 50, 300), (10, 2, 3), (3, 5, 5), (0, 1, 1)])
def test_split_sizes_and_partition(n, out, held_in):
    groups = [f"g{i}" for i in range(n)]
    s = split_groups(groups, SplitConfig(out, held_in), seed=1)
    assert set(s) == set(groups)  # every group exactly once (a dict: no group in two splits)
    c = Counter(s.values())
    assert c["held_out"] == min(out, n)
    assert c["held_in"] == min(held_in, n - min(out, n))
    assert c["train"] == n - c["held_out"] - c["held_in"]


def test_split_is_seeded_and_order_free():
    groups = [f"g{i}" for i in range(100)]
    a = split_groups(groups, SplitConfig(10, 20), seed=3)
    assert a == split_groups(list(reversed(groups)), SplitConfig(10, 20), seed=3)
    assert a != split_groups(groups, SplitConfig(10, 20), seed=4)


def test_held_out_chosen_first_is_stable_when_held_in_grows():
    groups = [f"g{i}" for i in range(100)]
    a = split_groups(groups, SplitConfig(10, 20), seed=3)
    b = split_groups(groups, SplitConfig(10, 40), seed=3)
    assert {g for g, s in a.items() if s == "held_out"} == {g for g, s in b.items() if s == "held_out"}
