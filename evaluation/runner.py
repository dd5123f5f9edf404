"""``run_eval``: generate for every (sample, seed) of a benchmark, score, write the run folder.

Run folder ``OUT/<model>-<benchmark>-<split>-<steps>steps-cfg<guidance>-seed<seed>[-tiny]-<hash>``::

    config.json      # resolved options: model (options, weights, random-weights flag), benchmark spec, metrics
                     # with their encoders, eval settings, provenance (versions, git hash, hardware)
    samples.jsonl    # one row per generated image (see results.py); the primary result
    summary.json     # per split: per-group means -> split means with bootstrap 95 % CIs over groups
    timing.json      # wall time: generation, metrics, harness overhead (not in samples.jsonl: it varies)
    images/          # the generated images (PNG)

Generated images are also kept in a cache keyed on (model, options hash, sample key, seed) -- by default
``OUT/.cache/generations`` -- so a rerun, or a run killed and restarted, never generates an image twice.

Everything that can fail for configuration reasons (unknown names or options, missing weights, a bad benchmark
folder) fails before the first image is generated.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

# EvalConfig and parse_model_args live in the eval config module (declared once); imported here for callers that
# know them from the runner.
from mrbench.config import ConfigError
from mrbench.evaluation.config import EvalConfig, eval_config, parse_model_args  # noqa: F401
from mrbench.evaluation import distributed
from mrbench.evaluation.benchmarks import Benchmark, BenchmarkSpec, build_benchmark, load_image_file
from mrbench.evaluation.generator import (
    GenerationRequest, GenerationResult, Generator, Sample, image_bytes, options_hash, scored_references,
)
from mrbench.evaluation.metrics import (
    Metric, MetricInput, MetricSpec, apply_benchmark_encoders, build_metrics, metric_fields, parse_metric_specs,
)
from mrbench.backends.weights import MissingWeightsError, merge_missing, weight_checks
from mrbench.evaluation.registry import metrics as metrics_registry
from mrbench.evaluation.registry import models, resolve_model
from mrbench.evaluation.results import (
    CONFIG_FILE, SAMPLES_FILE, SUMMARY_FILE, GenerationCache, JsonlAppender, read_jsonl, safe_name, summarize,
    write_jsonl,
)
from mrbench.images import ImageTooLargeError
from mrbench.log import get_logger, warn_once
from mrbench.shards import atomic_write_bytes, atomic_write_text, write_text_if_changed

log = get_logger("evaluation.runner")
PARTIAL_FILE = "samples.partial.jsonl"


@dataclass
class RunResult:
    """What :func:`run_eval` returns."""

    run_dir: Path
    summary: dict[str, Any]
    timing: dict[str, Any]
    rows: list[dict[str, Any]]
    complete: bool = True  # False: this worker's slice is done, other workers' rows are still missing


def build_generator(name: str, profile: str = "default", options: dict[str, Any] | None = None) -> Generator:
    """Build the generator a run of ``name`` under ``profile`` uses (``easyref`` under ``tiny``: the ``easyref-tiny``
    entry, see :func:`~mrbench.evaluation.registry.resolve_model`); weights load now, missing ones raise
    MissingWeightsError."""
    name, profile, entry = resolve_model(name, profile)
    cls = models().get(entry)
    gen = cls(profile=profile, **(options or {}))
    if not getattr(gen, "name", ""):
        gen.name = name
    return gen


def _generator_missing_weights(cls: type, profile: str, options: dict[str, Any]) -> list[MissingWeightsError]:
    """Missing weights of generator class ``cls``, looked up without loading anything: its ``check_weights`` on an
    instance holding only the validated options (generators without that method, or whose check needs more of
    the constructor, are checked when they are built)."""
    if not isinstance(cls, type) or not hasattr(cls, "check_weights"):
        return []
    probe = _config_only(cls, cls.__name__, profile, options)  # validates the options (unknown ones fail here, by name)
    try:
        return weight_checks(probe)
    except (AttributeError, TypeError):
        return []


def _config_only(cls: type, name: str, profile: str, options: dict[str, Any]) -> Generator:
    """A generator of class ``cls`` holding only its validated options (profile defaults applied), no weights: what
    names the run folder and keys the cache."""
    probe = cls.__new__(cls)
    Generator.__init__(probe, profile, **options)
    if not getattr(probe, "name", ""):
        probe.name = name
    return probe


def _spec_text(spec: Any) -> str:
    return f"{spec.metric}@{spec.encoder}" if spec.encoder else spec.metric


def _build_metrics_adapting(specs: list[Any], profile: str, device: str | None, adapt: bool
                            ) -> tuple[list[Metric], list[tuple[str, MissingWeightsError]], list[str]]:
    """Build the metrics; with ``adapt`` (the default metric set, nothing asked for by name) a metric whose weights
    are not on this machine is replaced by its registered offline alternative, or skipped when it has none.

    Returns:
        ``(metrics, missing, notes)``: the built metrics; (``metric NAME``, error) for each weight still missing
        (all of them when nothing could be built); one line per metric replaced or skipped, saying why.
    """
    built: list[Metric] = []
    missing: list[tuple[str, MissingWeightsError]] = []
    notes: list[str] = []
    for spec in specs:
        name = _spec_text(spec)
        alternative = getattr(metrics_registry().get(spec.metric), "offline_alternative", "")
        try:
            built += build_metrics([spec], profile=profile, device=device)
            continue
        except MissingWeightsError as e:
            what = e.what or str(e).splitlines()[0]
            if not adapt:
                missing.append((f"metric {name}" + (f" (offline alternative: {alternative})" if alternative else ""), e))
                continue
            missing.append((f"metric {name}", e))
        if alternative and alternative in {m.key for m in built}:
            notes.append(f"{name}: {what} not available offline; {alternative} (already measured) stands in")
            continue
        if alternative:
            try:
                built += build_metrics([MetricSpec.parse(alternative)], profile=profile, device=device)
                notes.append(f"{name}: {what} not available offline; measured with {alternative} instead")
                continue
            except MissingWeightsError as e2:
                missing.append((f"metric {alternative}", e2))
        notes.append(f"{name} skipped: {what} not available offline" + ("" if alternative else
                                                                          " (no offline alternative)"))
    if adapt and built:
        missing = []  # every metric that could run runs; the notes say what was replaced or skipped
    return built, missing, notes


def _missing_per_user(missing: list[tuple[str, MissingWeightsError]]) -> MissingWeightsError:
    """One error listing every missing weight once, each with the metrics and models that need it."""
    users: dict[str, list[str]] = {}
    first: dict[str, MissingWeightsError] = {}
    for user, e in missing:
        users.setdefault(str(e), []).append(user)
        first.setdefault(str(e), e)
    errors = []
    for text, e in first.items():
        labelled = MissingWeightsError(f"needed by {', '.join(users[text])}: {text}")
        labelled.what = e.what
        errors.append(labelled)
    return merge_missing(errors)


def _fmt(x: float | None) -> str:
    return "na" if x is None else (f"{x:g}")


def run_name(cfg: EvalConfig, gen: Generator, spec: BenchmarkSpec, opt_hash: str, metric_keys: list[str]) -> str:
    """``<model>-<benchmark>-<split>-<steps>steps-cfg<guidance>-seed<seed>[-tiny]-<hash>``; the hash covers the model
    options (``opt_hash``, from :func:`options_hash`), the benchmark fingerprint, limit, images per prompt and the
    metric set."""
    blob = json.dumps({
        "options": opt_hash, "fingerprint": spec.fingerprint,
        "limit": cfg.limit, "ipp": cfg.images_per_prompt, "metrics": sorted(metric_keys), "seed": cfg.seed,
    }, sort_keys=True)
    h = hashlib.sha256(blob.encode()).hexdigest()[:8]
    steps = f"{gen.steps}steps" if gen.steps is not None else "real"
    cfg_part = f"cfg{_fmt(gen.guidance)}" if gen.guidance is not None else "nocfg"
    profile = f"-{cfg.profile}" if cfg.profile != "default" else ""
    return f"{cfg.model}-{spec.name}-{spec.split}-{steps}-{cfg_part}-seed{cfg.seed}{profile}-{h}"


def sample_key(bench: Benchmark, sample: Sample) -> str:
    """Cache key of a sample: benchmark, id and a hash of its content (references, target, prompt)."""
    content = hashlib.sha256(json.dumps(sample.to_dict(), sort_keys=True).encode()).hexdigest()[:12]
    return f"{bench.name}:{sample.id}:{content}"


def _row_key(sample_id: str, seed: int) -> str:
    return f"{sample_id}#{seed}"


def run_eval(
    model: str | Generator | None = None,
    benchmark: str | None = None,
    out: str | Path | None = None,
    *,
    config: EvalConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
    phase: Callable[[str], None] | None = None,
    **options: Any,
) -> RunResult:
    """Evaluate ``model`` on ``benchmark``; returns the run folder, summary, timing and rows.

    The options are :class:`~mrbench.evaluation.config.EvalConfig`'s fields (their defaults, ranges and choices are declared
    there, once): pass a built ``config``, keyword ``options`` of the same names, or both (keywords win; None means
    not given). ``run_eval("reference", "dreambench:PATH", "runs", limit=3, metrics="clip_t")`` is
    ``run_eval(config=EvalConfig(model="reference", benchmark="dreambench:PATH", limit=3, metrics=["clip_t"]))``.

    Args:
        model: A registered model name, or an already built :class:`~mrbench.evaluation.generator.Generator` (its
            ``name``, profile and options then name the run, key the cache and go into ``config.json``; it takes
            no ``model_args``).
        benchmark: ``NAME:PATH`` (see :func:`~mrbench.evaluation.benchmarks.build_benchmark`).
        out: Parent folder of run folders.
        config: The run's options (model, benchmark and out above override its own).
        progress: Called as ``progress(done, total)`` after each batch.
        phase: Called with ``"loading"`` (benchmark, metrics, model), ``"preparing"`` (the generator's per-run
            preparation, e.g. per-group LoRA training) and ``"generating"``, so a display can say what a long silence
            is.
        **options: ``split``, ``model_args`` (a dict or ``"k=v,k2=v2"`` strings), ``profile``, ``limit``, ``seed``,
            ``images_per_prompt``, ``metrics`` (a list or ``"clip_t,face@dlib"``), ``image_encoder``, ``batch_size``,
            ``cache_dir``, ``metric_device``, ``n_boot``; unknown names are a ConfigError naming the closest one.
    """
    built = model if isinstance(model, Generator) else None
    if built is not None:
        if (options.get("workers") or getattr(config, "workers", 1)) > 1:
            raise ConfigError("workers start processes that build the model by name: pass the model's name")
        if options.get("model_args"):
            raise ConfigError("model_args apply to a model name; a built generator already has its options")
        if options.get("profile") not in (None, built.profile):
            raise ConfigError(f"profile {options['profile']!r} differs from the built generator's {built.profile!r}")
        name = built.name or type(built).__name__
        options.update(model_args=asdict(built.config), profile=built.profile)
        model = name
    cfg = eval_config(config, model=model, benchmark=benchmark, out=out, **options)
    if built is None:  # easyref-tiny is easyref under the tiny profile: one run folder and cache for both spellings
        name, profile, entry = resolve_model(cfg.model, cfg.profile)
        cfg = replace(cfg, model=name, profile=profile)
    model, benchmark, profile, options = cfg.model, cfg.benchmark, cfg.profile, cfg.model_args
    split, limit, seed, images_per_prompt = cfg.split, cfg.limit, cfg.seed, cfg.images_per_prompt
    metric_list, image_encoder, metric_device = cfg.metrics, cfg.image_encoder, cfg.metric_device
    wall0 = time.perf_counter()

    # Everything that can fail on configuration fails here, before any generation: names first (a typo is reported
    # before any weights are looked up), then every missing weight of the run in one error.
    if phase:
        phase("loading")
    model_cls = type(built) if built is not None else models().get(entry)
    specs = parse_metric_specs(metric_list or None, image_encoder)
    for s in specs:
        metrics_registry().get(s.metric)
    bench = build_benchmark(benchmark, split=split, seed=seed, images_per_prompt=images_per_prompt, limit=limit,
                            prompt=cfg.prompt, max_image_pixels=cfg.max_image_pixels)
    samples = bench.samples()
    specs = apply_benchmark_encoders(specs, bench.metric_encoders, profile, bench.tiny_encoder_args)
    built_metrics, missing, metric_notes = _build_metrics_adapting(specs, profile, metric_device,
                                                                   adapt=not metric_list and not image_encoder)
    if built is None:  # a built generator has loaded its weights already
        missing += [(f"model {model}", e) for e in _generator_missing_weights(model_cls, profile, options)]
    if missing:
        raise _missing_per_user(missing)
    # The run folder is named from the options alone (a generator holding only its validated config): a rerun of a
    # finished run re-reads its rows without loading the model's weights.
    gen = built if built is not None else _config_only(model_cls, model, profile, options)
    fields = metric_fields(built_metrics)
    metric_keys = [m.key for m in built_metrics]

    spec = bench.spec()
    opt_hash = options_hash(model, profile, asdict(gen.config))

    out = Path(cfg.out)
    run_dir = out / run_name(cfg, gen, spec, opt_hash, metric_keys)
    (run_dir / "images").mkdir(parents=True, exist_ok=True)
    cache = GenerationCache(Path(cfg.cache_dir) if cfg.cache_dir else out / ".cache" / "generations", model, opt_hash)
    encoders = {m.key: m.info for m in built_metrics}
    any_random = gen.random_weights or any(i["random_weights"] for i in encoders.values())

    requests = [GenerationRequest(s, sd) for s in samples for sd in spec.seeds]
    wanted_fields = sorted(fields)

    def reusable(r: dict[str, Any]) -> bool:
        return r.get("model") == model and r.get("status") == "ok" and sorted(r.get("metrics", {})) == wanted_fields

    done: dict[str, dict[str, Any]] = {}
    for r in read_jsonl(run_dir / SAMPLES_FILE) + [r for p in distributed.rows_files(run_dir) for r in read_jsonl(p)]:
        # An ok row scored with the current metric set is reused; anything else is redone (failed rows are retried,
        # rows scored with other metrics are rescored from the cached image: nothing is generated twice).
        if reusable(r):
            done[_row_key(r["sample_id"], r["seed"])] = r
    # Spread over workers: this one takes whole batches of the canonical request list (distributed.py says why).
    rank, world = distributed.worker_of(cfg)
    bs = cfg.batch_size or getattr(gen.config, "batch_size", None) or getattr(gen, "default_batch_size", 1)
    missing_keys = {_row_key(q.sample.id, q.seed) for q in requests} - set(done)
    pending = [q for i, q in enumerate(requests)
               if _row_key(q.sample.id, q.seed) in missing_keys and distributed.in_slice(i, bs, rank, world)]
    children = distributed.spawn(cfg, world, run_dir / "workers") if cfg.workers > 1 and missing_keys else []
    distributed.select_device(rank, world)
    if pending and built is None:
        gen = build_generator(model, profile, options)  # weights load only when there is something to generate
    if pending or not (run_dir / CONFIG_FILE).is_file():
        _write_config(run_dir, cfg, gen, spec.to_dict(), built_metrics, opt_hash, any_random)
    gen.work_dir = cache.dir / "work"
    image_sizes: dict[str, str | None] = {}  # image id -> why it is too large (None: fine), checked once each
    refused = {q.sample.id for q in pending if oversized_image(q.sample, bench.max_image_pixels, image_sizes)}
    if pending:  # a finished run is only re-read: nothing to prepare for
        if phase:
            phase("preparing")
        gen.prepare([s for s in bench.all_samples() if s.id not in refused])

    timing = {"requests": len(requests), "resumed_rows": len(requests) - len(missing_keys), "generated_images": 0,
              "cached_images": 0, "generate_s": 0.0, "metrics_s": 0.0}
    new_rows: dict[str, dict[str, Any]] = {}
    timing["setup_s"] = time.perf_counter() - wall0  # benchmark, metrics and model built; nothing generated yet
    if progress:
        progress(len(requests) - len(pending), len(requests))
    if phase:
        phase("generating")
    if pending:
        with JsonlAppender(run_dir / distributed.rows_file(rank, world)) as partial:
            for start in range(0, len(pending), bs):
                batch = pending[start:start + bs]
                results = _generate_with_cache(gen, batch, bench, cache, timing, image_sizes)
                rows = _score(batch, results, built_metrics, timing, run_dir, model, gen, encoders, any_random, bench)
                for row in rows:
                    partial.write(row)
                    new_rows[_row_key(row["sample_id"], row["seed"])] = row
                if progress:
                    progress(len(requests) - len(pending) + start + len(batch), len(requests))

    failed_workers = distributed.wait(children)
    keys = [_row_key(q.sample.id, q.seed) for q in requests]
    if world > 1:  # this worker's share of the timing, folded into timing.json by the worker that merges
        timing["wall_s"] = time.perf_counter() - wall0
        atomic_write_text(run_dir / distributed.timing_file(rank, world), json.dumps(timing, indent=1, sort_keys=True))
    worker_timings: dict[str, Any] = {}
    with distributed.merge_lock(run_dir):  # the last worker to finish finds every row and merges
        all_rows = distributed.collect_rows(run_dir, keys, done, new_rows, reusable,
                                            lambda r: _row_key(r["sample_id"], r["seed"]), model)
        merging = all_rows is not None and not distributed.is_spawned_child()  # under --workers the parent merges
        if merging:
            write_jsonl(run_dir / SAMPLES_FILE, all_rows)
            for path in distributed.rows_files(run_dir):
                path.unlink(missing_ok=True)
            worker_timings = distributed.take_worker_timings(run_dir)
    if not merging:
        if failed_workers:
            raise distributed.WorkerError("; ".join(failed_workers) + ": their finished rows are kept; rerun the "
                                          "same command to generate only the missing ones")
        return RunResult(run_dir, {}, timing, list(new_rows.values()), complete=False)

    summary = {
        "run": run_dir.name, "model": model, "profile": profile, "random_weights": any_random,
        "model_random_weights": gen.random_weights, "benchmark": spec.to_dict(), "encoders": encoders,
        "splits": summarize(all_rows, fields, n_boot=cfg.n_boot),
        "metric_notes": metric_notes,  # default metrics replaced or skipped for want of weights, and why
    }
    write_text_if_changed(run_dir / SUMMARY_FILE, json.dumps(summary, indent=1, sort_keys=True))
    wall = time.perf_counter() - wall0
    timing["wall_s"] = wall
    if worker_timings:
        distributed.merge_timing(timing, worker_timings)
    n_gen = timing["generated_images"]
    timing["per_generated_image_s"] = timing["generate_s"] / n_gen if n_gen else None
    timing["overhead_s"] = wall - timing["generate_s"]
    atomic_write_text(run_dir / "timing.json", json.dumps(timing, indent=1, sort_keys=True))
    return RunResult(run_dir, summary, timing, all_rows)


def _write_config(run_dir: Path, cfg: EvalConfig, gen: Generator, spec: dict[str, Any], built: list[Metric],
                  opt_hash: str, any_random: bool) -> None:
    from mrbench.provenance import provenance

    config = {
        "run": run_dir.name, "eval": distributed.config_fields(cfg), "model": gen.describe(), "options_hash": opt_hash,
        "sampling": {"steps": gen.steps, "guidance": gen.guidance},
        "benchmark": spec, "random_weights": any_random,
        "metrics": [{"key": m.key, "metric": m.name, "encoder": m.encoder_name, "encoder_info": m.info,
                     "fields": headline_first(m.field_keys(), spec.get("headline_field", "")),
                     **({"settings": m.settings()} if hasattr(m, "settings") else {})}
                    for m in built],
        "provenance": provenance(),
    }
    write_text_if_changed(run_dir / CONFIG_FILE, json.dumps(config, indent=1, sort_keys=True, default=str))


def headline_first(keys: list[str], headline: str) -> list[str]:
    """A metric's field keys with the benchmark's headline field (``all`` on DreamBench) first: the leaderboard
    shows columns in this order."""
    top = [k for k in keys if headline and k.endswith(f".{headline}")]
    return top + [k for k in keys if k not in top]


def oversized_image(sample: Sample, max_pixels: int | None, seen: dict[str, str | None]) -> str | None:
    """Why ``sample`` cannot be evaluated: one of its real images declares more than ``max_pixels`` pixels (read
    from the header; nothing is decoded). ``seen`` remembers each image's answer across samples."""
    for ref in sample.real_images():
        if ref.size is None or max_pixels is None:
            continue
        if ref.id not in seen:
            try:
                w, h = ref.size()
                seen[ref.id] = f"{ref.id}: {w}x{h} pixels > max_image_pixels {max_pixels}" if w * h > max_pixels else None
            except ImageTooLargeError as e:
                seen[ref.id] = f"{ref.id}: {e}"
            except (OSError, ValueError, SyntaxError):
                seen[ref.id] = None  # not this check's business: decoding names an unreadable image
        if seen[ref.id]:
            return seen[ref.id]
    return None


