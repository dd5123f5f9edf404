"""The EasyRef checkpoint revision: a hub id resolves to the HF-cache snapshot of the pinned commit (or ``main``),
never to whichever snapshot sorts first; the commit a run loaded is recorded."""

from __future__ import annotations

from pathlib import Path

import pytest

from mrbench.backends.base import MissingWeightsError
from mrbench.baselines.easyref import EasyRefConfig, find_checkpoint, snapshot_commit

OLD, NEW = "0" * 39 + "a", "f" * 39 + "b"  # the December 2024 upload and a later re-release, say


@pytest.fixture()
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("MRBENCH_WEIGHTS_DIR", raising=False)
    repo = tmp_path / "hub" / "models--zongzhuofan--EasyRef"
    for commit in (OLD, NEW):
        (repo / "snapshots" / commit).mkdir(parents=True)
        (repo / "snapshots" / commit / "model.safetensors").write_bytes(commit.encode())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(NEW)
    (repo / "refs" / "dec2024").write_text(OLD)
    return repo


def test_revision_picks_the_snapshot(hub: Path) -> None:
    assert snapshot_commit(find_checkpoint("zongzhuofan/EasyRef")) == NEW  # refs/main, not the first sorted
    assert snapshot_commit(find_checkpoint("zongzhuofan/EasyRef", OLD)) == OLD
    assert snapshot_commit(find_checkpoint("zongzhuofan/EasyRef", "dec2024")) == OLD  # a ref the cache knows
    with pytest.raises(MissingWeightsError, match="revision 1234") as e:
        find_checkpoint("zongzhuofan/EasyRef", "1234")
    assert "--revision 1234" in str(e.value) and OLD[:12] in str(e.value)
    assert snapshot_commit(hub.parent / "x.safetensors") is None
    assert EasyRefConfig().revision is None and EasyRefConfig().guidance_scale == 7.5


def test_several_snapshots_without_main_are_ambiguous(hub: Path) -> None:
    (hub / "refs" / "main").unlink()
    with pytest.raises(MissingWeightsError, match="revision main"):
        find_checkpoint("zongzhuofan/EasyRef")
