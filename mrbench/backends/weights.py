"""Where pretrained weights come from, and the error that says how to supply them when they are absent.

Resolution order, the same for every backend:

1. an explicit path given to the backend (``checkpoint=...``, ``model=/local/dir``, ``root=...``);
2. the mirror folder named by ``$MRBENCH_WEIGHTS_DIR`` (config level: one folder a run config can point at), laid
   out like the upstream names: ``$MRBENCH_WEIGHTS_DIR/facebook/dinov2-small/``,
   ``$MRBENCH_WEIGHTS_DIR/insightface/models/antelopev2/``, ``$MRBENCH_WEIGHTS_DIR/torch/hub/checkpoints/...``,
   ``$MRBENCH_WEIGHTS_DIR/open_clip/ViT-L-14/openai/open_clip_model.safetensors``;
3. the standard caches: Hugging Face hub cache (``$HF_HOME`` / ``$HF_HUB_CACHE``), torch hub
   (``$TORCH_HOME/hub/checkpoints``), open_clip's URL cache (``~/.cache/clip``), insightface
   (``~/.insightface/models``).

Nothing is ever downloaded: the command line switches the Hugging Face libraries to offline mode
(:func:`offline_environment`, unless the caller set those variables), every ``from_pretrained`` call passes
``local_files_only=True``, and a
backend whose weights are not found raises :class:`MissingWeightsError` before doing any work.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Sequence

from mrbench.backends.base import MissingWeightsError


def offline_environment() -> None:
    """Switch the Hugging Face libraries (and albumentations' update check) to offline mode for this process and the
    workers it starts, unless the caller set those variables. Called by the command-line entry point before any
    backend is imported (the libraries read them at import time); importing MRBench changes no environment, and every
    load passes ``local_files_only=True`` either way."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY",
                "NO_ALBUMENTATIONS_UPDATE"):
        os.environ.setdefault(var, "1")


WEIGHTS_DIR_ENV = "MRBENCH_WEIGHTS_DIR"

__all__ = [
    "MissingWeightsError", "WEIGHTS_DIR_ENV", "offline_environment", "mirror_dir", "missing_weights", "hf_hub_cache", "hf_cached_file",
    "resolve_hf_model_dir", "hf_model_how", "load_hf_pretrained", "torch_hub_checkpoints_dir", "insightface_root",
    "first_existing", "merge_missing", "weight_checks",
]


def mirror_dir() -> Path | None:
    """The ``$MRBENCH_WEIGHTS_DIR`` mirror folder, when set."""
    value = os.environ.get(WEIGHTS_DIR_ENV)
    return Path(value).expanduser() if value else None


def missing_weights(what: str, looked: Iterable[str | Path], how: str) -> MissingWeightsError:
    """Build the error raised when weights are absent.

    Args:
        what: The weights, named as upstream names them (``facebook/dinov2-small``, ``ViT-L-14/openai``).
        looked: Every place that was searched, in order.
        how: One or two sentences on how to supply them (a path argument, a cache to fill on a connected machine).
    """
    places = "\n".join(f"  - {p}" for p in looked) or "  (nowhere)"
    error = MissingWeightsError(
        f"weights for {what} are not available offline (nothing is downloaded at run time).\nSearched:\n{places}\n"
        f"To supply them: {how}"
    )
    error.what = what
    return error


def merge_missing(errors: Sequence[MissingWeightsError]) -> MissingWeightsError:
    """One error listing every missing weight of a command (so one round of fetching fixes them all)."""
    errors = list({str(e): e for e in errors}.values())  # two metrics on one encoder: its weights once
    if len(errors) == 1:
        return errors[0]
    body = "\n\n".join(f"{k}. {e}" for k, e in enumerate(errors, 1))
    return MissingWeightsError(f"{len(errors)} weights are missing; all of them:\n\n{body}\n\n"
                               f"Any of them can also be put under ${WEIGHTS_DIR_ENV} (see mrbench.backends.weights).")


