"""The ``mrbench`` command line: a thin typer layer over the library."""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any, Callable, List, NoReturn, Optional

import typer
from typer.core import TyperGroup

from mrbench.config import ConfigError


class ReadableHelpGroup(TyperGroup):
    """Typer's command group, with plain metavars in every command's help: PATH, TEXT, INTEGER, NUMBER, KEY=VALUE
    and nothing after a flag, where typer prints its type tags (``<list[str]>``, ``<bool>``).

    Typer's public API has only ``metavar=`` per parameter, which on an argument also renames it in the usage line;
    so the commands are adjusted here, once, as the group hands them out. The only place that touches typer's
    parameter objects.
    """

    METAVARS = {"path": "PATH", "str": "TEXT", "int": "INTEGER", "float": "NUMBER"}
    OPTION_METAVARS = {"--set": "KEY=VALUE", "--model-args": "K=V[,K=V]", "--encoder-args": "K=V[,K=V]",
                       "--detector-args": "K=V[,K=V]"}  # options that take key=value pairs say so

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.readable(self)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        cmd = super().get_command(ctx, cmd_name)
        return self.readable(cmd) if cmd is not None else None

    @classmethod
    def readable(cls, cmd: Any) -> Any:
        """Give every parameter of ``cmd`` a plain metavar (PATH, TEXT, INTEGER, KEY=VALUE; nothing for flags)."""
        if getattr(cmd, "_mrbench_help", False):
            return cmd
        for p in getattr(cmd, "params", []):
            if p.metavar is not None:
                continue
            if getattr(p, "is_flag", False) or getattr(p, "count", False):
                p.metavar = ""
                continue
            name = next((o for o in p.opts if o in cls.OPTION_METAVARS), None)
            if name:
                p.metavar = cls.OPTION_METAVARS[name]
                continue
            try:
                label = p.display_type(None).strip("<>")
            except Exception:  # noqa: BLE001 - a parameter typer cannot describe keeps typer's own text
                continue
            inner = label[5:-1] if label.startswith("list[") else label
            readable = cls.METAVARS.get(inner.lower())
            if readable is None:
                continue
            if isinstance(p, typer.core.TyperArgument):  # the name column already names it: only the type column
                p.display_type_rich = lambda ctx=None, t=readable: t
            else:
                p.metavar = readable
        get_help = cmd.get_help_option

        def get_help_option(ctx: Any) -> Any:
            opt = get_help(ctx)
            if opt is not None:
                opt.metavar = ""
            return opt

        cmd.get_help_option = get_help_option
        cmd._mrbench_help = True
        return cmd


EXIT_CODES = ("Exit status: 0 done; 1 a release failed its checks (release verify / extract-images); 2 a mistake in "
              "the command, its config or its folders (one error: line); 3 model weights or a model dependency "
              "missing (the error names each, with how to supply it); 4 the run finished with nothing to release "
              "(0 images: the message says what happened and which setting to change); 130 interrupted (Ctrl-C).")
app = typer.Typer(add_completion=False, no_args_is_help=True, help="MRBench: curate multi-reference datasets and evaluate generators.",
                  epilog=EXIT_CODES, cls=ReadableHelpGroup)
release_app = typer.Typer(no_args_is_help=True, help="Check and use dataset releases.", cls=ReadableHelpGroup)
app.add_typer(release_app, name="release")

# Set by the root options (-v / -q); commands read it when they set up logging and progress bars.
_LOG = {"level": "WARNING"}
# What Ctrl-C prints; commands that resume set their own line.
_INTERRUPT = {"hint": "rerun the command to start again (nothing is left half-written)"}
RESUME_HINT = "rerun the same command to resume where it stopped (finished work is kept)"


def _version(value: bool) -> None:
    if value:
        from mrbench import __version__

        typer.echo(f"mrbench {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="print the version and exit"),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, show_default=False, help="more log output: -v info, -vv debug"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="errors only, no progress bars"),
) -> None:
    from mrbench.log import setup_logging

    _LOG["level"] = "ERROR" if quiet else ("DEBUG" if verbose >= 2 else "INFO" if verbose == 1 else "WARNING")
    setup_logging(_LOG["level"])


def _fail(message: str, code: int = 2) -> NoReturn:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(code)


def _progress_factory() -> tuple[object, Callable[[str, int], Callable[[int], None]]]:
    """The shared progress display (:func:`mrbench.console.progress_display`), off under ``-q``; a command that
    fails leaves no half-drawn bar (``loading 0/?``) above its error line."""
    from mrbench.console import bars_cleared_on_error, progress_display

    progress, factory = progress_display(disable=_LOG["level"] == "ERROR")
    return bars_cleared_on_error(progress), factory


