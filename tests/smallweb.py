"""Helpers for the small local web (importable from any test folder; conftest modules are not importable by name)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from mrbench.demo_web import Route


def _photo(seed: int, size: tuple[int, int] = (96, 80)) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
    return Image.fromarray(base).resize(size, Image.BICUBIC)


SUBJECTS = ["Barack Obama", "Spider-Man", "Van Gogh style"]


def write_small_inputs(folder: Path, base_url: str, routes: dict[str, Route], num_shards: int = 3, **overrides) -> Path:
    """Metadata (two parquet files), tag list and config for the small web; returns the config path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    urls, caps = [], []
    for path in sorted(routes):
        if path.startswith("/img/s"):
            s = int(path[len("/img/s")])
            caps.append(f"photo {path[-5]} of {SUBJECTS[s]}")
        elif path.startswith("/img/dup"):
            caps.append("barack obama again")
        else:
            caps.append(f"spider man ({path})")
        urls.append(base_url + path)
    urls.append(base_url + "/img/untagged.jpg")
    caps.append("a photo of nothing in particular")
    half = len(urls) // 2
    pq.write_table(pa.table({"url": urls[:half], "caption": caps[:half]}), folder / "meta_0.parquet")
    pq.write_table(pa.table({"url": urls[half:], "caption": caps[half:]}), folder / "meta_1.parquet")
    tags = [
        {"name": "Barack Obama", "category": "celebrity", "aliases": ["Obama"]},
        {"name": "Spider-Man", "category": "character", "aliases": ["Spiderman"]},
        {"name": "Van Gogh style", "category": "style", "aliases": []},
    ]
    (folder / "tags.yaml").write_text(yaml.safe_dump(tags))
    cfg = {
        "seed": 7,
        "num_shards": num_shards,
        "sources": [{"kind": "metadata", "paths": ["meta_*.parquet"]}],
        "crawl": {"tag_list": "tags.yaml", "allow_private_network": True, "timeout": 1.5, "thread_count": 8,
                  "max_body_bytes": 4 * 1024 * 1024},
        "group": {"min_group_size": 2},
        "split": {"held_out_groups": 1, "held_in_groups": 1},
        "executor": {"name": "local", "workers": 1},
    }
    for k, v in overrides.items():
        section, _, key = k.partition("__")
        cfg.setdefault(section, {})[key] = v
    path = folder / "curate.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path