def _generate_with_cache(gen: Generator, batch: list[GenerationRequest], bench: Benchmark, cache: GenerationCache,
                         timing: dict[str, Any], seen: dict[str, str | None]) -> list[tuple[GenerationResult, bytes | None]]:
    results: list[tuple[GenerationResult, bytes | None] | None] = [None] * len(batch)
    keys = [sample_key(bench, req.sample) for req in batch]
    todo: list[int] = []
    for i, req in enumerate(batch):
        too_large = oversized_image(req.sample, bench.max_image_pixels, seen)
        if too_large is not None:  # a named per-sample failure; the image is never decoded
            results[i] = (GenerationResult.failed("image_too_large", too_large), None)
            continue
        hit = cache.get(keys[i], req.seed)
        if hit is None:
            todo.append(i)
            continue
        png, meta = hit
        image = load_image_file(io.BytesIO(png))
        results[i] = (GenerationResult(image, source_id=meta.get("source_id"), info=meta.get("info", {})), png)
        timing["cached_images"] += 1
    if todo:
        t0 = time.perf_counter()
        try:
            fresh = gen.generate([batch[i] for i in todo])
        except (RuntimeError, ValueError, OSError) as e:  # errors are data: every request still yields a row
            warn_once(log, f"generate:{type(e).__name__}", f"{gen.name}: generation failed ({type(e).__name__}: {e})")
            fresh = [GenerationResult.failed("generation_error", f"{type(e).__name__}: {e}") for _ in todo]
        timing["generate_s"] += time.perf_counter() - t0
        if len(fresh) != len(todo):
            raise RuntimeError(f"{gen.name} returned {len(fresh)} results for {len(todo)} requests")
        for i, res in zip(todo, fresh):
            png = None
            if res.status == "ok" and res.image is None:  # a generator bug is a failed row, not a crash in scoring
                res = GenerationResult.failed("generation_error", f"{gen.name} returned status ok without an image")
            if res.status == "ok":
                png = image_bytes(res.image.convert("RGB"))
                cache.put(keys[i], batch[i].seed, png,
                          {"source_id": res.source_id, "info": res.info})
                timing["generated_images"] += 1
            results[i] = (res, png)
    return results  # type: ignore[return-value]


