"""The judge's answer format: the three rubrics (the default keys of an answer) and the parser that reads scores from
an answer, or names why there are none. Shared by both judge protocols (:mod:`mrbench.evaluation.judge`,
:mod:`mrbench.evaluation.omnicontext`)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

RUBRICS: tuple[tuple[str, str], ...] = (
    ("subject_consistency",
     "Subject consistency: is the main subject of the generated image the same subject as in the reference images "
     "(identity, shape, colours, textures, distinctive details)? 0 = a different subject or no subject, 10 = the "
     "same subject in every detail."),
    ("prompt_following",
     "Prompt following: does the generated image show what the text prompt asks for (scene, action, context, "
     "style), leaving the subject's identity aside? 0 = unrelated to the prompt, 10 = everything the prompt asks for."),
    ("visual_quality",
     "Visual quality: is the generated image well formed and natural (no distortions, artefacts, broken anatomy, "
     "garbled text or blur)? 0 = unusable, 10 = flawless."),
)
RUBRIC_KEYS = tuple(k for k, _ in RUBRICS)


@dataclass
class Verdict:
    """A parsed judge answer: ``status`` ``ok`` with every score, or a named failure with none."""

    status: str
    scores: dict[str, float] = field(default_factory=dict)
    error: str = ""


_NUMBER = re.compile(r"^\s*[+-]?(\d+(\.\d*)?|\.\d+)\s*$")


def _objects(text: str) -> list[dict[str, Any]]:
    """Every flat JSON object in ``text`` that loads, in order (code fences and prose around them are ignored)."""
    out = []
    for m in re.finditer(r"\{[^{}]*\}", text):
        try:
            obj = json.loads(m.group(0))
        except ValueError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


def parse_answer(text: str, keys: Sequence[str] = RUBRIC_KEYS) -> Verdict:
    """Scores from a judge answer, or the named reason it has none.

    The last JSON object holding any of ``keys`` is used (keys compared case-insensitively, spaces and hyphens read
    as underscores). Values must be numbers (or strings that are plain numbers) in [0, 10].
    """
    objects = _objects(text or "")
    if not objects:
        return Verdict("judge_unparsable", error="no JSON object in the answer")

    def norm(k: Any) -> str:
        return re.sub(r"[\s-]+", "_", str(k).strip().lower())

    candidates = [{norm(k): v for k, v in o.items()} for o in objects]
    with_keys = [c for c in candidates if any(k in c for k in keys)]
    if not with_keys:
        return Verdict("judge_missing_rubric", error=f"no rubric key ({', '.join(keys)}) in the answer")
    obj = with_keys[-1]
    missing = [k for k in keys if k not in obj]
    if missing:
        return Verdict("judge_missing_rubric", error=f"missing {', '.join(missing)}")
    scores: dict[str, float] = {}
    for k in keys:
        v = obj[k]
        if isinstance(v, bool) or not (isinstance(v, (int, float)) or (isinstance(v, str) and _NUMBER.match(v))):
            return Verdict("judge_not_a_number", error=f"{k} is {v!r}")
        x = float(v)
        if not 0.0 <= x <= 10.0:
            return Verdict("judge_out_of_range", error=f"{k} = {x:g} is outside [0, 10]")
        scores[k] = x
    return Verdict("ok", scores)
