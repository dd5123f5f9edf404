"""``mrbench calibrate``: measure an encoder's thresholds on a labelled folder and write a calibration file.

The folder holds one sub-folder per label (an identity, a subject or a style). Each encoder embeds every image (face
encoders: the largest face; images without one are counted and left out), and every pair of images is scored:

* **labels** (``identity`` for face encoders, ``subject`` or ``style`` for image encoders): a pair of one label
  should be "same", any other pair "different";
* **near-duplicates** (image encoders, with ``--pairs FILE`` and/or ``--plant N``): the listed pairs (and the
  planted ones: crop, mirror, JPEG, resize of N seeded originals) should be "same", every other pair "different".

For each threshold the pair precision, recall, F1 and false-match rate are measured, and the criterion
(``max_f1``, or ``precision>=P``: best recall with precision at least P) picks the operating point. The result is
``OUT/calibration.yaml`` (point a curation config at it: ``calibration: OUT/calibration.yaml``) and
``OUT/calibration.html`` (the distributions, the curves, the hardest pairs).
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from mrbench.config import InputError
from mrbench.curation.calibration import (
    Curve, PairScores, Recommendation, at_threshold, label_pair_scores, near_duplicate_pair_scores,
    parse_criterion, plant_near_duplicates, recommend, threshold_curve,
)
from mrbench.pages import Raw, esc, figure, new_figure, page, plot_uri, table, thumb_uri
from mrbench.shards import atomic_write_text
from mrbench.thresholds import APPLIED_TASKS, OperatingPoint, calibration_document, resolve

LABEL_KINDS = ("auto", "identity", "subject", "style", "none")  # none: the sub-folders are no labels


@dataclass
class TaskResult:
    """One encoder's measurement on one task."""

    encoder: str
    task: str
    info: dict[str, Any]
    scores: PairScores
    curve: Curve
    recommendation: Recommendation
    data: str
    default: OperatingPoint | None  # what the encoder uses without this calibration (None: no step uses the task)


def read_labelled_folder(root: Path, min_labels: int = 2) -> tuple[list[Path], list[str]]:
    """Image files of ``root/<label>/...`` (recursive) and their labels; InputError with fewer than ``min_labels``."""
    from mrbench.backends.files import find_images

    if not root.is_dir():
        raise InputError(f"{root}: no such folder")
    files, labels = [], []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found = find_images([sub])
        files += found
        labels += [sub.name] * len(found)
    if len(set(labels)) < min_labels or not files:
        raise InputError(f"{root}: needs at least {min_labels} sub-folder(s) of images "
                         "(one per identity, subject or style); "
                         f"found {len(set(labels))}")
    return files, labels


def read_pairs(path: Path, root: Path, files: Sequence[Path]) -> set[tuple[int, int]]:
    """Near-duplicate pairs listed in ``path`` (two paths per line, relative to ``root``, comma, tab or space
    separated; ``#`` comments): index pairs into ``files``. An unknown path is an InputError naming the line."""
    where = {f.resolve(): k for k, f in enumerate(files)}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"--pairs {path}: cannot read ({e})") from None
    pairs: set[tuple[int, int]] = set()
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        cells = next(csv.reader(io.StringIO(line), delimiter="\t" if "\t" in line else ("," if "," in line else " ")))
        cells = [c.strip() for c in cells if c.strip()]
        if len(cells) != 2:
            raise InputError(f"{path}:{n}: expected two image paths, got {len(cells)} fields")
        idx = []
        for c in cells:
            k = where.get((root / c).resolve())
            if k is None:
                raise InputError(f"{path}:{n}: {c} is not an image under {root}")
            idx.append(k)
        if idx[0] != idx[1]:
            pairs.add((min(idx), max(idx)))
    return pairs


