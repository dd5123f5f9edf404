"""Live progress inside shards: while a download shard runs, the bar moves URL by URL with ok / failed counts (the
worker's progress file, read by the driver), not only when the shard completes; the files are gone afterwards."""

from __future__ import annotations

from pathlib import Path

import yaml

from mrbench.config import load_config
from mrbench.curation.config import CurateConfig
from mrbench.curation.pipeline import run_curation
from webserver import Route, SampleWebServer, encode
from smallweb import _photo


class RecordingBar:
    """A bar like mrbench.console.Bar that records what it was shown."""

    def __init__(self) -> None:
        self.shown: list[tuple[int, int | None]] = []
        self.advanced = 0

    def __call__(self, n: int) -> None:
        self.advanced += n

    def start(self, done: int = 0) -> None:
        self.advanced = done

    def show(self, completed: int, failed: int | None = None) -> None:
        self.shown.append((completed, failed))


def test_download_bar_moves_inside_a_shard(tmp_path: Path) -> None:
    n_ok, n_missing = 8, 4
    routes = {f"/img/{k}.jpg": Route(encode(_photo(k), "JPEG"), delay=0.25) for k in range(n_ok)}
    routes.update({f"/gone/{k}.jpg": Route(b"", status=404, delay=0.25) for k in range(n_missing)})
    (tmp_path / "tags.yaml").write_text("- {name: cafe, category: subject}\n")
    bars: dict[str, RecordingBar] = {}

    def factory(name: str, total: int) -> RecordingBar:
        bars[name] = RecordingBar()
        return bars[name]

    with SampleWebServer(routes) as server:
        rows = "".join(f"{server.url(p)},cafe {k}\n" for k, p in enumerate(sorted(routes)))
        (tmp_path / "meta.csv").write_text("url,caption\n" + rows)
        (tmp_path / "c.yaml").write_text(yaml.safe_dump({
            "num_shards": 1, "sources": [{"kind": "metadata", "paths": ["meta.csv"]}],
            "crawl": {"tag_list": "tags.yaml", "allow_private_network": True, "thread_count": 1, "retries": 0},
            "split": {"held_out_groups": 1, "held_in_groups": 0}}))
        run_curation(load_config(CurateConfig, tmp_path / "c.yaml"), tmp_path / "run", factory)
    shown = bars["download URLs"].shown
    total = n_ok + n_missing
    inside = [(c, f) for c, f in shown if 0 < c < total]
    assert len({c for c, _ in inside}) >= 2, shown  # several readings while the one shard ran
    assert shown[-1] == (total, n_missing)  # the final counts: every URL, the 404s failed
    assert any(f for _, f in inside), shown  # failures counted live
    assert not list((tmp_path / "run").rglob("*.progress.json"))
