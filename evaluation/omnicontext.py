"""The ``omnicontext`` judge protocol (``judge@MODEL:omnicontext``), after OmniContext (OmniGen2, Wu et al. 2025).

OmniContext scores a generation with an MLLM judge in two separate calls, each with its own rubric and a 0-10 score:

- **prompt following (PF)**: does the output do what the instruction asks?
- **subject consistency (SC)**: are the subjects of the input images preserved in the output?

Each call is one user turn: the rubric text with the instruction first, then the input images (the references,
longest side capped at :data:`MAX_SIDE` = 1024 px), then the output image. The judge answers a JSON object
``{"score": <0-10>, "reasoning": "..."}``. The sample's **overall** score is ``sqrt(PF x SC)``; the split's value
is the mean of the per-sample overall scores (per-group means first, as for every MRBench metric), never
``sqrt(mean PF x mean SC)``.

The rubric texts below are MRBench's own wording of that protocol. Where OmniContext's script guesses a random
score for an answer it cannot parse, MRBench names the failure (``judge_unparsable``, ``judge_missing_rubric``,
``judge_not_a_number``, ``judge_out_of_range``, as the three-rubric judge does): a sample whose PF or SC answer has no
score has no PF, SC or overall value, and ``parsed`` = 0, so the three fields always average the same samples.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, Sequence

from PIL import Image

from mrbench.evaluation.judge_answer import parse_answer
from mrbench.evaluation.metrics import MetricField

MAX_SIDE = 1024  # input images are capped at this longest side before the judge sees them
MAX_INPUTS = 4  # references shown per call, in benchmark order (OmniContext's tasks have 1-3 inputs)
SCORE_KEY = "score"

_COMMON = (
    "You are a meticulous evaluator of AI image generation. An image generation model was given the instruction "
    "below and {n_inputs} input image(s). The images follow this text: first the input image(s), in the order the "
    "model received them, then, as the LAST image, the image the model produced.\n\n"
    "Instruction: \"{prompt}\"\n\n"
)
_ANSWER = (
    "\n\nAnswer with only a JSON object of this form, the score an integer from 0 to 10: "
    "{{\"score\": <0-10>, \"reasoning\": \"<one or two sentences>\"}}"
)
RUBRICS: dict[str, str] = {
    "prompt_following": (
        "Task: rate PROMPT FOLLOWING -- how completely and accurately the produced image carries out the "
        "instruction: the requested scene, setting, actions, poses, interactions, attributes, counts, spatial "
        "relations and style. Do not judge whether the subjects look like the input images, and do not judge "
        "image quality unless it makes the content unreadable.\n"
        "0-2: the instruction is ignored or contradicted; 3-4: a small part of it is carried out; 5-6: the main "
        "request is there but with clear omissions or errors; 7-8: everything important is there, with minor "
        "deviations; 9-10: the instruction is carried out completely and exactly."
    ),
    "subject_consistency": (
        "Task: rate SUBJECT CONSISTENCY -- how faithfully the subjects of the input image(s) (people, animals, "
        "characters, objects) appear in the produced image: identity, face, body shape, colours, materials, "
        "textures, clothing, logos and other distinctive details. Changes the instruction asks for (pose, "
        "scene, expression, viewpoint) are not errors; missing, merged or replaced subjects are.\n"
        "0-2: no subject of the inputs is recognisable; 3-4: a vaguely similar subject with major differences; "
        "5-6: recognisably the same subject with clear differences in identifying details; 7-8: the same "
        "subject with minor differences; 9-10: the same subject(s) in every identifying detail."
    ),
}
CALLS = ("prompt_following", "subject_consistency")
FIELDS = (
    MetricField("overall", description="judge (OmniContext): sqrt(prompt following x subject consistency), 0-10"),
    MetricField("prompt_following", description="judge (OmniContext): prompt following, 0-10"),
    MetricField("subject_consistency", description="judge (OmniContext): subject consistency, 0-10"),
    MetricField("parsed", description="samples whose two judge answers both parsed (rate)"),
)


def instructions(call: str, prompt: str, n_inputs: int) -> str:
    """The text of one call (``prompt_following`` or ``subject_consistency``)."""
    return _COMMON.format(n_inputs=n_inputs, prompt=prompt) + RUBRICS[call] + _ANSWER.format()


def protocol_version() -> str:
    """Short hash of the protocol's texts: changes whenever the judge is asked something else."""
    blob = _COMMON + _ANSWER + "".join(RUBRICS[c] for c in CALLS) + str(MAX_SIDE)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def build_content(call: str, prompt: str, n_inputs: int) -> list[dict[str, Any]]:
    """One user turn: the text first, then the input image slots, then the output's slot."""
    return [{"type": "text", "text": instructions(call, prompt, n_inputs)},
            *({"type": "image"} for _ in range(n_inputs)), {"type": "image"}]


def cap_side(image: Image.Image, max_side: int = MAX_SIDE) -> Image.Image:
    """``image`` as RGB with its longest side at most ``max_side`` (aspect kept; smaller images untouched)."""
    im = image.convert("RGB")
    if max(im.size) <= max_side:
        return im
    f = max_side / max(im.size)
    return im.resize((max(1, round(im.width * f)), max(1, round(im.height * f))), Image.LANCZOS)


def overall(pf: float, sc: float) -> float:
    """The sample's overall score: the geometric mean of prompt following and subject consistency."""
    return math.sqrt(pf * sc)


def judge(backend: Any, inputs: Sequence[Image.Image], output: Image.Image, prompt: str,
          seed: int | None = None) -> tuple[dict[str, float | None], dict[str, Any]]:
    """Both calls for one sample: ``({field: value}, details)``; details keep each call's raw answer and status."""
    images = [cap_side(im) for im in inputs] + [cap_side(output)]
    calls: dict[str, dict[str, Any]] = {}
    scores: dict[str, float] = {}
    for call in CALLS:
        answer = backend.ask(build_content(call, prompt, len(inputs)), images, seed)
        verdict = parse_answer(answer, (SCORE_KEY,))
        calls[call] = {"status": verdict.status, "answer": answer, **({"error": verdict.error} if verdict.error else {})}
        if verdict.status == "ok":
            scores[call] = verdict.scores[SCORE_KEY]
    failed = [c for c in CALLS if calls[c]["status"] != "ok"]
    values: dict[str, float | None] = {f.name: None for f in FIELDS}
    values["parsed"] = 0.0 if failed else 1.0
    if not failed:
        pf, sc = scores["prompt_following"], scores["subject_consistency"]
        values.update(overall=overall(pf, sc), prompt_following=pf, subject_consistency=sc)
    status = calls[failed[0]]["status"] if failed else "ok"
    detail: dict[str, Any] = {"status": status, "protocol": "omnicontext", "calls": calls}
    if failed:
        detail["error"] = "; ".join(f"{c}: {calls[c].get('error', calls[c]['status'])}" for c in failed)
    return values, detail


def settings() -> dict[str, Any]:
    """What config.json records about the protocol."""
    return {"protocol": "omnicontext", "protocol_version": protocol_version(), "rubrics": dict(RUBRICS),
            "instructions": _COMMON + "<rubric>" + _ANSWER.format(), "calls": list(CALLS),
            "input_max_side": MAX_SIDE, "overall": "sqrt(prompt_following * subject_consistency) per sample",
            "message_layout": ["<instructions with the prompt>", "<input images>", "<output image>"]}
