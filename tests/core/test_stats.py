"""Stats counters: bounded error messages that keep the frequent ones."""

from __future__ import annotations

from mrbench.stats import CappedCounter, Stats


def test_capped_counter_keeps_the_most_frequent_messages():
    c = CappedCounter(max_keys=10)
    for i in range(10):
        c.add(f"rare {i}")
    for _ in range(100):
        c.add("timeout after 10 s")  # arrives once the counter is full: still counted by name
    c.add("another rare one")
    assert c.counts["timeout after 10 s"] == 100
    assert len(c.counts) <= 11 and sum(c.counts.values()) == 111  # the rest summed under <other>, nothing lost
    assert c.counts.most_common(1)[0] == ("timeout after 10 s", 100)


def test_merged_stats_keep_frequent_messages_across_shards():
    shards = []
    for s in range(4):
        st = Stats()
        for i in range(40):
            st.error(f"shard {s} oddity {i}")
        for _ in range(5):
            st.error("connection refused")
        shards.append(st)
    total = Stats()
    for st in shards:
        total.merge(Stats.from_dict(st.to_dict()))  # as merged from the shards' stats files
    assert total.errors.counts["connection refused"] == 20
    assert sum(total.errors.counts.values()) == 4 * 45
