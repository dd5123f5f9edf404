"""The ``mrbench`` command line: a thin typer layer over the library."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable, List, Optional

import typer

from mrbench.config import ConfigError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="MRBench: curate multi-reference datasets and evaluate generators.")
release_app = typer.Typer(no_args_is_help=True, help="Check and use dataset releases.")
app.add_typer(release_app, name="release")


def _fail(message: str, code: int = 2) -> None:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(code)


def _progress_factory() -> tuple[object, Callable[[str, int], Callable[[int], None]]]:
    """A rich progress display (rate and ETA) and a factory of per-step advance callbacks."""
    from rich.progress import (
        BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
    )

    progress = Progress(
        TextColumn("{task.description:<10}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(
            show_speed=True), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
    )

    def factory(name: str, total: int) -> Callable[[int], None]:
        task = progress.add_task(name, total=total)
        return lambda n: progress.advance(task, n)

    return progress, factory


@app.command()
def curate(
    config: Path = typer.Option(..., "--config", "-c", help="curation config YAML"),
    out: Path = typer.Option(..., "--out", "-o", help="run folder (created; an existing one is resumed)"),
    executor: str = typer.Option("local", "--executor", help="local or ray"),
    workers: Optional[int] = typer.Option(None, "--workers", help="parallel shard workers"),
    set_: List[str] = typer.Option([], "--set", help="override a config key: --set crawl.timeout=5"),
) -> None:
    """Run (or resume) the curation pipeline: tag crawl, download, group, split, release."""
    from mrbench.config import CurateConfig, load_config
    from mrbench.curation.pipeline import run_curation
    from mrbench.log import setup_logging

    setup_logging("WARNING")
    overrides = [f"executor.name={executor}", *([f"executor.workers={workers}"] if workers else []), *set_]
    try:
        cfg = load_config(CurateConfig, config, overrides)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        _fail(str(e))
    progress, factory = _progress_factory()
    try:
        with progress:  # type: ignore[attr-defined]
            summary = run_curation(cfg, out, factory)
    except (ConfigError, FileNotFoundError) as e:
        _fail(str(e))
    print_summary(summary)


def print_summary(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    t = Table(title="rows per status")
    t.add_column("status")
    t.add_column("rows", justify="right")
    for k, v in summary["rows_per_status"].items():
        t.add_row(k, str(v))
    console.print(t)
    g = Table(title="splits")
    for c in ("split", "groups", "images"):
        g.add_column(c)
    for s in ("held_out", "held_in", "train"):
        g.add_row(s, str(summary["groups_per_split"].get(s, 0)), str(summary["images_per_split"].get(s, 0)))
    console.print(g)
    console.print(f"release: {summary['release']} ({summary['release_rows']} images)")


@release_app.command("verify")
def release_verify(release_dir: Path = typer.Argument(..., help="a release folder (with manifest.json)")) -> None:
    """Check every shard against the manifest; exits 1 naming any missing, extra or altered file."""
    from mrbench.curation.release import verify_release

    problems = verify_release(release_dir)
    for p in problems:
        typer.echo(f"FAIL {p}", err=True)
    if problems:
        raise typer.Exit(1)
    typer.echo(f"ok: {release_dir} matches its manifest")


@release_app.command("extract-images")
def release_extract(
    release_dir: Path = typer.Argument(...),
    out: Path = typer.Option(None, "--out", help="folder for images/<id>.<ext> (default: RELEASE/easyref)"),
) -> None:
    """Write the images of a release as files, at the paths the EasyRef JSON uses."""
    import pyarrow.parquet as pq

    target = (out or release_dir / "easyref") / "images"
    target.mkdir(parents=True, exist_ok=True)
    n = 0
    for f in sorted((release_dir / "data").glob("*.parquet")):
        for batch in pq.ParquetFile(f).iter_batches(columns=["id", "format", "image"], batch_size=256):
            for rid, fmt, data in zip(*(batch.column(c).to_pylist() for c in ("id", "format", "image"))):
                (target / f"{rid}.{fmt or 'jpg'}").write_bytes(data)
                n += 1
    typer.echo(f"wrote {n} images to {target}")


LS_KINDS = {
    "stages": ("mrbench.curation", "mrbench.stage:STAGES"),
    "executors": ("mrbench.executors", "mrbench.executors:EXECUTORS"),
    "encoders": ("mrbench.backends", "mrbench.backends:ENCODERS"),
    "detectors": ("mrbench.backends", "mrbench.backends:DETECTORS"),
    "models": ("mrbench.baselines", "mrbench.evaluation.registry:MODELS"),
    "metrics": ("mrbench.evaluation.metrics", "mrbench.evaluation.registry:METRICS"),
    "benchmarks": ("mrbench.evaluation.benchmarks", "mrbench.evaluation.registry:BENCHMARKS"),
}


@app.command("ls")
def ls(kind: str = typer.Argument(..., help="stages, executors, encoders, detectors, models, metrics, benchmarks")) -> None:
    """List the registered components of one kind, one line each."""
    import importlib

    if kind not in LS_KINDS:
        _fail(f"unknown kind {kind!r}; choose from {', '.join(LS_KINDS)}")
    module, attr = LS_KINDS[kind]
    try:
        importlib.import_module(module)
        mod_name, _, reg_name = attr.partition(":")
        registry = getattr(importlib.import_module(mod_name), reg_name)
    except ImportError as e:
        _fail(f"{kind} are not available: {e}")
    width = max((len(e.name) for e in registry), default=0)
    for entry in registry:
        typer.echo(f"{entry.name:<{width}}  {entry.help}")


@app.command()
def demo(
    out: Path = typer.Option(Path("demo_run"), "--out", "-o", help="run folder for the demo"),
    fresh: bool = typer.Option(False, "--fresh", help="delete the run folder first"),
) -> None:
    """Offline demo: build a small sample web, serve it on 127.0.0.1, curate it, summarise."""
    from mrbench.demo import run_demo

    run_demo(out, fresh=fresh)


def _backend_kwargs(args: List[str], device: Optional[str], batch_size: Optional[int]) -> dict:
    """``key=value`` backend options (values parsed as YAML scalars: 0.5, true, [640, 640]) + common flags."""
    import yaml

    kwargs: dict = {}
    for a in args:
        key, sep, value = a.partition("=")
        if not sep or not key:
            _fail(f"backend option {a!r} is not key=value")
        kwargs[key.strip()] = yaml.safe_load(value)
    if device:
        kwargs["device"] = device
    if batch_size:
        kwargs["batch_size"] = batch_size
    return kwargs


def _build_backend(kind: str, name: str, kwargs: dict) -> object:
    """Build a backend or exit with a clear message (unknown name, bad option, missing weights or dependency)."""
    from mrbench.backends import DETECTORS, ENCODERS, MissingWeightsError
    from mrbench.registry import UnknownEntryError

    registry = ENCODERS if kind == "encoder" else DETECTORS
    try:
        return registry.get(name)(**kwargs)
    except UnknownEntryError as e:
        _fail(str(e))
    except MissingWeightsError as e:
        _fail(str(e), code=3)
    except ImportError as e:
        _fail(f"{kind} {name!r} is not available: {e}", code=3)
    except (TypeError, ValueError) as e:
        _fail(f"bad options for {kind} {name!r}: {e}")
    raise AssertionError("unreachable")


def _run_over_paths(kind: str, name: str, paths: List[Path], out: Path, kwargs: dict) -> None:
    from mrbench.backends.files import detect_to_parquet, embed_to_parquet, find_images

    backend = _build_backend(kind, name, kwargs)
    total = len(find_images(paths))
    progress, factory = _progress_factory()
    run = embed_to_parquet if kind == "encoder" else detect_to_parquet
    with progress:  # type: ignore[attr-defined]
        counts = run(backend, name, paths, out, progress=factory(name, total))  # type: ignore[arg-type]
    info = backend.info  # type: ignore[attr-defined]
    flag = " [RANDOM WEIGHTS]" if info.random_weights else ""
    typer.echo(f"wrote {sum(counts.values())} rows to {out} ({', '.join(f'{k}: {v}' for k, v in sorted(counts.items()))})"
               f"; {kind} {name}: {info.weights}{flag}")


@app.command()
def embed(
    paths: List[Path] = typer.Argument(..., help="image files or folders (recursive)"),
    encoder: str = typer.Option(..., "--encoder", "-e", help="encoder name (mrbench ls encoders)"),
    out: Path = typer.Option(..., "--out", "-o", help="output parquet file"),
    arg: List[str] = typer.Option([], "--encoder-arg", "-a", help="encoder option key=value, e.g. pretrained=openai"),
    device: Optional[str] = typer.Option(None, "--device", help="cuda, cpu, ... (default: CUDA when present)"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="images per forward pass"),
) -> None:
    """Embed images: one row per image (path, encoder, embedding, status, error_message; faces: num_faces, face_box, face_score)."""
    _run_over_paths("encoder", encoder, paths, out, _backend_kwargs(arg, device, batch_size))


@app.command()
def detect(
    paths: List[Path] = typer.Argument(..., help="image files or folders (recursive)"),
    detector: str = typer.Option(..., "--detector", "-d", help="detector name (mrbench ls detectors)"),
    out: Path = typer.Option(..., "--out", "-o", help="output parquet file"),
    arg: List[str] = typer.Option([], "--detector-arg", "-a", help="detector option key=value, e.g. threshold=0.5"),
    device: Optional[str] = typer.Option(None, "--device", help="cuda, cpu, ... (default: CUDA when present)"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="images per forward pass"),
) -> None:
    """Detect objects: one row per image (path, detector, boxes, scores, labels, status, error_message)."""
    _run_over_paths("detector", detector, paths, out, _backend_kwargs(arg, device, batch_size))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