def _task(encoder: Any, kind: str) -> str:
    from mrbench.backends import FaceEncoder

    if isinstance(encoder, FaceEncoder):
        if kind not in ("auto", "identity"):  # "none" too: a face encoder has no near-duplicate task
            raise InputError(f"--labels {kind}: a face encoder measures identities (--labels identity)")
        return "identity"
    if kind == "identity":
        raise InputError("--labels identity needs a face encoder (mrbench ls encoders: kind face)")
    return "subject" if kind == "auto" else kind  # "none": near-duplicates only


def calibrate(
    folder: str | Path,
    encoders: Sequence[str],
    out: str | Path,
    *,
    pairs: str | Path | None = None,
    plant: int = 0,
    seed: int = 0,
    criterion: str = "max_f1",
    labels: str = "auto",
    encoder_options: dict[str, dict[str, Any]] | None = None,
    progress: Callable[[str, int], Callable[[int], None]] | None = None,
) -> list[TaskResult]:
    """Measure every encoder on ``folder`` and write ``OUT/calibration.yaml`` and ``OUT/calibration.html``.

    Args:
        folder: One sub-folder of images per label.
        encoders: Encoder names (``mrbench ls encoders``), built with the curation defaults.
        out: Output folder (created).
        pairs: A file of near-duplicate pairs (see :func:`read_pairs`).
        plant: Also plant near-duplicates of this many seeded originals (image encoders).
        seed: Seeds the planted near-duplicates.
        criterion: ``max_f1`` or ``precision>=P``.
        labels: ``auto`` (identity for face encoders, subject otherwise), ``subject`` or ``style``.
        encoder_options: Options per encoder name.
        progress: ``progress(label, total) -> advance(n)``, for a progress bar.

    Returns:
        One :class:`TaskResult` per encoder and task.

    Raises:
        InputError: A missing folder, too few labels, a bad pairs file, a bad criterion.
    """
    from mrbench.curation.embed import build_encoder, embed_files

    root, out = Path(folder), Path(out)
    if labels not in LABEL_KINDS:
        raise InputError(f"--labels must be one of {', '.join(LABEL_KINDS)}, got {labels!r}")
    try:
        parse_criterion(criterion)
    except ValueError as e:
        raise InputError(str(e)) from None
    if plant < 0:
        raise InputError(f"--plant must be >= 0, got {plant}")
    files, labs = read_labelled_folder(root, 1 if labels == "none" else 2)
    if labels == "none" and not (pairs or plant):
        raise InputError("--labels none measures near-duplicates only: give --pairs FILE or --plant N")
    listed = read_pairs(Path(pairs), root, files) if pairs else set()
    if plant > len(files):
        raise InputError(f"--plant {plant}: the folder has only {len(files)} images")
    names = [str(f.relative_to(root)) for f in files]
    results: list[TaskResult] = []
    thumbs: dict[str, Any] = dict(zip(names, files))
    for name in encoders:
        enc = build_encoder(name, (encoder_options or {}).get(name))
        task = _task(enc, labels)
        got = embed_files(enc, files, progress=progress(f"{name} embed", len(files)) if progress else None)
        ok = got.ok_index
        skipped = Counter(s for s in got.status if s != "ok")
        ok_names = [names[k] for k in ok]
        ok_labels = [labs[k] for k in ok]
        if task != "none" and len(set(ok_labels)) < 2:
            raise InputError(f"{name}: fewer than two labels left after embedding ({dict(skipped)} skipped)")
        info = enc.info.to_dict()
        skipped_text = (", skipped " + ", ".join(f"{n} {s}" for s, n in sorted(skipped.items()))) if skipped else ""
        if task != "none":
            scores = label_pair_scores(got.vectors, ok_labels, ok_names)
            data = (f"{root.name} ({len(ok)} images, {len(set(ok_labels))} labels, {scores.same.size} same / "
                    f"{scores.different.size} different pairs{skipped_text})")
            results.append(_result(name, task, info, scores, data, criterion))
        if task == "identity" or not (listed or plant):
            continue
        vectors, pair_set, nd_names = got.vectors, {p for p in _reindex(listed, ok)}, list(ok_names)
        if plant:
            ok_files = [files[k] for k in ok]
            variants, owner, edits = plant_near_duplicates(ok_files, plant, seed)
            vectors = np.concatenate([vectors, enc.embed_images(variants)])
            for v, (o, edit) in enumerate(zip(owner, edits)):
                vname = f"{ok_names[o]} [{edit}]"
                nd_names.append(vname)
                thumbs[vname] = variants[v]
                pair_set.add((o, len(ok) + v))
            pair_set |= _sibling_pairs(owner, len(ok))
        nd = near_duplicate_pair_scores(vectors, pair_set, nd_names)
        nd_data = (f"{root.name} ({len(ok)} images{f' + {plant * 4} planted near-duplicates of {plant}' if plant else ''}; "
                   f"{nd.same.size} near-duplicate / {nd.different.size} other pairs)")
        results.append(_result(name, "near_duplicate", info, nd, nd_data, criterion))
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "calibration.yaml", calibration_document(
        {e: {r.task: _point(r) for r in results if r.encoder == e} for e in dict.fromkeys(r.encoder for r in results)},
        note=f"mrbench calibrate {root} ({', '.join(encoders)}); criterion {criterion}"))
    atomic_write_text(out / "calibration.html", calibration_page(results, root, thumbs))
    return results


