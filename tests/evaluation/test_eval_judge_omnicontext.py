"""judge@MODEL:omnicontext: separate PF and SC calls (text, inputs capped at 1024 px, output), overall = sqrt(PF x SC)
per sample; the three-rubric judge keeps its name; position bias and seed stability measured on fixed answers and
on the tiny judge."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from evalhelpers import subject_image
from PIL import Image

from mrbench.evaluation.generator import ImageRef, Sample
from mrbench.evaluation.judge import FixedAnswerJudge, JudgeMetric, split_protocol
from mrbench.evaluation.judge_stability import position_bias, seed_stability
from mrbench.evaluation.metrics import AGGREGATION, MetricInput, build_metrics, parse_metric_specs
from mrbench.evaluation.omnicontext import MAX_SIDE, build_content

TINY = "judge@qwen2-vl-tiny:omnicontext"


def _item(n_refs: int = 3, big: bool = False, prompt: str = "a red toy in the snow") -> MetricInput:
    def ref(k: int) -> Image.Image:
        im = subject_image("red_toy", k)
        return im.resize((2000, 1000)) if big and k == 0 else im

    refs = [ImageRef(f"g/{k}", "g", (lambda k=k: ref(k))) for k in range(n_refs)]
    return MetricInput(subject_image("red_toy", 20), Sample("g/s", "g", "test", prompt, refs, None))


def _by_call(pf: object, sc: object):  # noqa: ANN202
    """Fixed answers: ``pf`` to the prompt-following call, ``sc`` to the subject-consistency call."""
    def answer(text: str, images: list, seed: int | None) -> str:
        value = pf if "PROMPT FOLLOWING" in text else sc
        return value if isinstance(value, str) else json.dumps({"reasoning": "fixed", "score": value})
    return answer


def test_protocol_names_keys_and_fields() -> None:
    assert split_protocol("Qwen/Qwen2.5-VL-7B-Instruct:omnicontext") == ("Qwen/Qwen2.5-VL-7B-Instruct", "omnicontext")
    assert split_protocol("Qwen/Qwen2.5-VL-7B-Instruct") == ("Qwen/Qwen2.5-VL-7B-Instruct", "three-rubric")
    assert split_protocol("/models/a:b") == ("/models/a:b", "three-rubric")  # a ':' that names no protocol
    m = JudgeMetric("fixed:omnicontext", FixedAnswerJudge(_by_call(4, 9), name="fixed"))
    assert m.key == "judge@fixed:omnicontext"
    assert m.field_keys() == [f"judge@fixed:omnicontext.{f}" for f in
                              ("overall", "prompt_following", "subject_consistency", "parsed")]
    old = JudgeMetric("fixed", FixedAnswerJudge(_by_call(4, 9), name="fixed"))  # today's judge, its own name
    assert old.key == "judge@fixed" and old.protocol == "three-rubric" and "visual_quality" in old.field_keys()[2]


def test_two_calls_text_first_inputs_capped_then_output() -> None:
    backend = FixedAnswerJudge(_by_call(4, 9), name="fixed")
    seen: list[list[tuple[int, int]]] = []
    inner = backend._answer
    backend._answer = lambda text, images, seed: (seen.append([im.size for im in images]), inner(text, images, seed))[1]
    m = JudgeMetric("fixed:omnicontext", backend)
    (row, detail), = m.compute_detailed([_item(3, big=True)])
    k = m.key
    assert row[f"{k}.prompt_following"] == 4.0 and row[f"{k}.subject_consistency"] == 9.0
    assert row[f"{k}.overall"] == pytest.approx(math.sqrt(4 * 9)) and row[f"{k}.parsed"] == 1.0
    assert len(backend.calls) == 2 and "PROMPT FOLLOWING" in backend.calls[0][0]
    assert "SUBJECT CONSISTENCY" in backend.calls[1][0] and all(n == 4 for _, n in backend.calls)  # 3 inputs + output
    assert seen[0][0] == (MAX_SIDE, MAX_SIDE // 2) and seen[0][1:] == [(64, 64)] * 3  # only the big input shrank
    assert '"a red toy in the snow"' in backend.calls[0][0]
    content = build_content("prompt_following", "p", 2)
    assert [c["type"] for c in content] == ["text", "image", "image", "image"]  # text, inputs, output
    assert detail["status"] == "ok" and set(detail["calls"]) == {"prompt_following", "subject_consistency"}
    assert detail["references"] == ["g/0", "g/1", "g/2"]


@pytest.mark.parametrize("pf,sc,status", [
    ("no idea", 9, "judge_unparsable"),
    (4, '{"reasoning": "fine", "score": 11}', "judge_out_of_range"),
    (4, '{"reasoning": "fine", "rating": 7}', "judge_missing_rubric"),
    ('{"score": "high"}', 9, "judge_not_a_number"),
])
def test_unparsable_answers_are_named_and_score_nothing(pf: object, sc: object, status: str) -> None:
    m = JudgeMetric("fixed:omnicontext", FixedAnswerJudge(_by_call(pf, sc), name="fixed"))
    (row, detail), = m.compute_detailed([_item(2)])
    assert detail["status"] == status and detail["error"]
    failed = "prompt_following" if not isinstance(pf, int) else "subject_consistency"
    assert detail["calls"][failed]["status"] == status and detail["error"].startswith(failed)
    # no guessed score, and no partial one: PF, SC and overall always average the same samples
    assert row == {f"{m.key}.overall": None, f"{m.key}.prompt_following": None,
                   f"{m.key}.subject_consistency": None, f"{m.key}.parsed": 0.0}


class FixedJudgeMetric(JudgeMetric):
    """The omnicontext judge on fixed answers that depend on the sample (PF from the prompt, SC from the group)."""

    name = "judge_fixed_test"

    @classmethod
    def build_encoder(cls, name: str, **kwargs: object) -> FixedAnswerJudge:
        def answer(text: str, images: list, seed: int | None) -> str:
            pf = 2 + len(re.search(r'Instruction: "(.*)"', text).group(1)) % 7
            sc = 1 + int(np.asarray(images[-1]).mean()) % 9
            return json.dumps({"score": pf if "PROMPT FOLLOWING" in text else sc, "reasoning": "fixed"})
        return FixedAnswerJudge(answer, name="fixed")


@pytest.fixture
def fixed_metric():  # noqa: ANN201
    from mrbench.evaluation.registry import metrics

    metrics().register("judge_fixed_test", FixedJudgeMetric, direction="higher", aggregation=AGGREGATION)
    yield "judge_fixed_test@fixed:omnicontext"
    metrics()._entries.pop("judge_fixed_test")  # the registry is process-wide: leave it as found


def test_run_rows_and_split_mean_of_overall(tmp_path: Path, mini_dreambench: Path, fixed_metric: str) -> None:
    """Through a real run: every row's overall is sqrt(PF x SC), the split mean averages per-sample overall scores
    over groups (not sqrt of the mean PF x mean SC), and config.json records the protocol."""
    from mrbench.evaluation.runner import run_eval

    res = run_eval("chance", f"dreambench:{mini_dreambench}", tmp_path / "runs", profile="tiny", limit=4,
                   images_per_prompt=2, metrics=fixed_metric, n_boot=50)
    k = "judge_fixed_test@fixed:omnicontext"
    by_group: dict[str, list[float]] = {}
    for row in res.rows:
        pf, sc = row["metrics"][f"{k}.prompt_following"], row["metrics"][f"{k}.subject_consistency"]
        assert row["metrics"][f"{k}.overall"] == pytest.approx(math.sqrt(pf * sc))
        by_group.setdefault(row["group"], []).append(math.sqrt(pf * sc))
        assert row["metric_details"][k]["calls"]["prompt_following"]["status"] == "ok"
    split = res.summary["splits"]["test"]["metrics"]
    assert split[f"{k}.overall"]["mean"] == pytest.approx(np.mean([np.mean(v) for v in by_group.values()]))
    cfg = json.loads((res.run_dir / "config.json").read_text())
    (judge_cfg,) = cfg["metrics"]
    assert judge_cfg["settings"]["protocol"] == "omnicontext" and judge_cfg["settings"]["input_max_side"] == 1024
    assert judge_cfg["settings"]["overall"].startswith("sqrt(")


@pytest.fixture(scope="module")
def tiny_omni():  # noqa: ANN201
    (m,) = build_metrics(parse_metric_specs(TINY), profile="tiny")
    return m


def test_tiny_judge_omnicontext_path(tiny_omni) -> None:  # noqa: ANN001
    m = tiny_omni
    assert m.key == TINY and m.info["random_weights"] is True and m.protocol == "omnicontext"
    proc = m.encoder.processor
    text = proc.apply_chat_template([{"role": "user", "content": build_content("subject_consistency", "a dog", 2)}],
                                    tokenize=False, add_generation_prompt=True)
    assert text.count("<|vision_start|><|image_pad|><|vision_end|>") == 3
    assert text.index('"a dog"') < text.index("<|vision_start|>")  # the text comes first
    item = _item(3)
    (row, detail), = m.compute_detailed([item])
    assert (row, detail) == m.judge(item)  # greedy: the same answers again
    if row[f"{m.key}.parsed"] == 1.0:
        assert row[f"{m.key}.overall"] == pytest.approx(math.sqrt(row[f"{m.key}.prompt_following"]
                                                                  * row[f"{m.key}.subject_consistency"]))
    else:  # random weights answer noise: named, no score
        assert detail["status"].startswith("judge_") and row[f"{m.key}.overall"] is None


def test_position_bias_and_seed_stability_on_fixed_answers() -> None:
    def first_image_judge(text: str, images: list, seed: int | None) -> str:
        # a judge that looks only at the first input: its SC score follows the reference order
        return json.dumps({"score": 5 if "PROMPT FOLLOWING" in text else int(np.asarray(images[0]).mean()) % 11})

    items = [_item(3, prompt=f"prompt {k}") for k in range(3)]
    blind = JudgeMetric("fixed:omnicontext", FixedAnswerJudge(_by_call(4, 9), name="fixed"))
    pb = position_bias(blind, items)
    assert pb["items"] == 3 and pb["answers_changed"] == 0.0
    assert pb["fields"]["overall"] == {"pairs": 3, "mean_change": 0.0, "mean_abs_change": 0.0}
    biased = JudgeMetric("fixed:omnicontext", FixedAnswerJudge(first_image_judge, name="fixed"))
    pb = position_bias(biased, items)
    first, last = (int(np.asarray(subject_image("red_toy", k)).mean()) % 11 for k in (0, 2))
    assert pb["answers_changed"] == 1.0
    assert pb["fields"]["subject_consistency"]["mean_change"] == pytest.approx(last - first)
    assert pb["fields"]["prompt_following"]["mean_abs_change"] == 0.0
    assert position_bias(biased, [_item(1)])["items"] == 0  # one reference: no order to swap

    seeded = JudgeMetric("fixed:omnicontext", FixedAnswerJudge(
        lambda text, images, seed: json.dumps({"score": 4 + (seed or 0) % 3}), name="fixed"))
    st = seed_stability(seeded, items, seeds=(0, 1, 2))
    assert st["answers_differ"] == 1.0
    assert st["fields"]["prompt_following"]["mean_std"] == pytest.approx(np.std([4, 5, 6]))
    assert st["fields"]["overall"]["mean_std"] == pytest.approx(np.std([4, 5, 6]))  # sqrt(s x s) = s
    assert seed_stability(blind, items)["fields"]["overall"]["mean_std"] == 0.0


def test_tiny_judge_greedy_ignores_the_seed_and_sampling_does_not(tiny_omni) -> None:  # noqa: ANN001
    from mrbench.evaluation.judge import VLMJudge

    items = [_item(2)]
    greedy = seed_stability(tiny_omni, items, seeds=(0, 1))
    assert greedy["answers_differ"] == 0.0
    sampled = JudgeMetric("qwen2-vl-tiny:omnicontext", VLMJudge("qwen2-vl-tiny", temperature=1.0))
    a = sampled.judge(items[0], seed=0)[1]
    assert a == sampled.judge(items[0], seed=0)[1]  # the same seed: the same answers
    runs = seed_stability(sampled, items, seeds=(0, 1, 2))
    assert runs["answers_differ"] == 1.0  # random weights sampled at temperature 1: the answers move with the seed
