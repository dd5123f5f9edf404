"""Threshold calibration: the curve and the operating point, the calibration file, its use by a curation config,
and the `mrbench calibrate` command (tiny random encoder)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from mrbench.cli import app
from mrbench.config import ConfigError, load_config
from mrbench.curation.config import CurateConfig
from mrbench.curation.calibration import (
    PairScores, label_pair_scores, near_duplicate_pair_scores, parse_criterion, recommend, threshold_curve,
)
from mrbench.curation.pipeline import log_thresholds
from mrbench.thresholds import CALIBRATED, for_run, for_setting, load_calibration, resolve


def scores(same, different) -> PairScores:
    return PairScores(np.asarray(same, float), np.asarray(different, float))


def test_curve_counts_pairs_at_or_above_each_threshold():
    c = threshold_curve(scores([0.9, 0.8, 0.7], [0.75, 0.3]))
    k = int(np.flatnonzero(np.isclose(c.thresholds, 0.75))[0])
    assert (c.precision[k], c.recall[k], c.false_match_rate[k]) == (2 / 3, 2 / 3, 0.5)  # 0.9, 0.8 and 0.75 pass
    assert c.thresholds[-1] > 0.9 and c.precision[-1] == 1.0 and c.recall[-1] == 0.0  # nothing predicted: 1 by convention
    assert c.positives == 3 and c.negatives == 2


def test_recommendation_takes_the_middle_of_the_best_run():
    sep = threshold_curve(scores([0.95, 0.97, 0.99], [0.5, 0.85, 0.6]))
    rec = recommend(sep, "max_f1")
    assert rec.threshold == pytest.approx(0.9, abs=0.002) and rec.precision == rec.recall == rec.f1 == 1.0
    overlap = threshold_curve(scores([0.95, 0.97, 0.99, 0.80], [0.5, 0.85, 0.6, 0.82]))
    f1 = recommend(overlap, "max_f1")
    strict = recommend(overlap, "precision>=1")
    assert strict.precision == 1.0 and strict.recall == 0.75 and 0.85 < strict.threshold <= 0.95
    assert f1.f1 >= strict.f1 and f1.threshold <= strict.threshold


def test_criterion_parsing():
    assert parse_criterion("max_f1") == ("max_f1", None)
    assert parse_criterion("precision >= 0.99") == ("precision>=", 0.99)
    for bad in ("precision>=2", "precision>=x", "recall"):
        with pytest.raises(ValueError, match="criterion"):
            parse_criterion(bad)


def test_pair_scores_split_by_label_and_by_listed_pairs():
    emb = np.eye(4)[[0, 0, 1, 2]].astype(np.float32)
    lab = label_pair_scores(emb, ["a", "a", "b", "b"], ["a1", "a2", "b1", "b2"])
    assert sorted(lab.same.tolist()) == [0.0, 1.0] and lab.different.size == 4
    assert lab.hardest[0][:2] == ("b1", "b2")  # the least similar same-label pair comes first
    nd = near_duplicate_pair_scores(emb, {(0, 1)})
    assert nd.same.tolist() == [1.0] and nd.different.size == 5


def write_calibration(path, threshold=0.77, encoder="dino-tiny", task="near_duplicate"):
    path.write_text(yaml.safe_dump({"format": "mrbench-calibration/1", "encoders": {
        encoder: {task: {"threshold": threshold, "precision": 0.9, "recall": 0.8, "criterion": "max_f1",
                         "data": "my photos"}}}}))
    return path


def test_threshold_resolution_order(tmp_path):
    cal = write_calibration(tmp_path / "cal.yaml", encoder="dlib", task="identity")
    assert resolve("dlib", "identity") is CALIBRATED[("dlib", "identity")]
    from_file = resolve("dlib", "identity", cal)
    assert from_file.threshold == 0.77 and from_file.calibrated and from_file.source == str(cal)
    assert "measured precision 0.90 / recall 0.80 on my photos" in from_file.describe("identity")
    guess = resolve("dino-tiny", "near_duplicate")
    assert not guess.calibrated and "not calibrated for this encoder" in guess.describe("near_duplicate")
    cfg = CurateConfig()
    cfg.embed.face_encoder, cfg.calibration = "dlib", str(cal)
    assert for_run(cfg, "identity").threshold == 0.77
    assert for_run(cfg, "identity", 0.6).describe("identity") == "identity threshold 0.6: set in the config"
    assert for_run(cfg, "near_duplicate") is None  # no image encoder in this run


def test_a_threshold_setting_left_empty_takes_its_fallback_setting_then_the_encoders():
    cfg = CurateConfig()
    cfg.embed.encoder, cfg.embed.face_encoder = "dino-tiny", "dlib"
    assert for_setting(cfg, "audit.identity_threshold").threshold == 0.926  # dlib's measured operating point
    cfg.group.identity_threshold = 0.7
    assert for_setting(cfg, "audit.identity_threshold").threshold == 0.7  # one person, one threshold: the grouping's
    cfg.audit.identity_threshold = 0.8
    assert for_setting(cfg, "audit.identity_threshold").threshold == 0.8
    assert for_setting(cfg, "group.identity_threshold").threshold == 0.7
    cfg.dedup.threshold = 0.97
    assert for_setting(cfg, "dedup.threshold").describe("near_duplicate") == "near-duplicate threshold 0.97: set in the config"
    assert for_setting(cfg, "audit.near_dup_threshold").threshold == 0.94  # not the dedup's: the encoder's fallback
    cfg.embed.encoder = ""
    assert for_setting(cfg, "dedup.threshold") is None  # no image encoder in this run


def test_config_points_at_a_calibration_file(tmp_path):
    write_calibration(tmp_path / "cal.yaml")
    (tmp_path / "photos").mkdir()
    (tmp_path / "run.yaml").write_text(yaml.safe_dump({
        "sources": [{"kind": "folder", "paths": ["photos"]}], "embed": {"encoder": "dino-tiny"},
        "calibration": "cal.yaml"}))
    cfg = load_config(CurateConfig, tmp_path / "run.yaml")
    assert cfg.calibration == str(tmp_path / "cal.yaml")  # relative to the YAML file
    assert for_run(cfg, "near_duplicate").threshold == 0.77
    (tmp_path / "cal.yaml").write_text("format: something-else\n")
    with pytest.raises(ConfigError, match="is not a calibration file"):
        load_config(CurateConfig, tmp_path / "run.yaml")
    write_calibration(tmp_path / "cal.yaml", threshold=3)
    with pytest.raises(ConfigError, match=r"dino-tiny\.near_duplicate\.threshold must be a cosine"):
        load_calibration(tmp_path / "cal.yaml")


def test_run_log_says_which_encoder_has_no_calibration(caplog):
    cfg = CurateConfig()
    cfg.embed.encoder, cfg.embed.face_encoder = "dino-tiny", "dlib"
    with caplog.at_level(logging.INFO, logger="mrbench"):
        log_thresholds(cfg)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and warned[0].startswith("dino-tiny: near-duplicate threshold 0.94: not calibrated")
    assert any("dlib: identity threshold 0.926: measured" in r.getMessage() for r in caplog.records)


def labelled_folder(root):
    """Three 'subjects' of four coloured images each (seeded noise on a base colour)."""
    rng = np.random.default_rng(0)
    for s, base in enumerate(((200, 40, 40), (40, 200, 40), (40, 40, 200))):
        (root / f"subject{s}").mkdir(parents=True)
        for k in range(4):
            px = np.clip(np.array(base) + rng.normal(0, 30, (48, 48, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(px).save(root / f"subject{s}" / f"{k}.png")
    return root


def test_calibrate_command_writes_the_file_and_the_page(tmp_path):
    folder = labelled_folder(tmp_path / "photos")
    (tmp_path / "pairs.txt").write_text("# near-duplicates\nsubject0/0.png, subject0/1.png\n")
    out = tmp_path / "cal"
    result = CliRunner().invoke(app, ["calibrate", str(folder), "-e", "dino-tiny", "-o", str(out), "--plant", "2",
                                      "--pairs", str(tmp_path / "pairs.txt"), "--criterion", "precision>=0.9"])
    assert result.exit_code == 0, result.output
    assert "dino-tiny [random weights] subject: threshold" in result.output
    doc = yaml.safe_load((out / "calibration.yaml").read_text())
    point = doc["encoders"]["dino-tiny"]["near_duplicate"]
    assert point["same_pairs"] == 1 + 2 * 10  # the listed pair + per planted original 4 edits and 6 sibling pairs
    assert point["random_weights"] is True and point["criterion"] == "precision>=0.9"
    assert doc["encoders"]["dino-tiny"]["subject"]["same_pairs"] == 3 * 6
    loaded = load_calibration(out / "calibration.yaml")
    assert set(loaded) == {("dino-tiny", "subject"), ("dino-tiny", "near_duplicate")}
    page = (out / "calibration.html").read_text()
    assert page.count("<img src='data:image/png") == 4 and "Hardest pairs" in page and "[random weights]" in page


@pytest.mark.parametrize("args, message", [
    (["--criterion", "best"], "criterion must be max_f1 or precision>=P"),
    (["--labels", "identity"], "--labels identity needs a face encoder"),
    (["--pairs", "PAIRS"], "is not an image under"),
    (["--labels", "none"], "--labels none measures near-duplicates only"),
])
def test_calibrate_mistakes_are_one_error_line(tmp_path, args, message):
    folder = labelled_folder(tmp_path / "photos")
    (tmp_path / "pairs.txt").write_text("subject0/0.png subject9/9.png\n")
    args = [str(tmp_path / "pairs.txt") if a == "PAIRS" else a for a in args]
    result = CliRunner().invoke(app, ["calibrate", str(folder), "-e", "dino-tiny", "-o", str(tmp_path / "o"), *args])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output, result.output


def test_calibrate_needs_two_labels(tmp_path):
    (tmp_path / "one" / "only").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "one" / "only" / "a.png")
    result = CliRunner().invoke(app, ["calibrate", str(tmp_path / "one"), "-e", "dino-tiny", "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "needs at least 2 sub-folder(s)" in result.output