def _reindex(pairs: set[tuple[int, int]], ok: np.ndarray) -> list[tuple[int, int]]:
    """File-index pairs -> embedded-row pairs (pairs with an image that was not embedded are left out)."""
    row = {int(k): r for r, k in enumerate(ok.tolist())}
    return [(row[a], row[b]) for a, b in pairs if a in row and b in row]


def _sibling_pairs(owner: Sequence[int], offset: int) -> set[tuple[int, int]]:
    """Two planted variants of one original are near-duplicates of each other too."""
    by: dict[int, list[int]] = {}
    for v, o in enumerate(owner):
        by.setdefault(o, []).append(offset + v)
    return {(a, b) for m in by.values() for x, a in enumerate(m) for b in m[x + 1:]}


def _result(name: str, task: str, info: dict[str, Any], scores: PairScores, data: str, criterion: str) -> TaskResult:
    if scores.same.size == 0:
        raise InputError(f"{name}: no {'same-label' if task != 'near_duplicate' else 'near-duplicate'} pairs to "
                         "calibrate on (each label needs at least two images)")
    curve = threshold_curve(scores)
    default = resolve(name, task) if task in APPLIED_TASKS else None
    return TaskResult(name, task, info, scores, curve, recommend(curve, criterion), data, default)


def _point(r: TaskResult) -> dict[str, Any]:
    rec = r.recommendation
    return {"threshold": rec.threshold, "criterion": rec.criterion, "precision": round(rec.precision, 4),
            "recall": round(rec.recall, 4), "f1": round(rec.f1, 4), "false_match_rate": round(rec.false_match_rate, 5),
            "same_pairs": int(r.scores.same.size), "different_pairs": int(r.scores.different.size), "data": r.data,
            "weights": r.info.get("weights", ""), "random_weights": bool(r.info.get("random_weights"))}


