"""Every command of `mrbench` with the usual user mistakes (missing paths, bad values, unknown names): one error
line and a non-zero exit, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from mrbench.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from PIL import Image

    root = tmp_path_factory.mktemp("cli")
    for g in ("g1", "g2"):  # a folder benchmark: <group>/<image>
        (root / "imgs" / g).mkdir(parents=True)
        for k in range(2):
            Image.new("RGB", (32, 32), (10 * k, 20, 30)).save(root / "imgs" / g / f"{k}.png")
    (root / "a_file.txt").write_text("x")
    (root / "tags.yaml").write_text("- {name: cafe, category: subject}\n")
    (root / "meta.csv").write_text("url,caption\nhttp://127.0.0.1:9/a.jpg,cafe\n")
    (root / "curate.yaml").write_text("sources: [{kind: metadata, paths: [meta.csv]}]\ncrawl: {tag_list: tags.yaml}\n")
    return {"root": root, "imgs": root / "imgs", "file": root / "a_file.txt", "cfg": root / "curate.yaml",
            "missing": root / "does-not-exist"}


CASES = [
    # (args with {placeholders}, exit code, text expected in stderr)
    ("curate -c {missing} -o {root}/r", 2, "config file not found"),
    ("curate -c {cfg} -o {root}/r --workers 0", 2, "executor.workers must be >= 1, got 0"),
    ("curate -c {cfg} -o {root}/r --workers -3", 2, "executor.workers must be >= 1, got -3"),
    ("curate -c {cfg} -o {root}/r --executor spark", 2, "executor.name must be one of local, ray"),
    ("curate -c {cfg} -o {file}", 2, "is a file, not a run folder"),
    ("curate -c {cfg} -o {root}/r --set num_shards", 2, "must look like key.sub=value"),
    ("curate -c {cfg} -o {root}/r --set crawl.bogus=1", 2, "unknown config key(s) crawl.bogus"),
    ("curate -c {cfg} -o {root}/r --set embed.encoder=nope", 2, "unknown encoder 'nope'"),
    ("release verify {missing}", 1, "not a folder"),
    ("release extract-images {missing}", 1, "failed verification"),
    ("ls bogus", 2, "unknown kind 'bogus'"),
    ("embed {imgs} -e bogus -o {root}/e.parquet", 2, "unknown encoder 'bogus'"),
    ("embed {imgs} -e mobilenet_v2 -o {root}/e.parquet -a novalue", 2, "is not key=value"),
    ("embed {imgs} -e mobilenet_v2 -o {root}/e.parquet -a x=[", 2, "not valid YAML"),
    ("embed {imgs} -e mobilenet_v2 -o {root}/e.parquet --batch-size 0", 2, "--batch-size must be >= 1"),
    ("embed {imgs} -e mobilenet_v2 -o {root}/e.parquet --device bogus", 2, "is not a torch device"),
    ("embed {imgs} -e mobilenet_v2 -o {root}", 2, "is a folder; give a file name"),
    ("detect {imgs} -d bogus -o {root}/d.parquet", 2, "unknown detector 'bogus'"),
    ("detect {imgs} -d rtdetr-tiny -o {imgs}", 2, "is a folder; give a file name"),
    ("dedup {imgs} -e mobilenet_v2 -o {root}/d.parquet -t 2", 2, "--threshold must be in (0.05, 1]"),
    ("dedup {imgs} -e mobilenet_v2 -o {root}/d.parquet --batch-size -1", 2, "--batch-size must be >= 1"),
    ("group {imgs} -e mobilenet_v2 -o {root}/g.parquet -k 0", 2, "--num-groups must be >= 1"),
    ("group {imgs} -e mobilenet_v2 -o {root}/g.parquet -k 2 -t 0.5", 2, "not both"),
    ("group {imgs} -e mobilenet_v2 -o {root}/g.parquet -t 5", 2, "cosine similarity in [-1, 1]"),
    ("eval -m reference -b bogus -o {root}/ev --profile tiny", 2, "cannot tell which benchmark"),
    ("eval -m reference -b dreambench:{missing} -o {root}/ev --profile tiny", 2, "no such folder"),
    ("eval -m reference -b folder:{imgs} -o {root}/ev --profile bogus", 2, "profile must be one of default, tiny"),
    ("eval -m reference -b folder:{imgs} -o {root}/ev --profile tiny --limit 0", 2, "limit must be >= 1"),
    ("eval -m reference -b folder:{imgs} -o {root}/ev --profile tiny --batch-size 0", 2, "batch_size must be >= 1"),
    ("eval -m reference -b folder:{imgs} -o {root}/ev --profile tiny --images-per-prompt 0", 2, "images_per_prompt must be >= 1"),
    ("eval -m reference -b folder:{imgs} -o {root}/ev --profile tiny -a novalue", 2, "is not key=value"),
    ("eval -m reference -b folder:{imgs} -o {root}/ev --profile tiny --metrics bogus", 2, "unknown metric 'bogus'"),
    ("eval -m bogus -b folder:{imgs} -o {root}/ev --profile tiny --metrics image_sim@mobilenet_v2", 2, "unknown model 'bogus'"),
    ("eval -m reference -b folder:{imgs} -o {root}/ev --profile tiny --split held-in", 2, "has splits"),
    ("eval -m reference -b folder:{imgs} -o {file} --profile tiny", 2, "is a file, not a folder"),
    ("eval -m reference -b folder:{imgs} -o {root}/ev --profile tiny --metric-device nope", 2, "is not a torch device"),
    ("leaderboard {missing} -o {root}/lb", 2, "not a complete run folder"),
    ("leaderboard {imgs} -o {root}/lb --grid-samples -1", 2, "--grid-samples must be >= 0"),
    ("leaderboard {imgs} -o {file}", 2, "is a file, not a folder"),
    ("demo -o {file}", 2, "is a file, not a folder"),
]


@pytest.mark.parametrize("args,code,message", CASES, ids=[c[0].split(" -")[0] + ":" + c[2][:30] for c in CASES])
def test_user_mistake_is_one_error_line(paths: dict[str, Path], args: str, code: int, message: str):
    result = runner.invoke(app, args.format(**{k: str(v) for k, v in paths.items()}).split())
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == code, result.output
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.output
    if code == 2:
        assert result.stderr.lstrip().startswith("error: ")
