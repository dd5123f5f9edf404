"""The judge's position bias (references in order vs reversed) and seed stability, measured in one run.

Run by hand:

    .venv/bin/python bench/judge_stability.py                              # shared DreamBench, 6 samples
    .venv/bin/python bench/judge_stability.py --dreambench PATH --samples 10 --judge Qwen/Qwen2.5-VL-7B-Instruct

Items: DreamBench samples (one per subject, up to 4 references each) judged against a real photo of the same
subject that is not among the references shown (the ceiling row's image), so every item has a meaningful answer.
Judges, each under both protocols (``three-rubric`` and ``omnicontext``):

- ``--judge`` (default: the tiny random Qwen2-VL; its answers are noise and rarely parse: the share of answers
  that changed is its figure), greedy and sampled at ``--temperature`` over ``--seeds``;
- fixed answers: an order-blind judge (the same answer whatever the order: bias 0 expected) and a judge that reads
  only the first input image (its subject-consistency score follows the reference order), which checks that the
  measurement sees a bias where there is one.

Printed per judge: the items measured, the share of answers that changed when the references were reversed, per field
the mean change and mean absolute change (on items scored both times), and per seed set the mean standard deviation
across seeds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from mrbench.evaluation.benchmarks import build_benchmark
from mrbench.evaluation.judge import FixedAnswerJudge, JudgeMetric, VLMJudge
from mrbench.evaluation.judge_stability import position_bias, seed_stability
from mrbench.evaluation.metrics import MetricInput

FIELDS = {"three-rubric": ("subject_consistency", "prompt_following", "visual_quality"),
          "omnicontext": ("overall", "prompt_following", "subject_consistency")}


def items(path: Path, n: int) -> list[MetricInput]:
    """One sample per subject: its first prompt; the 'generation' is the last reference (left out of those shown)."""
    bench = build_benchmark(f"dreambench:{path}", split="test")
    seen, out = set(), []
    for s in bench.samples():
        if s.group in seen or len(s.references) < 3:
            continue
        seen.add(s.group)
        image = s.references[-1].load()
        out.append(MetricInput(image, s, source_id=s.references[-1].id))
        if len(out) == n:
            break
    return out


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:+.3f}"


def report(name: str, metric: JudgeMetric, its: list[MetricInput], seeds: list[int]) -> dict:
    pb = position_bias(metric, its)
    st = seed_stability(metric, its, seeds)
    print(f"\n{name} [{metric.key}]")
    print(f"  position bias: {pb['items']} items, answers changed when the references were reversed: "
          f"{100 * (pb['answers_changed'] or 0):.0f} %")
    for f in FIELDS[metric.protocol]:
        d = pb["fields"][f]
        print(f"    {f:<20} pairs {d['pairs']:>2}  mean change {_fmt(d['mean_change'])}  "
              f"mean |change| {_fmt(d['mean_abs_change'])}")
    print(f"  seed stability over seeds {seeds}: answers differ between seeds on "
          f"{100 * (st['answers_differ'] or 0):.0f} % of items")
    for f in FIELDS[metric.protocol]:
        d = st["fields"][f]
        print(f"    {f:<20} items {d['items']:>2}  mean std across seeds {_fmt(d['mean_std'])}")
    return {"position_bias": pb, "seed_stability": st}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dreambench", type=Path,
                    default=Path(__file__).resolve().parents[2] / "shared" / "data" / "dreambench")
    ap.add_argument("--samples", type=int, default=6)
    ap.add_argument("--judge", default="qwen2-vl-tiny")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--json", type=Path, help="also write every figure here")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    its = items(args.dreambench, args.samples)
    print(f"{len(its)} items from {args.dreambench.name} (one per subject; at most 4 references shown each)")

    def blind(text: str, images: list, seed: int | None) -> str:
        return json.dumps({"score": 7, "subject_consistency": 7, "prompt_following": 6, "visual_quality": 8})

    def first_image(text: str, images: list, seed: int | None) -> str:
        v = int(np.asarray(images[0].convert("L")).mean()) % 11  # only the first input is looked at
        score = 6 if "PROMPT FOLLOWING" in text else v  # omnicontext: its PF call does not look at the inputs
        return json.dumps({"score": score, "subject_consistency": v, "prompt_following": 6, "visual_quality": 8})

    out = {}
    for protocol in ("three-rubric", "omnicontext"):
        suffix = "" if protocol == "three-rubric" else ":omnicontext"
        greedy = JudgeMetric(args.judge + suffix, JudgeMetric.build_encoder(args.judge + suffix))
        sampled = JudgeMetric(args.judge + suffix, VLMJudge(args.judge, temperature=args.temperature,
                                                            max_pixels=greedy.encoder.max_pixels))
        out[protocol] = {
            "greedy": report(f"{args.judge}, greedy ({protocol})", greedy, its, seeds),
            "sampled": report(f"{args.judge}, sampled at temperature {args.temperature:g} ({protocol})", sampled,
                              its, seeds),
            "fixed_blind": report(f"fixed answers, order-blind ({protocol})",
                                  JudgeMetric("fixed" + suffix, FixedAnswerJudge(blind, "fixed")), its, seeds),
            "fixed_first_image": report(f"fixed answers, first image only ({protocol})",
                                        JudgeMetric("fixed" + suffix, FixedAnswerJudge(first_image, "fixed")), its,
                                        seeds),
        }
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