@app.command()
def curate(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="curation config YAML (required unless --retry-failed)"),
    out_arg: Optional[str] = typer.Option(None, "--out", "-o", help="run folder (created; an existing one is resumed), or an object-store URL (s3://bucket/run, gs://...; credentials and endpoint from AWS_* / GOOGLE_* variables)"),
    executor: Optional[str] = typer.Option(None, "--executor", help="a registered executor (mrbench ls executors); default: the config's executor.name"),
    workers: Optional[int] = typer.Option(None, "--workers", help="parallel shard workers"),
    set_: List[str] = typer.Option([], "--set", help="override a config key: --set crawl.timeout=5"),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="ray.init address (--executor ray; default: start a local cluster)"),
    retry_failed: Optional[Path] = typer.Option(None, "--retry-failed", help="a run folder: download again only the rows whose failure is retryable (timeout, connection error, 429, 5xx), then redo the steps after download; its config.yaml is used unless --config is given"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print which steps would run, be redone (naming the changed settings) or be kept, and stop"),
) -> None:
    """Run (or resume) the curation pipeline: tag crawl, download, group, split, release."""
    from mrbench.config import load_config
    from mrbench.curation.config import CurateConfig
    from mrbench.app.summary import print_summary
    from mrbench.curation.pipeline import run_curation
    from mrbench.log import setup_logging

    from mrbench.backends.base import MissingWeightsError

    from mrbench import storage

    setup_logging(_LOG["level"])
    _INTERRUPT["hint"] = RESUME_HINT
    out: Any = out_arg if storage.is_url(out_arg) else (Path(out_arg) if out_arg is not None else None)
    if storage.is_url(out) and retry_failed is not None:
        _fail("--retry-failed works in a local run folder; resume an s3:// run by running the same command again")
    if retry_failed is not None:
        if out is not None and out.resolve() != retry_failed.resolve():
            _fail("--retry-failed RUN_DIR works in RUN_DIR; leave --out out or give the same folder")
        out = retry_failed
        if config is None:
            from mrbench.layout import RunLayout

            config = RunLayout(retry_failed).config
            if not config.is_file():
                _fail(f"{retry_failed} has no config.yaml: not a curation run folder")
    if config is None or out is None:
        _fail("--config and --out are required (or --retry-failed RUN_DIR)")
    # Only the flags given override the config (CLI > YAML > defaults).
    overrides = [*([f"executor.name={executor}"] if executor else []),
                 *([f"executor.workers={workers}"] if workers is not None else []),
                 *([f"executor.ray_address={ray_address}"] if ray_address else []), *set_]
    try:
        cfg = load_config(CurateConfig, config, overrides)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        _fail(str(e))
    if not storage.is_url(out) and out.exists() and not out.is_dir():
        _fail(f"--out {out} is a file, not a run folder")
    if dry_run:
        if retry_failed is not None:
            _fail("--dry-run shows what a plain run would do; leave --retry-failed out")
        from mrbench.curation.pipeline import plan_curation

        try:
            plans = plan_curation(cfg, out)
        except (ConfigError, FileNotFoundError) as e:
            _fail(str(e))
        width = max(len(p.step.name) for p in plans)
        for p in plans:
            typer.echo(f"{p.step.name:<{width}}  {p.describe()}")
        return
    progress, factory = _progress_factory()
    try:
        with progress:  # type: ignore[attr-defined]
            if retry_failed is not None:
                from mrbench.curation.retry import retry_failed as retry

                summary = retry(cfg, out, factory)
            else:
                summary = run_curation(cfg, out, factory)
    except (ConfigError, FileNotFoundError) as e:  # includes a locked run folder and unreadable sources
        _fail(str(e))
    except MissingWeightsError as e:
        _fail(str(e), code=3)
    except ImportError as e:
        _fail(f"a configured model is not available: {e}", code=3)
    except PermissionError as e:
        _fail(_os_error(e))
    print_summary(summary)
    if retry_failed is not None:
        typer.echo(f"retried {summary['retried_rows']} rows in download shards {summary['retried_shards']}")
    if summary.get("empty_outcome"):
        from mrbench.curation.outcome import EMPTY_OUTCOME_EXIT

        _fail(summary["empty_outcome"], code=EMPTY_OUTCOME_EXIT)


@app.command("report")
def report_cmd(
    run_dir: Path = typer.Argument(..., help="run folder of mrbench curate"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="HTML file (default: RUN_DIR/report.html)"),
) -> None:
    """Write a self-contained HTML page of a curation run: funnel, rejects per reason with thumbnails, groups,
    near-duplicate pairs removed, group-size and category histograms."""
    from mrbench.curation.report import ReportError, write_report

    try:
        path = write_report(run_dir, out)
    except ReportError as e:
        _fail(str(e))
    typer.echo(f"wrote {path}")