def _score(batch: list[GenerationRequest], results: list[tuple[GenerationResult, bytes | None]],
           built: list[Metric], timing: dict[str, Any], run_dir: Path, model: str, gen: Generator,
           encoders: dict[str, Any], any_random: bool, bench: Benchmark) -> list[dict[str, Any]]:
    ok = [i for i, (res, _) in enumerate(results) if res.status == "ok"]
    values: dict[int, dict[str, float | None]] = {i: {} for i in ok}
    details: dict[int, dict[str, Any]] = {i: {} for i in ok}  # per metric key: what a metric keeps beside its values
    t0 = time.perf_counter()
    if ok:
        inputs = [MetricInput(results[i][0].image, batch[i].sample, results[i][0].source_id) for i in ok]  # type: ignore[arg-type]
        for m in built:
            detailed = getattr(m, "compute_detailed", None)  # metrics with row details (the judge's raw answers)
            pairs = detailed(inputs) if detailed else [(v, None) for v in m.compute(inputs)]
            for i, (vals, det) in zip(ok, pairs):
                values[i].update(vals)
                if det:
                    details[i][m.key] = det
    timing["metrics_s"] += time.perf_counter() - t0
    rows = []
    for i, (req, (res, png)) in enumerate(zip(batch, results)):
        s = req.sample
        rel = None
        if png is not None:
            rel = f"images/{safe_name(s.id)}__s{req.seed}.png"
            atomic_write_bytes(run_dir / rel, png)
        rows.append({
            "sample_id": s.id, "group": s.group, "split": s.split, "model": model, "seed": req.seed,
            "prompt": s.prompt, "target_id": s.target.id if s.target else None,
            "reference_ids": [r.id for r in scored_references(s, res.source_id)], "n_references": len(s.references),
            "image": rel, "status": res.status,
            "error_message": res.error_message, "source_id": res.source_id, "metrics": values.get(i, {}),
            "encoders": encoders if res.status == "ok" else {}, "model_random_weights": gen.random_weights,
            "random_weights": any_random, "benchmark": bench.name,
            "info": res.info, "metric_details": details.get(i, {}),
        })
    return rows
