"""Fixtures for the evaluation harness: a small DreamBench-layout folder and a small MRBench release (RELEASE_SCHEMA)."""

from __future__ import annotations

from pathlib import Path

import pytest
from evalhelpers import MINI_SUBJECTS, png_bytes, subject_image, write_prompts_file


@pytest.fixture(scope="session")
def mini_dreambench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 subjects x 3 images in DreamBench's layout; 3 prompts each."""
    root = tmp_path_factory.mktemp("dreambench")
    for s in MINI_SUBJECTS:
        (root / s).mkdir()
        for k in range(3):
            subject_image(s, k).save(root / s / f"{k:02d}.jpg", quality=95)
    write_prompts_file(root / "prompts_and_classes.txt", MINI_SUBJECTS)
    return root


@pytest.fixture(scope="session")
def mini_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A release folder (RELEASE_SCHEMA parquet shards, written by release_table): 2 held-out groups, 2 held-in, 1 train; 1 target + 2 refs each."""
    import hashlib

    from mrbench.curation.release_format import release_file, release_table
    from mrbench.shards import write_parquet_atomic

    root = tmp_path_factory.mktemp("release")
    layout = {"held_out": ["red_toy", "blue_can"], "held_in": ["dog9", "red_toy"], "train": ["blue_can"]}
    for split, subjects in layout.items():
        rows: list[dict] = []
        for g, subject in enumerate(subjects):
            gid = f"{split}_g{g}"
            for k in range(3):
                im = subject_image(subject, k + 10 * g + (100 if split == "held_in" else 0))
                data = png_bytes(im)
                row = {"id": f"{gid}_img{k}", "url": f"http://127.0.0.1/{gid}/{k}.png",
                       "caption": f"photo {k} of a {MINI_SUBJECTS[subject]}", "tags": [subject.replace('_', ' ')],
                       "category": "subject", "group": gid, "split": split, "role": "target" if k == 0 else "reference",
                       "image": data, "format": "png", "width": im.width, "height": im.height,
                       "sha256": hashlib.sha256(data).hexdigest(), "encoding": "original"}
                rows.append(row)
        write_parquet_atomic(release_table(rows), root / release_file(split, 0, 1))
    return root