@release_app.command("verify")
def release_verify(
    release_arg: str = typer.Argument(..., help="a release folder (with manifest.json), or its object-store URL"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON on stdout"),
) -> None:
    """Check every file against the manifest (presence, size, sha256, rows, total rows; no extra, temporary or
    symlinked file); one line per problem, then a one-line summary. Exits 1 when anything is wrong."""
    import json

    from mrbench import storage
    from mrbench.curation.release_format import MANIFEST
    from mrbench.curation.release_verify import check_release
    from mrbench.layout import folder_hint

    if storage.is_url(release_arg):
        try:
            with storage.pulled(release_arg) as local:  # every object, temporary or not: verify judges them all
                report = check_release(local)
        except ConfigError as e:
            _fail(str(e))
        report.release = release_arg
    else:
        release_dir = Path(release_arg)
        if release_dir.is_dir() and not (release_dir / MANIFEST).exists() and folder_hint(release_dir):
            _fail(f"{folder_hint(release_dir)}: mrbench release verify takes a release folder (with {MANIFEST})")
        report = check_release(release_dir)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=1))
    else:
        for p in report.problems:
            typer.echo(f"FAIL {p}", err=True)
        typer.echo(report.summary(), err=not report.ok)
    if not report.ok:
        raise typer.Exit(1)


@release_app.command("extract-images")
def release_extract(
    release_dir: Path = typer.Argument(..., help="a release folder (verified first)"),
    out: Optional[Path] = typer.Option(None, "--out", help="folder for images/<id>.<ext> and the EasyRef JSON "
                                       "(default: RELEASE-easyref next to the release; never inside it)"),
) -> None:
    """Write the images of a verified release as files, at the paths the EasyRef JSON uses (OUT/images/<id>.<ext>),
    and copy the EasyRef JSON to OUT."""
    from mrbench.curation.release_extract import extract_images
    from mrbench.curation.release_format import ReleaseError, UnsafeOutputError

    try:
        target, n = extract_images(release_dir, out)
    except UnsafeOutputError as e:
        _fail(str(e))
    except ReleaseError as e:
        _fail(str(e), code=1)
    except OSError as e:
        _fail(_os_error(e))
    typer.echo(f"wrote {n} images to {target}")


@release_app.command("remove")
def release_remove(
    release_dir: Path = typer.Argument(..., help="a release folder (verified first; left untouched)"),
    out: Path = typer.Option(..., "--out", help="the new release folder (must not exist)"),
    ids: Optional[Path] = typer.Option(None, "--ids", help="file of release ids to remove, one a line"),
    urls: Optional[Path] = typer.Option(None, "--urls", help="file of URLs to remove (as the release's url column)"),
    sha256: Optional[Path] = typer.Option(None, "--sha256", help="file of image sha256 digests to remove"),
) -> None:
    """Takedown: write a new release without the listed images (groups left below the minimum size leave too);
    the manifest records the parent release and each list's sha256. Pass the same file to later curations as a
    block list (crawl.blocklists, kind id / url / sha256) to keep the images out."""
    from mrbench.config import ConfigError
    from mrbench.curation.release_format import ReleaseError, UnsafeOutputError
    from mrbench.curation.takedown import remove_images

    lists = [(kind, path) for kind, path in (("id", ids), ("url", urls), ("sha256", sha256)) if path is not None]
    try:
        removal = remove_images(release_dir, out, lists)
    except (ConfigError, UnsafeOutputError) as e:
        _fail(str(e))
    except ReleaseError as e:
        _fail(str(e), code=1)
    except OSError as e:
        _fail(_os_error(e))
    typer.echo(f"wrote {out}: {removal['rows_removed']} images removed ({removal['listed_rows_removed']} listed, "
               f"{removal['group_too_small']} in {removal['groups_removed']} groups left below the minimum size); "
               f"`mrbench release verify {out}` passes")


def _os_error(e: OSError) -> str:
    """``path: reason`` for a file-system error caused by a path the user gave (permissions, a file for a folder)."""
    where = e.filename if e.filename is not None else ""
    return f"{where}: {e.strerror or e}" if where else str(e)


@app.command("init")
def init_cmd(
    file: Path = typer.Argument(Path("mrbench.yaml"), help="the config file to write (never overwritten)"),
    photos: str = typer.Option("photos/", "--photos", help="folder of photos, one sub-folder per subject; relative "
                               "to FILE's folder"),
) -> None:
    """Write a commented starter curation config that runs as-is on a folder of photos (PHOTOS/<subject>/*.jpg)."""
    from mrbench.curation.starter import starter_config

    if file.exists():
        _fail(f"{file} exists; nothing was written (give another file name)")
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        with open(file, "x", encoding="utf-8") as f:
            f.write(starter_config(file.name, photos))
    except OSError as e:
        _fail(_os_error(e))
    typer.echo(f"wrote {file}; next: mrbench curate --config {file} --out runs/v1")