def weight_checks(obj: Any) -> list[MissingWeightsError]:
    """Run ``obj.check_weights()`` and return every missing weight it found: the ones it collected in
    ``obj.missing`` (checks that go on after a miss) plus the one it raised, if any."""
    try:
        obj.check_weights()
    except MissingWeightsError as e:
        return [*getattr(obj, "missing", []), e]
    return list(getattr(obj, "missing", []))


def first_existing(paths: Iterable[Path]) -> Path | None:
    """The first of ``paths`` that exists, or None."""
    for p in paths:
        if p.exists():
            return p
    return None


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache folder (honours ``HF_HUB_CACHE`` and ``HF_HOME``)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = Path(os.environ.get("HF_HOME", Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "huggingface"))
    return home.expanduser() / "hub"


def hf_cached_file(repo_id: str, filenames: Sequence[str]) -> Path | None:
    """The first of ``filenames`` present in the local HF cache snapshot of ``repo_id`` (no network)."""
    from huggingface_hub import try_to_load_from_cache

    for name in filenames:
        got = try_to_load_from_cache(repo_id, name, cache_dir=str(hf_hub_cache()))
        if isinstance(got, str) and Path(got).is_file():
            return Path(got)
    return None


_HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")


def resolve_hf_model_dir(model: str, *, what: str, how: str) -> Path:
    """A local folder holding a transformers checkpoint (``config.json`` + weights) for ``model``.

    ``model`` is a local folder or a hub id; hub ids are looked up in the mirror folder, then in the HF cache.

    Raises:
        MissingWeightsError: when neither holds a config and a weights file.
    """
    looked: list[str] = []
    candidates: list[Path] = []
    p = Path(model).expanduser()
    if p.is_dir() or model.startswith((".", "/", "~")):
        candidates.append(p)
    else:
        mirror = mirror_dir()
        if mirror is not None:
            candidates.append(mirror / model)
        snapshot = _hf_snapshot_dir(model)
        if snapshot is not None:
            candidates.append(snapshot)
        else:
            looked.append(f"Hugging Face cache {hf_hub_cache()}/models--{model.replace('/', '--')}")
    for c in candidates:
        if (c / "config.json").is_file() and any((c / f).is_file() for f in _HF_WEIGHT_FILES):
            return c
        looked.append(f"{c} (needs config.json and model.safetensors or pytorch_model.bin)")
    raise missing_weights(what, looked, how)


def hf_model_how(model: str, folder_holds: str) -> str:
    """How to supply the transformers checkpoint ``model``: the three places :func:`resolve_hf_model_dir` searches.

    Args:
        model: Hub id (or local folder) as given to the backend.
        folder_holds: What a local folder must hold (``a saved CLIPModel + CLIPProcessor``).
    """
    return (f"pass model=/local/folder ({folder_holds}), or on a connected machine run `hf download {model}` and copy "
            f"the Hugging Face cache ({hf_hub_cache()}) here, or place the folder at ${WEIGHTS_DIR_ENV}/{model}.")


def load_hf_pretrained(model_cls: Any, path: Path, **kwargs: Any) -> Any:
    """``model_cls.from_pretrained`` from the local folder ``path`` only, safetensors whenever the folder has them."""
    use_safetensors = any(path.glob("*.safetensors")) or None  # None: transformers' own choice (.bin, weights_only)
    return model_cls.from_pretrained(path, local_files_only=True, use_safetensors=use_safetensors, **kwargs)


def _hf_snapshot_dir(repo_id: str) -> Path | None:
    config = hf_cached_file(repo_id, ["config.json"])
    return config.parent if config is not None else None


def torch_hub_checkpoints_dir() -> Path:
    """``$TORCH_HOME/hub/checkpoints`` (torch's own rule; default ``~/.cache/torch``)."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def insightface_root(root: str | Path | None) -> list[Path]:
    """Candidate ``models`` folders for insightface packs: the explicit root only when given (never a silent fallback
    to other weights), else the mirror and ``~/.insightface``."""
    if root is not None:
        r = Path(root).expanduser()
        return [r / "models", r]
    out: list[Path] = []
    mirror = mirror_dir()
    if mirror is not None:
        out.append(mirror / "insightface" / "models")
    out.append(Path("~/.insightface/models").expanduser())
    return out
