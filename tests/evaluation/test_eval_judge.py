"""judge@MODEL: prompt building, the answer parser on fixed answers, the tiny random judge end to end, weights."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from evalhelpers import subject_image

from mrbench.backends.base import MissingWeightsError
from mrbench.evaluation.generator import ImageRef, Sample
from mrbench.evaluation.judge import (
    GENERATED_HEADER, REFERENCES_HEADER, RUBRIC_KEYS, RUBRICS, build_messages, instructions, judge_slug, parse_answer,
)
from mrbench.evaluation.metrics import MetricInput, build_metrics, parse_metric_specs

GOOD = {"subject_consistency": 7, "prompt_following": 5.5, "visual_quality": 10}


def _sample(n_refs: int = 2, prompt: str = "a red toy in the snow") -> Sample:
    refs = [ImageRef(f"g/{k}", "g", (lambda k=k: subject_image("red_toy", k))) for k in range(n_refs)]
    return Sample("g/s", "g", "test", prompt, refs, ImageRef("g/t", "g", lambda: subject_image("red_toy", 9)))


@pytest.mark.parametrize("answer,scores", [
    (json.dumps(GOOD), {"subject_consistency": 7.0, "prompt_following": 5.5, "visual_quality": 10.0}),
    ("```json\n" + json.dumps(GOOD) + "\n```", {"subject_consistency": 7.0, "prompt_following": 5.5,
                                                 "visual_quality": 10.0}),
    ('Here are my scores: {"Subject Consistency": "3", "prompt-following": 0, "visual_quality": 4.0}. Thanks.',
     {"subject_consistency": 3.0, "prompt_following": 0.0, "visual_quality": 4.0}),
    # The last object with rubric keys wins (a model that restates the example first).
    ('e.g. {"subject_consistency": 7, "prompt_following": 5, "visual_quality": 8} -> '
     '{"subject_consistency": 1, "prompt_following": 2, "visual_quality": 3}',
     {"subject_consistency": 1.0, "prompt_following": 2.0, "visual_quality": 3.0}),
])
def test_parser_valid(answer: str, scores: dict) -> None:
    v = parse_answer(answer)
    assert v.status == "ok" and v.scores == scores and not v.error


@pytest.mark.parametrize("answer,status,detail", [
    ('{"subject_consistency": 11, "prompt_following": 5, "visual_quality": 8}', "judge_out_of_range", "subject_consistency = 11"),
    ('{"subject_consistency": 7, "prompt_following": -1, "visual_quality": 8}', "judge_out_of_range", "prompt_following"),
    ('{"subject_consistency": 7, "visual_quality": 8}', "judge_missing_rubric", "missing prompt_following"),
    ('{"score": 7}', "judge_missing_rubric", "no rubric key"),
    ('{"subject_consistency": "high", "prompt_following": 5, "visual_quality": 8}', "judge_not_a_number", "high"),
    ('{"subject_consistency": "8/10", "prompt_following": 5, "visual_quality": 8}', "judge_not_a_number", "8/10"),
    ('{"subject_consistency": true, "prompt_following": 5, "visual_quality": 8}', "judge_not_a_number", "True"),
    ("subject consistency 7, prompt following 5, quality 8", "judge_unparsable", "no JSON"),
    ("N\x17ivN\x17iv{{ junk", "judge_unparsable", "no JSON"),
    ("", "judge_unparsable", "no JSON"),
])
def test_parser_named_failures(answer: str, status: str, detail: str) -> None:
    v = parse_answer(answer)
    assert v.status == status and detail in v.error and v.scores == {}  # never a guessed score


def test_messages_and_instructions() -> None:
    msgs = build_messages("a red toy in the snow", 3)
    content = msgs[0]["content"]
    kinds = [c["type"] for c in content]
    assert kinds == ["text", "image", "image", "image", "text", "image", "text"]  # references, then the generation
    assert content[0]["text"] == REFERENCES_HEADER and content[4]["text"] == GENERATED_HEADER
    text = content[-1]["text"]
    assert text == instructions("a red toy in the snow") and '"a red toy in the snow"' in text
    assert all(key in text and rubric in text for key, rubric in RUBRICS) and "0 to 10" in text
    assert [c["type"] for c in build_messages("p", 0)[0]["content"]] == ["text", "image", "text"]
    assert judge_slug("Qwen/Qwen2.5-VL-7B-Instruct") == "Qwen2_5-VL-7B-Instruct"
    assert judge_slug("/models/my.judge/") == "my_judge"


@pytest.fixture(scope="module")
def tiny_judge():  # noqa: ANN201
    (m,) = build_metrics(parse_metric_specs("judge"), profile="tiny")
    return m


def test_tiny_judge_prompt_reaches_the_model(tiny_judge) -> None:  # noqa: ANN001
    proc = tiny_judge.encoder.processor
    text = proc.apply_chat_template(build_messages("a dog", 2), tokenize=False, add_generation_prompt=True)
    assert text.count("<|vision_start|><|image_pad|><|vision_end|>") == 3
    assert text.index(REFERENCES_HEADER) < text.index(GENERATED_HEADER) < text.index('"a dog"')
    assert text.endswith("<|im_start|>assistant\n")


def test_tiny_judge_rows(tiny_judge) -> None:  # noqa: ANN001
    assert tiny_judge.key == "judge@qwen2-vl-tiny" and tiny_judge.info["random_weights"] is True
    assert tiny_judge.field_keys() == [f"judge@qwen2-vl-tiny.{f}" for f in (*RUBRIC_KEYS, "parsed")]
    s = _sample(n_refs=5)
    item = MetricInput(subject_image("red_toy", 20, size=32), s)
    (row, detail), = tiny_judge.compute_detailed([item])
    (row2, detail2), = tiny_judge.compute_detailed([item])
    assert (row, detail) == (row2, detail2)  # greedy decoding: same image, same answer
    assert detail["references"] == [f"g/{k}" for k in range(4)]  # at most 4 references, benchmark order
    verdict = parse_answer(detail["answer"])
    assert detail["status"] == verdict.status  # the raw answer is kept and the status follows from it
    if verdict.status == "ok":
        assert row[f"{tiny_judge.key}.parsed"] == 1.0
    else:  # random weights answer noise: a named failure, no score
        assert row == {**{f"{tiny_judge.key}.{k}": None for k in RUBRIC_KEYS}, f"{tiny_judge.key}.parsed": 0.0}
        assert detail["status"].startswith("judge_") and detail["error"]
    settings = tiny_judge.settings()
    assert settings["model"] == "qwen2-vl-tiny" and settings["rubrics"] == dict(RUBRICS)
    assert settings["decoding"]["do_sample"] is False


def test_judge_run_config_rows_and_leaderboard(tmp_path: Path, mini_dreambench: Path) -> None:
    """The ceiling row judged by the tiny judge: settings in config.json, raw answers in rows, judge columns."""
    from mrbench.evaluation.leaderboard import build_leaderboard
    from mrbench.evaluation.runner import run_eval

    res = run_eval("reference", f"dreambench:{mini_dreambench}", tmp_path / "runs", profile="tiny", limit=2,
                   images_per_prompt=1, metrics="judge,image_sim@dino-tiny", n_boot=50)
    cfg = json.loads((res.run_dir / "config.json").read_text())
    (judge_cfg,) = [m for m in cfg["metrics"] if m["metric"] == "judge"]
    assert judge_cfg["key"] == "judge@qwen2-vl-tiny" and judge_cfg["settings"]["model"] == "qwen2-vl-tiny"
    assert judge_cfg["settings"]["rubrics"]["visual_quality"].startswith("Visual quality")
    for row in res.rows:
        d = row["metric_details"]["judge@qwen2-vl-tiny"]
        assert isinstance(d["answer"], str) and d["status"] == parse_answer(d["answer"]).status
        assert row["source_id"] not in d["references"]  # the returned real image is not shown as a reference
    split = res.summary["splits"]["test"]["metrics"]
    assert split["judge@qwen2-vl-tiny.parsed"]["direction"] == "higher"
    paths = build_leaderboard([res.run_dir], tmp_path / "board")
    md = paths["md"].read_text()
    assert "judge@qwen2-vl-tiny.subject_consistency" in md and "judge@qwen2-vl-tiny.parsed" in md
    csv_text = paths["csv"].read_text()
    assert ",judge@qwen2-vl-tiny.visual_quality,qwen2-vl-tiny," in csv_text  # encoder column parses


def test_missing_judge_weights_fail_before_any_work(tmp_path: Path, mini_dreambench: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from mrbench.evaluation.runner import run_eval

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("MRBENCH_WEIGHTS_DIR", str(tmp_path / "mirror"))
    with pytest.raises(MissingWeightsError, match="judge VLM \\(Qwen/Qwen2.5-VL-3B-Instruct\\)") as e:
        run_eval("reference", f"dreambench:{mini_dreambench}", tmp_path / "out",
                 metrics="judge@Qwen/Qwen2.5-VL-3B-Instruct", images_per_prompt=1)
    assert "hf download Qwen/Qwen2.5-VL-3B-Instruct" in str(e.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.weights
@pytest.mark.slow
def test_real_judge_scores_a_real_photo() -> None:
    """MRBENCH_JUDGE_MODEL (default Qwen/Qwen2.5-VL-7B-Instruct) judges a reference against its siblings."""
    from evalhelpers import shared

    from mrbench.evaluation.benchmarks import load_image_file

    model = os.environ.get("MRBENCH_JUDGE_MODEL", "Qwen/Qwen2.5-VL-7B-Instruct")
    (m,) = build_metrics(parse_metric_specs(f"judge@{model}"))
    files = sorted((shared("dreambench") / "dog").glob("*.jpg"))
    refs = [ImageRef(f.name, "dog", (lambda f=f: load_image_file(f))) for f in files[1:4]]
    s = Sample("dog/0", "dog", "test", "a dog on the grass", refs, None)
    (row, detail), = m.compute_detailed([MetricInput(load_image_file(files[0]), s)])
    assert detail["status"] == "ok", detail
    assert row[f"{m.key}.subject_consistency"] >= 5 and row[f"{m.key}.parsed"] == 1.0