config_app = typer.Typer(no_args_is_help=True, help="Show resolved configs.", cls=ReadableHelpGroup)
app.add_typer(config_app, name="config")


@config_app.command("show")
def config_show(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="config YAML (default: none, the defaults)"),
    set_: List[str] = typer.Option([], "--set", help="override a key: --set crawl.timeout=5"),
    eval_: bool = typer.Option(False, "--eval", help="an eval config (mrbench eval --config), not a curation config"),
) -> None:
    """Print the resolved config as YAML: defaults, then the file, then --set (what curate or eval would run with).
    Problems in it are listed, all at once, after it (exit 2)."""
    import yaml

    from mrbench.config import from_dict, load_config, load_yaml, to_dict
    from mrbench.curation.config import CurateConfig
    from mrbench.evaluation.config import EvalConfig

    cls = EvalConfig if eval_ else CurateConfig
    try:
        cfg = load_config(cls, config, set_)
        problem = None
    except ConfigError as e:
        problem = e
        # show what could be read, with the defaults for the rest
        try:
            data = load_yaml(config) if config is not None and config.is_file() else {}
        except ConfigError:
            data = {}
        cfg = from_dict(cls, data if isinstance(data, dict) else {}, problems=[])
    typer.echo(yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True), nl=False)
    if problem is not None:
        _fail(str(problem))


LS_KINDS = {
    "stages": ("mrbench.curation", "mrbench.curation.pipeline:RUN_ORDER"),  # in run order
    "executors": ("mrbench.executors", "mrbench.executors:EXECUTORS"),
    "encoders": ("mrbench.backends", "mrbench.backends:ENCODERS"),
    "detectors": ("mrbench.backends", "mrbench.backends:DETECTORS"),
    "safety": ("mrbench.backends", "mrbench.backends:SAFETY_CLASSIFIERS"),
    "models": ("mrbench.baselines", "mrbench.evaluation.registry:MODELS"),
    "metrics": ("mrbench.evaluation.metrics", "mrbench.evaluation.registry:METRICS"),
    "benchmarks": ("mrbench.evaluation.benchmarks", "mrbench.evaluation.registry:BENCHMARKS"),
}


@app.command("ls")
def ls(kind: str = typer.Argument(..., help="stages, executors, encoders, detectors, safety, models, metrics, benchmarks")) -> None:
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
    """Offline demo: build a small sample web, serve it on 127.0.0.1, curate it, evaluate the release with tiny models
    (+ reference and chance rows) and write a leaderboard."""
    from mrbench.app.demo import run_demo

    if out.exists() and not out.is_dir():
        _fail(f"--out {out} is a file, not a folder")
    _INTERRUPT["hint"] = f"rerun `mrbench demo --out {out}` to resume where it stopped"
    run_demo(out, fresh=fresh)


def _backend_kwargs(args: List[str], device: Optional[str], batch_size: Optional[int]) -> dict:
    """``k=v,k2=v2`` backend options, repeatable, as ``--model-args`` reads them (values parsed as YAML scalars:
    0.5, true, [640, 640]) + common flags."""
    from mrbench.evaluation.config import parse_model_args

    try:
        kwargs: dict = parse_model_args(args)  # a value that is not YAML is a ConfigError too
    except ConfigError as e:
        _fail(str(e).replace("model argument", "backend option"))
    if batch_size is not None and batch_size < 1:
        _fail(f"--batch-size must be >= 1, got {batch_size}")
    if device:
        _check_device(device)
        kwargs["device"] = device
    if batch_size:
        kwargs["batch_size"] = batch_size
    return kwargs


