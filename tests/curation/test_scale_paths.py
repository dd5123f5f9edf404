"""The paths that keep the global steps sub-quadratic at paper scale give the same answers as the direct ones.

Small exact searches by one numpy product vs faiss; direct average linkage vs scipy; the audit's streamed
cross-split search vs all pairs; the sampled silhouette of large visual pools vs the truth; the embed stage's
prefetched inputs vs ``embed_images``. Timings live in ``bench/scale.py`` and ``bench/embed.py``.
"""

from __future__ import annotations

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import pdist
from sklearn.metrics import adjusted_rand_score

import mrbench.curation.dedup as dedup_mod
from mrbench.curation.config import CurateConfig
from mrbench.curation.audit import leakage_audit
from mrbench.curation.cluster import _average_linkage_cut, _renumber, cluster_embeddings
from mrbench.curation.group import Group
from mrbench.curation.index import FeatureIndex
from visual_fixtures import write_index


def unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_small_exact_search_by_product_finds_the_faiss_pairs(monkeypatch):
    rng = np.random.default_rng(0)
    x = unit_rows(rng.standard_normal((400, 16)))
    x[200:260] = unit_rows(x[:60] + 0.07 * rng.standard_normal((60, 16)).astype(np.float32))
    small = dedup_mod.exact_similar_pairs(x, 0.9)
    monkeypatch.setattr(dedup_mod, "SMALL_MAX", 0)  # force the faiss range search
    big = dedup_mod.exact_similar_pairs(x, 0.9)
    assert len(small) >= 40  # planted pairs around the threshold
    assert np.array_equal(small.i, big.i) and np.array_equal(small.j, big.j) and np.array_equal(small.sim, big.sim)


def test_direct_average_linkage_cut_matches_scipy():
    rng = np.random.default_rng(1)
    for _ in range(300):
        n, d = int(rng.integers(2, 30)), int(rng.integers(3, 12))
        centres = rng.standard_normal((int(rng.integers(1, 4)), d))
        x = centres[rng.integers(0, len(centres), n)] + rng.uniform(0.1, 1.5) * rng.standard_normal((n, d))
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        t = float(rng.uniform(0.2, 0.95))
        expected = _renumber(fcluster(linkage(pdist(x, "cosine"), "average"), t=1 - t, criterion="distance"))
        assert np.array_equal(_renumber(_average_linkage_cut(x, t)), expected)


def test_large_visual_pool_finds_many_groups_not_two():
    rng = np.random.default_rng(2)
    k, n, d = 150, 1500, 32
    centres = unit_rows(rng.standard_normal((k, d)))
    truth = rng.integers(0, k, n)
    x = unit_rows(centres[truth] + 0.05 * rng.standard_normal((n, d)).astype(np.float32))
    a = cluster_embeddings(x, seed=3, max_direct=400)
    b = cluster_embeddings(x, seed=3, max_direct=400)
    assert "sampled silhouette" in a.method and np.array_equal(a.labels, b.labels)
    assert 0.8 * k <= a.num_clusters <= 1.2 * k
    assert adjusted_rand_score(truth, a.labels) > 0.9


def test_streamed_cross_split_audit_equals_all_pairs(tmp_path):
    rng = np.random.default_rng(4)
    n, dim = 600, 12
    vec = unit_rows(rng.standard_normal((n, dim)))
    src = rng.choice(n, 120, replace=False)  # near-copies everywhere: within and across splits
    vec[src[60:]] = unit_rows(vec[src[:60]] + 0.1 * rng.standard_normal((60, dim)).astype(np.float32))
    ids = [f"im{k:04d}" for k in range(n)]
    rows = [{"id": r, "tag": "t", "category": "subject", "width": 1, "height": 1, "row": k, "face_row": -1}
            for k, r in enumerate(ids)]
    rows[5]["row"] = -1  # an image without a vector is skipped
    write_index(tmp_path, rows, vec)
    groups = [Group(f"g{g:03d}", "t", "subject", ids[g * 6 : g * 6 + 6]) for g in range(n // 6)]
    split_of = {g.group_id: ("held_out" if k % 10 == 0 else "held_in" if k % 10 == 1 else "train")
                for k, g in enumerate(groups)}
    cfg = CurateConfig()
    cfg.embed.encoder = "mobilenet_v2"
    cfg.audit.near_dup_threshold = 0.9
    cfg.audit.remove_train_leaks = False

    index = FeatureIndex.load(tmp_path)
    blocks = list(index.stream_rows("vectors", np.array([3, 4, 70, 71, 599]), block=64))
    assert [list(at) for at, _ in blocks] == [[0, 1], [2, 3], [4]]
    assert np.array_equal(np.concatenate([v for _, v in blocks]), vec[[3, 4, 70, 71, 599]])

    result = leakage_audit(groups, split_of, cfg, tmp_path)
    owner = {r: g.group_id for g in groups for r in g.members}
    order = {"train": 0, "held_in": 1, "held_out": 2}
    expected = set()
    for i in range(n):
        for j in range(i + 1, n):
            if 5 in (i, j) or split_of[owner[ids[i]]] == split_of[owner[ids[j]]]:
                continue
            if float(vec[i].astype(np.float64) @ vec[j].astype(np.float64)) >= 0.9:
                a, b = sorted((ids[i], ids[j]), key=lambda r: order[split_of[owner[r]]])
                expected.add((a, b))
    import pyarrow.parquet as pq

    got = {(r["id_a"], r["id_b"]) for r in pq.read_table(tmp_path / "audit" / "leaks.parquet").to_pylist()}
    assert len(expected) >= 10 and got == expected
    assert result.report["pairs_total"] == len(expected)


def test_embed_stage_prefetch_gives_embed_images_vectors(tmp_path):
    import io

    import pyarrow.parquet as pq
    from PIL import Image

    from mrbench.curation.config import EmbedConfig, SourceConfig
    from mrbench.curation.embed import EMBED_STEP, build_encoder, decode
    from mrbench.records import ImageRecord
    from mrbench.shards import ShardSet, records_to_table, write_parquet_atomic
    from mrbench.stats import Stats

    rng = np.random.default_rng(5)
    recs, blobs = [], []
    for i in range(11):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (40 + i, 50, 3), dtype=np.uint8)).save(buf, "PNG")
        blobs.append(buf.getvalue())
        recs.append(ImageRecord(id=f"{i:04d}", url=f"u{i}", image=blobs[-1], width=50, height=40 + i))
    recs.append(ImageRecord(id="bad", url="u", image=b"not an image", width=1, height=1))
    shards = ShardSet(tmp_path / "download", "shard")
    write_parquet_atomic(records_to_table(recs), shards.output(0))
    shards.complete(0, Stats())
    cfg = CurateConfig(num_shards=1, sources=[SourceConfig(paths=["x"])],
                       embed=EmbedConfig(encoder="dino-tiny", batch_size=4))
    EMBED_STEP.task(cfg, str(tmp_path))(0)
    table = pq.read_table(tmp_path / "embed" / "shard_00000.parquet").to_pylist()
    assert [r["status"] for r in table] == ["ok"] * 11 + ["embed_decode_error"]
    encoder = build_encoder("dino-tiny")
    # the stage embeds batches of embed.batch_size images: the same batches here (one forward each)
    expected = np.concatenate([encoder.embed_images([decode(b) for b in blobs[s : s + 4]]) for s in range(0, 11, 4)])
    assert np.array_equal(np.array([r["embedding"] for r in table[:11]], np.float32), expected)
