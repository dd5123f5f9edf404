import pytest

from mrbench.config import ConfigError, load_config
from mrbench.curation.config import CurateConfig


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    (tmp_path / "tags.yaml").write_text("- {name: x, category: subject}\n")
    return p


BASE = "sources: [{kind: metadata, paths: [m.parquet]}]\ncrawl: {tag_list: tags.yaml}\n"


def test_yaml_then_cli_overrides_and_relative_paths(tmp_path):
    cfg = load_config(CurateConfig, write(tmp_path, BASE + "num_shards: 3\n"), ["num_shards=5", "crawl.timeout=2.5"])
    assert cfg.num_shards == 5 and cfg.crawl.timeout == 2.5
    assert cfg.crawl.tag_list == str(tmp_path / "tags.yaml")
    assert cfg.sources[0].paths == [str(tmp_path / "m.parquet")]
    assert cfg.split.held_out_groups == 50 and cfg.split.held_in_groups == 300  # paper defaults


@pytest.mark.parametrize(
    "extra,match",
    [("num_shards: -1\n", "num_shards"), ("crawl: {tag_list: tags.yaml, resize_mode: stretch}\n", "resize_mode"),
     ("bogus: 1\n", "unknown config key"), ("crawl: {tag_list: tags.yaml, timeuot: 3}\n", "crawl.timeuot"),
     ("crawl: {tag_list: tags.yaml, allow_private_network: maybe}\n", "true or false"),
     ("group: {min_group_size: 1}\n", "min_group_size"), ("executor: {name: spark}\n", "executor.name")],
)
def test_bad_config_fails_before_work(tmp_path, extra, match):
    with pytest.raises(ConfigError, match=match):
        load_config(CurateConfig, write(tmp_path, BASE + extra))


def test_missing_tag_list_and_sources(tmp_path):
    with pytest.raises(ConfigError, match="tag_list"):
        load_config(CurateConfig, write(tmp_path, "sources: [{kind: metadata, paths: [m.parquet]}]\n"))
    with pytest.raises(ConfigError, match="sources"):
        load_config(CurateConfig, write(tmp_path, "num_shards: 2\n"))
    with pytest.raises(ConfigError, match="key.sub=value"):
        load_config(CurateConfig, write(tmp_path, BASE), ["num_shards"])


def test_ignored_output_format_is_said(tmp_path, caplog):
    """crawl.output_format still loads (older configs) but does nothing: validation says so, once per process."""
    import logging

    from mrbench import log

    log._warned.discard("crawl.output_format")
    cfg = load_config(CurateConfig, write(tmp_path, BASE), ["crawl.output_format=webdataset"])
    with caplog.at_level(logging.WARNING, logger="mrbench"):
        cfg.validate()
    assert "crawl.output_format='webdataset' is ignored" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mrbench"):
        load_config(CurateConfig, write(tmp_path, BASE)).validate()
    assert "output_format" not in caplog.text


def test_a_config_is_validated_once_per_process(tmp_path, monkeypatch):
    """The CLI (or the API) loads the config, then the pipeline asks again: the checks that read files and
    registries (the tag list, the models, the calibration) run once for the same values; a config changed since
    is checked again."""
    from PIL import Image

    from mrbench.curation.pipeline import plan_curation

    calls = []
    validate = CurateConfig.validate
    monkeypatch.setattr(CurateConfig, "validate", lambda self: (calls.append(self.seed), validate(self))[1])
    (tmp_path / "photos" / "cat").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "photos" / "cat" / "a.jpg")
    cfg = load_config(CurateConfig, write(tmp_path, "seed: 7\nsources: [{kind: folder, paths: [photos]}]\n"))
    plan_curation(cfg, tmp_path / "run")
    plan_curation(cfg, tmp_path / "run")
    assert calls == [7]
    cfg.group.max_group_size = 1
    with pytest.raises(ConfigError, match="max_group_size"):
        plan_curation(cfg, tmp_path / "run")
    assert calls == [7, 7]