def _check_device(device: str) -> None:
    """Refuse a device torch does not know (``cuda:x``, ``gpu``) or one this machine lacks, before any work."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as e:
        _fail(f"--device {device!r} is not a torch device ({e})")
    if dev.type == "cuda" and not torch.cuda.is_available():
        _fail(f"--device {device}: CUDA is not available on this machine")


def _check_out_file(out: Path) -> None:
    """``--out`` names a file to write: not an existing folder."""
    if out.is_dir():
        _fail(f"--out {out} is a folder; give a file name such as {out / 'out.parquet'}")


def _build_backend(kind: str, name: str, kwargs: dict) -> object:
    """Build a backend or exit with a clear message (unknown name, bad option, missing weights or dependency)."""
    from mrbench.backends import MissingWeightsError, get_detector, get_encoder
    from mrbench.registry import UnknownEntryError

    build = get_encoder if kind == "encoder" else get_detector
    try:
        return build(name, **kwargs)
    except UnknownEntryError as e:
        _fail(str(e))
    except MissingWeightsError as e:
        _fail(str(e), code=3)
    except ImportError as e:
        _fail(f"{kind} {name!r} is not available: {e}", code=3)
    except (TypeError, ValueError) as e:
        _fail(f"bad options for {kind} {name!r}: {e}")


def _run_over_paths(kind: str, name: str, paths: List[Path], out: Path, kwargs: dict) -> None:
    from mrbench.backends.files import detect_to_parquet, embed_to_parquet, find_images

    _check_out_file(out)
    backend = _build_backend(kind, name, kwargs)
    files = find_images(paths)
    progress, factory = _progress_factory()
    run = embed_to_parquet if kind == "encoder" else detect_to_parquet
    with progress:  # type: ignore[attr-defined]
        counts = run(backend, name, files, out, progress=factory(name, len(files)))  # type: ignore[arg-type]
    info = backend.info  # type: ignore[attr-defined]
    flag = " [RANDOM WEIGHTS]" if info.random_weights else ""
    typer.echo(f"wrote {sum(counts.values())} rows to {out} ({', '.join(f'{k}: {v}' for k, v in sorted(counts.items()))})"
               f"; {kind} {name}: {info.weights}{flag}")


@app.command()
def embed(
    paths: List[Path] = typer.Argument(..., help="image files or folders (recursive)"),
    encoder: str = typer.Option(..., "--encoder", "-e", help="encoder name (mrbench ls encoders)"),
    out: Path = typer.Option(..., "--out", "-o", help="output parquet file"),
    arg: List[str] = typer.Option([], "--encoder-args", "-a", help="encoder options k=v,k2=v2 (repeatable), e.g. pretrained=openai"),
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
    arg: List[str] = typer.Option([], "--detector-args", "-a", help="detector options k=v,k2=v2 (repeatable), e.g. threshold=0.5"),
    device: Optional[str] = typer.Option(None, "--device", help="cuda, cpu, ... (default: CUDA when present)"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="images per forward pass"),
) -> None:
    """Detect objects: one row per image (path, detector, boxes, scores, labels, status, error_message)."""
    _run_over_paths("detector", detector, paths, out, _backend_kwargs(arg, device, batch_size))


def _embed_for_command(encoder: str, paths: List[Path], args: List[str], device: Optional[str],
                       batch_size: Optional[int]) -> Any:
    """Build ``encoder`` (with its options) and embed the images under ``paths`` with a progress bar."""
    from mrbench.backends.files import find_images
    from mrbench.curation.embed import embed_files

    if batch_size is not None and batch_size < 1:
        _fail(f"--batch-size must be >= 1, got {batch_size}")
    kwargs = _backend_kwargs(args, device, None)
    model = _build_backend("encoder", encoder, kwargs)
    files = find_images(paths)
    if not files:
        _fail(f"no images found under {', '.join(map(str, paths))}")
    progress, factory = _progress_factory()
    with progress:  # type: ignore[attr-defined]
        got = embed_files(model, files, batch_size or 32, progress=factory("embed", len(files)))
    return got


@app.command("dedup")
def dedup_cmd(
    paths: List[Path] = typer.Argument(..., help="image files or folders (recursive)"),
    encoder: str = typer.Option(..., "--encoder", "-e", help="encoder name (mrbench ls encoders)"),
    out: Path = typer.Option(..., "--out", "-o", help="output parquet: path, duplicate_of, similarity, status"),
    threshold: Optional[float] = typer.Option(None, "--threshold", "-t", help="cosine similarity of near-duplicates (default: the encoder's, mrbench.thresholds)"),
    arg: List[str] = typer.Option([], "--encoder-args", "-a", help="encoder options k=v,k2=v2 (repeatable)"),
    device: Optional[str] = typer.Option(None, "--device", help="cuda, cpu, ... (default: CUDA when present)"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="images per forward pass"),
) -> None:
    """Find near-duplicates: one row per image; duplicate_of names the kept image (null when kept).

    The kept image of a near-duplicate cluster is the one with the most pixels, then the smallest path.
    """
    from mrbench.curation.files import dedup_files
    from mrbench.shards import write_parquet_atomic
    from mrbench.thresholds import choose

    t = choose(encoder, "near_duplicate", threshold).threshold
    if not 0.05 < t <= 1.0:
        _fail(f"--threshold must be in (0.05, 1], got {t}")
    _check_out_file(out)
    found = dedup_files(_embed_for_command(encoder, paths, arg, device, batch_size), t)
    write_parquet_atomic(found.table, out)
    typer.echo(f"wrote {found.table.num_rows} rows to {out}: {found.kept} kept, {found.near_duplicates} near-duplicates "
               f"(cosine >= {t}), {found.not_embedded} not embedded")


@app.command("group")
def group_cmd(
    paths: List[Path] = typer.Argument(..., help="image files or folders (recursive)"),
    encoder: str = typer.Option(..., "--encoder", "-e", help="encoder name; a face encoder groups by identity"),
    out: Path = typer.Option(..., "--out", "-o", help="output parquet: path, group_id, status"),
    num_groups: Optional[int] = typer.Option(None, "--num-groups", "-k", help="number of groups (Ward linkage)"),
    threshold: Optional[float] = typer.Option(None, "--threshold", "-t", help="average-linkage cosine similarity"),
    arg: List[str] = typer.Option([], "--encoder-args", "-a", help="encoder options k=v,k2=v2 (repeatable)"),
    device: Optional[str] = typer.Option(None, "--device", help="cuda, cpu, ... (default: CUDA when present)"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="images per forward pass"),
    seed: int = typer.Option(0, "--seed", help="seeds the k-means reduction of large sets"),
) -> None:
    """Group images visually (or by face identity): one row per image with its group_id (null when not embedded).

    Without --num-groups or --threshold, image encoders infer the number of groups (best silhouette) and face
    encoders cut at their identity threshold.
    """
    from mrbench.curation.files import group_files
    from mrbench.shards import write_parquet_atomic

    if num_groups is not None and threshold is not None:
        _fail("give --num-groups or --threshold, not both")
    if num_groups is not None and num_groups < 1:
        _fail("--num-groups must be >= 1")
    if threshold is not None and not -1.0 <= threshold <= 1.0:
        _fail(f"--threshold is a cosine similarity in [-1, 1], got {threshold}")
    _check_out_file(out)
    got = _embed_for_command(encoder, paths, arg, device, batch_size)
    found = group_files(got, encoder, num_groups=num_groups, threshold=threshold, seed=seed)
    write_parquet_atomic(found.table, out)
    result = found.clustering
    extra = f", silhouette {result.silhouette:.3f}" if result.silhouette is not None else ""
    typer.echo(f"wrote {found.table.num_rows} rows to {out}: {result.num_clusters} groups ({result.method}{extra}), "
               f"{found.not_embedded} not embedded")


@app.command("calibrate")
def calibrate_cmd(
    folder: Path = typer.Argument(..., help="labelled folder: one sub-folder of images per identity, subject or style"),
    encoder: List[str] = typer.Option(..., "--encoder", "-e", help="encoder name (repeatable; mrbench ls encoders)"),
    out: Path = typer.Option(..., "--out", "-o", help="output folder: calibration.yaml and calibration.html"),
    pairs: Optional[Path] = typer.Option(None, "--pairs", help="near-duplicate pairs: two paths (relative to FOLDER) per line"),
    plant: int = typer.Option(0, "--plant", help="also plant near-duplicates (crop, mirror, JPEG, resize) of N seeded images"),
    seed: int = typer.Option(0, "--seed", help="seeds the planted near-duplicates"),
    criterion: str = typer.Option("max_f1", "--criterion", help="max_f1, or precision>=P (best recall at precision >= P)"),
    labels: str = typer.Option("auto", "--labels", help="what the sub-folders are: auto (identity for face encoders, "
                                                        "subject otherwise), identity, subject, style, none (near-duplicates only)"),
    arg: List[str] = typer.Option([], "--encoder-args", "-a", help="encoder options k=v,k2=v2 (repeatable; every encoder)"),
    device: Optional[str] = typer.Option(None, "--device", help="cuda, cpu, ... (default: CUDA when present)"),
) -> None:
    """Measure thresholds on a labelled folder: pair precision / recall per threshold and the recommended one.

    Writes OUT/calibration.yaml (a curation config uses it with `calibration: OUT/calibration.yaml`) and
    OUT/calibration.html (distributions, curves, hardest pairs).
    """
    from mrbench.backends import MissingWeightsError
    from mrbench.curation.calibrate import calibrate
    from mrbench.registry import UnknownEntryError

    if out.exists() and not out.is_dir():
        _fail(f"--out {out} is a file, not a folder")
    kwargs = _backend_kwargs(arg, device, None)
    progress, factory = _progress_factory()
    try:
        with progress:  # type: ignore[attr-defined]
            results = calibrate(folder, encoder, out, pairs=pairs, plant=plant, seed=seed, criterion=criterion,
                                labels=labels, encoder_options={e: kwargs for e in encoder}, progress=factory)
    except ConfigError as e:
        _fail(str(e))
    except UnknownEntryError as e:
        _fail(str(e))
    except MissingWeightsError as e:
        _fail(str(e), code=3)
    except (TypeError, ValueError) as e:
        _fail(f"bad encoder options: {e}")
    for r in results:
        rec = r.recommendation
        flag = " [random weights]" if r.info.get("random_weights") else ""
        typer.echo(f"{r.encoder}{flag} {r.task}: threshold {rec.threshold:.3f} ({rec.criterion}): precision "
                   f"{rec.precision:.3f} recall {rec.recall:.3f} F1 {rec.f1:.3f}; {r.data}")
    typer.echo(f"wrote {out / 'calibration.yaml'} and {out / 'calibration.html'}")


def _eval_default(name: str) -> str:
    """`` (default: VALUE)`` of an :class:`~mrbench.evaluation.config.EvalConfig` field, for help texts: the flags have no
    defaults of their own (an absent flag leaves the YAML's or the config's value)."""
    import dataclasses

    from mrbench.evaluation.config import EvalConfig

    f = next(f for f in dataclasses.fields(EvalConfig) if f.name == name)
    return "" if f.default in (None, dataclasses.MISSING, "") else f" (default: {f.default})"


@app.command("eval")
def eval_cmd(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="eval config YAML: the option names below in snake_case (model, benchmark, model_args, images_per_prompt, ...); flags and --set override it"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="model name (mrbench ls models)"),
    benchmark: Optional[str] = typer.Option(None, "--benchmark", "-b", help="dreambench:PATH, mrbench:RELEASE_DIR or folder:PATH"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="parent folder of run folders" + _eval_default("out")),
    split: Optional[str] = typer.Option(None, "--split", help="held-in or held-out (MRBench releases; default held-out)"),
    model_args: List[str] = typer.Option([], "--model-args", "-a", help="generator options k=v,k2=v2 (repeatable)"),
    profile: Optional[str] = typer.Option(None, "--profile", help="default (pretrained weights) or tiny (tiny random models)" + _eval_default("profile")),
    limit: Optional[int] = typer.Option(None, "--limit", help="evaluate only the first N samples"),
    seed: Optional[int] = typer.Option(None, "--seed", help="first seed; image k of a prompt uses seed+k" + _eval_default("seed")),
    images_per_prompt: Optional[int] = typer.Option(None, "--images-per-prompt", help="images generated per sample" + _eval_default("images_per_prompt")),
    metrics: Optional[str] = typer.Option(None, "--metrics", help="metrics, e.g. clip_t,clip_i,dino_i,face@dlib (default: clip_t,clip_i,dino_i,face, each replaced by its offline alternative (image_sim@mobilenet_v2, face@dlib) or skipped when its weights are not on this machine)"),
    image_encoder: Optional[str] = typer.Option(None, "--image-encoder", help="use image_sim@ENCODER instead of clip_i/dino_i (e.g. mobilenet_v2)"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="requests per generate call"),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="generation cache (default OUT/.cache/generations)"),
    metric_device: Optional[str] = typer.Option(None, "--metric-device", help="device of metric encoders"),
    prompt: Optional[str] = typer.Option(None, "--prompt", help="prompt mode: auto (the benchmark's: image-only on COCO, leak-free elsewhere), leak-free, raw or image-only" + _eval_default("prompt")),
    set_: List[str] = typer.Option([], "--set", help="override an eval option: --set n_boot=200 (also model_args.KEY=VALUE)"),
    workers: Optional[int] = typer.Option(None, "--workers", help="worker processes on this machine, one GPU each when there are GPUs; rows are merged into the same files one worker writes" + _eval_default("workers")),
    rank: Optional[int] = typer.Option(None, "--rank", help="this worker's index when a launcher starts the workers (torchrun: $RANK, Slurm: $SLURM_PROCID); with --world-size"),
    world_size: Optional[int] = typer.Option(None, "--world-size", help="number of workers the launcher starts (torchrun: $WORLD_SIZE, Slurm: $SLURM_NTASKS); the last to finish merges"),
) -> None:
    """Generate for every sample and seed of a benchmark, score, write RUN_DIR (samples.jsonl, summary.json, images).

    Options come from EvalConfig: defaults, then --config YAML, then the flags given, then --set (CLI > YAML > defaults).
    """
    from mrbench.app.summary import print_eval_summary
    from mrbench.backends.base import MissingWeightsError
    from mrbench.config import load_config
    from mrbench.evaluation.config import EvalConfig, parse_model_args
    from mrbench.console import eval_progress
    from mrbench.evaluation.distributed import WorkerError
    from mrbench.evaluation.runner import run_eval
    from mrbench.log import setup_logging
    from mrbench.registry import UnknownEntryError

    setup_logging(_LOG["level"])
    _INTERRUPT["hint"] = RESUME_HINT + "; finished images come from the generation cache"
    flags = {"model": model, "benchmark": benchmark, "out": str(out) if out else None, "split": split,
             "profile": profile, "limit": limit, "seed": seed, "images_per_prompt": images_per_prompt,
             "metrics": [metrics] if metrics else None, "image_encoder": image_encoder, "batch_size": batch_size,
             "cache_dir": str(cache_dir) if cache_dir else None, "metric_device": metric_device, "prompt": prompt,
             "workers": workers, "rank": rank, "world_size": world_size}
    try:
        if model_args:
            flags["model_args"] = parse_model_args(model_args)
        cfg = load_config(EvalConfig, config, set_, values={k: v for k, v in flags.items() if v is not None})
    except ConfigError as e:
        _fail(str(e))
    if Path(cfg.out).exists() and not Path(cfg.out).is_dir():
        _fail(f"--out {cfg.out} is a file, not a folder")
    if cfg.metric_device:
        _check_device(cfg.metric_device)
    progress, _ = _progress_factory()
    report, phase = eval_progress(progress, cfg.model)
    try:
        with progress:  # type: ignore[attr-defined]
            result = run_eval(config=cfg, progress=report, phase=phase)
    except MissingWeightsError as e:
        _fail(f"{e}\n(offline: --metrics image_sim@mobilenet_v2,face@dlib needs no download; without --metrics the "
              "default set runs what this machine has weights for; --profile tiny runs tiny random models)", code=3)
    except (UnknownEntryError, ConfigError, FileNotFoundError) as e:
        _fail(str(e))
    except WorkerError as e:
        _fail(str(e), code=1)
    if not result.complete:
        typer.echo(f"worker {cfg.rank} of {cfg.world_size}: slice done ({len(result.rows)} rows) in {result.run_dir}; "
                   "the last worker to finish merges samples.jsonl and summary.json")
        return
    for note in result.summary.get("metric_notes") or []:
        typer.secho(f"note: {note}", fg="yellow", err=True)
    print_eval_summary(result)


@app.command("leaderboard")
def leaderboard_cmd(
    run_dirs: List[Path] = typer.Argument(..., help="run folders written by mrbench eval"),
    out: Path = typer.Option(..., "--out", "-o", help="folder for leaderboard.md, .csv, .html and leaderboard_paired.csv"),
    grid_samples: int = typer.Option(4, "--grid-samples", help="samples shown per model in the HTML image grids"),
) -> None:
    """Tables (mean [95% CI] per metric, ceiling and chance rows) and image grids from run folders."""
    from mrbench.evaluation.leaderboard import build_leaderboard

    if grid_samples < 0:
        _fail(f"--grid-samples must be >= 0, got {grid_samples}")
    if out.exists() and not out.is_dir():
        _fail(f"--out {out} is a file, not a folder")
    from mrbench.layout import EVAL_RUN_FILES, folder_hint

    for run_dir in run_dirs:
        if not (run_dir / EVAL_RUN_FILES[0]).is_file() and folder_hint(run_dir):
            _fail(f"{folder_hint(run_dir)}; mrbench leaderboard takes eval run folders")
    try:
        paths = build_leaderboard(run_dirs, out, grid_samples=grid_samples)
    except (FileNotFoundError, ValueError) as e:
        _fail(str(e))
    typer.echo("wrote " + ", ".join(str(p) for p in paths.values()))


def _on_sigint(signum: int, frame: Any) -> None:
    from mrbench.executors import Interrupted

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C while unwinding does not print a traceback
    raise Interrupted(130)


def main() -> None:
    """The console entry point: ``app`` plus a clean Ctrl-C (exit 130, a line on how to resume, no traceback)."""
    from mrbench.backends.weights import offline_environment
    from mrbench.executors import Interrupted

    offline_environment()
    signal.signal(signal.SIGINT, _on_sigint)
    try:
        app()
    except OSError as e:
        if not _disk_full(e):
            raise
        typer.secho(f"error: no space left on the device ({_os_error(e)}); free some space or write elsewhere, "
                    "then run the same command again (finished work is kept)", fg="red", err=True)
        sys.exit(1)
    except Interrupted:
        logging.disable(logging.CRITICAL)  # teardown chatter (workers, proxies) after the user asked to stop
        typer.secho(f"\ninterrupted: {_INTERRUPT['hint']}", fg="yellow", err=True)
        _exit_interrupted()


def _disk_full(e: OSError) -> bool:
    """ENOSPC or a full quota, however it arrived (pyarrow and worker processes may keep only the message)."""
    import errno

    return e.errno in (errno.ENOSPC, errno.EDQUOT) or "No space left on device" in str(e) or "quota exceeded" in str(e).lower()


def _exit_interrupted() -> None:
    """Exit 130 now: everything has unwound (locks released, markers unwritten), so a thread still blocked in
    I/O (a download, a model load) must not keep the process alive; it is not waited for."""
    import threading

    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    sys.exit(130)


if __name__ == "__main__":
    main()