def _plots(r: TaskResult) -> list[str]:
    rec, c = r.recommendation, r.curve
    fig, ax = new_figure(5.6, 3.2)
    bins = np.linspace(c.thresholds[0], c.thresholds[-1], 60)
    ax.hist(r.scores.different, bins=bins, alpha=0.6, density=True, color="#c0392b",
            label=f"different ({r.scores.different.size})")
    ax.hist(r.scores.same, bins=bins, alpha=0.6, density=True, color="#27ae60", label=f"same ({r.scores.same.size})")
    ax.axvline(rec.threshold, color="k", lw=1.2, label=f"recommended {rec.threshold:.3f}")
    if r.default is not None:
        ax.axvline(r.default.threshold, color="#7f8c8d", lw=1, ls="--", label=f"default {r.default.threshold:.3f}")
    ax.set_xlabel("cosine similarity of a pair")
    ax.set_ylabel("density")
    ax.set_title(f"{r.encoder}: {r.task.replace('_', '-')} pairs")
    ax.legend(frameon=False, fontsize=8)
    hist = plot_uri(fig)
    fig, ax = new_figure(5.6, 3.2)
    ax.plot(c.thresholds, c.precision, label="precision")
    ax.plot(c.thresholds, c.recall, label="recall")
    ax.plot(c.thresholds, c.f1, label="F1", lw=1)
    ax.axvline(rec.threshold, color="k", lw=1.2)
    if r.default is not None:
        ax.axvline(r.default.threshold, color="#7f8c8d", lw=1, ls="--")
    ax.plot([rec.threshold], [rec.precision], "ko", ms=4)
    ax.set_ylim(-0.02, 1.05)
    ax.set_xlabel("threshold (pair counts as same at or above)")
    ax.set_title(f"precision / recall along the threshold ({rec.criterion})")
    ax.legend(frameon=False, fontsize=8, loc="lower left")
    return [hist, plot_uri(fig)]


def _thumb(src: Any, size: int = 96) -> str | None:
    try:
        return thumb_uri(src if isinstance(src, Image.Image) else Path(src).read_bytes(), size)
    except (OSError, ValueError, SyntaxError):  # an image that decoded for the encoder but not here: no thumbnail
        return None


def _default(r: TaskResult) -> str:
    if r.default is None:
        return "- (no step uses it)"
    return f"{r.default.threshold:.3f}" + ("" if r.default.calibrated else " (uncalibrated)")


def calibration_page(results: Sequence[TaskResult], root: Path, thumbs: dict[str, Any]) -> str:
    """The self-contained HTML page of a calibration: per encoder and task, the two distributions, the curves, the
    recommended and the default threshold, and the hardest pairs with thumbnails."""
    body = ["<p class='note'>A pair at or above the threshold counts as the same (person, subject, style, or a "
            "near-duplicate). Precision: same pairs among those at or above it; recall: same pairs at or above it "
            "among all same pairs; false-match rate: different pairs at or above it among all different pairs. "
            "The dashed line is the threshold the encoder uses without this calibration.</p>",
            table(["encoder", "task", "recommended", "criterion", "precision", "recall", "F1", "false-match rate",
                   "default", "default P / R"],
                  [(r.encoder + (" [random weights]" if r.info.get("random_weights") else ""), r.task,
                    f"{r.recommendation.threshold:.3f}", r.recommendation.criterion,
                    f"{r.recommendation.precision:.3f}", f"{r.recommendation.recall:.3f}", f"{r.recommendation.f1:.3f}",
                    f"{r.recommendation.false_match_rate:.4f}",
                    _default(r), "-" if r.default is None else
                    "{:.3f} / {:.3f}".format(*at_threshold(r.curve, r.default.threshold))) for r in results],
                  numeric=(2, 4, 5, 6, 7, 8))]
    for r in results:
        body.append(f"<h2>{esc(r.encoder)}: {r.task.replace('_', '-')}</h2><p class='note'>{esc(r.data)}. Weights: "
                    f"{esc(str(r.info.get('weights', '')))}"
                    f"{' <b>[random weights]</b>' if r.info.get('random_weights') else ''}</p>")
        body.append("<div class='plots'>" + "".join(f"<img src='{u}' alt='curve'> " for u in _plots(r)) + "</div>")
        rows = []
        for a, b, s, same in r.scores.hardest:
            rows.append((Raw(figure(_thumb(thumbs.get(a)), a, size=96)), Raw(figure(_thumb(thumbs.get(b)), b, size=96)),
                         f"{s:.4f}", "same, least similar" if same else "different, most similar"))
        body.append("<h3>Hardest pairs</h3>" + table(["image", "image", "cosine", "pair"], rows, numeric=(2,)))
    return page(f"Threshold calibration: {root.name}", body, subtitle=f"folder {esc(str(root))}")
