"""The offline demo: a small sample "web" built from generated images and scikit-image's bundled photos,
served on 127.0.0.1, crawled and curated end to end.

Nothing here needs the network or files outside the installed packages.
"""

from __future__ import annotations

import io
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageOps

from mrbench.app.web import Route, SampleWebServer, broken_routes, encode

TAGS = [
    {"name": "Eileen Collins", "category": "celebrity", "aliases": ["astronaut Eileen Collins", "アイリーン・コリンズ"]},
    {"name": "Chelsea the Cat", "category": "character", "aliases": ["Chelsea"]},
    {"name": "coffee cup", "category": "subject", "aliases": ["cup of coffee", "café au lait"]},
    {"name": "rocket", "category": "subject", "aliases": ["launch vehicle"]},
    {"name": "red robot toy", "category": "subject", "aliases": ["red toy robot"]},
    {"name": "wall clock", "category": "subject", "aliases": []},
    {"name": "pixel art", "category": "style", "aliases": ["8-bit style"]},
    {"name": "pencil sketch", "category": "style", "aliases": ["pencil drawing"]},
]


def _skimage(name: str) -> Image.Image:
    import skimage.data

    arr = getattr(skimage.data, name)()
    im = Image.fromarray(arr)
    return im.convert("RGB")


def _variant(im: Image.Image, rng: np.random.Generator, k: int) -> Image.Image:
    """Photo-like variation of ``im``: k=0 is the original; others crop, flip, recolour, rescale."""
    if k == 0:
        return im
    w, h = im.size
    f = rng.uniform(0.7, 0.9)
    cw, ch = int(w * f), int(h * f)
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    out = im.crop((x, y, x + cw, y + ch))
    if k % 2:
        out = ImageOps.mirror(out)
    out = ImageEnhance.Color(out).enhance(rng.uniform(0.6, 1.4))
    out = ImageEnhance.Brightness(out).enhance(rng.uniform(0.8, 1.2))
    return out.resize((int(cw * rng.uniform(0.8, 1.1)), int(ch * rng.uniform(0.8, 1.1))), Image.BICUBIC)


def _robot(rng: np.random.Generator) -> Image.Image:
    bg = tuple(int(c) for c in rng.integers(150, 256, 3))
    im = Image.new("RGB", (320, 320), bg)
    d = ImageDraw.Draw(im)
    s = rng.uniform(0.7, 1.1)
    ox, oy = rng.integers(40, 100, 2)
    red = (int(rng.integers(180, 240)), 20, 30)
    d.rectangle([ox, oy + 60 * s, ox + 120 * s, oy + 180 * s], fill=red)  # body
    d.rectangle([ox + 25 * s, oy, ox + 95 * s, oy + 55 * s], fill=red)  # head
    for ex in (40, 70):
        d.ellipse([ox + ex * s, oy + 15 * s, ox + (ex + 12) * s, oy + 27 * s], fill=(250, 250, 120))
    d.line([ox + 60 * s, oy, ox + 60 * s, oy - 25 * s], fill=(60, 60, 60), width=4)
    return im.filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.2)))


def _pixel_art(im: Image.Image) -> Image.Image:
    small = im.resize((48, int(48 * im.height / im.width)), Image.NEAREST).quantize(16).convert("RGB")
    return small.resize((384, int(384 * im.height / im.width)), Image.NEAREST)


def _sketch(im: Image.Image) -> Image.Image:
    g = ImageOps.grayscale(im).filter(ImageFilter.FIND_EDGES)
    return ImageOps.invert(ImageOps.autocontrast(g)).convert("RGB")


def build_sample_web(seed: int = 0) -> tuple[dict[str, Route], list[dict[str, str]]]:
    """Routes (path -> Route) and metadata rows (path, caption) of the sample web."""
    rng = np.random.default_rng(seed)
    routes: dict[str, Route] = {}
    rows: list[dict[str, str]] = []

    def add(path: str, im: Image.Image, caption: str, fmt: str = "JPEG") -> bytes:
        data = encode(im, fmt, quality=90) if fmt == "JPEG" else encode(im, fmt)
        routes[path] = Route(data, content_type="image/jpeg" if fmt == "JPEG" else "image/png")
        rows.append({"path": path, "caption": caption})
        return data

    photo_subjects = [
        ("astronaut", "Eileen Collins", ["portrait of astronaut Eileen Collins", "Eileen Collins in her flight suit",
                                          "NASA photo: Eileen Collins", "アイリーン・コリンズ 宇宙飛行士の写真",
                                          "EILEEN COLLINS, STS-93 commander"]),
        ("cat", "Chelsea", ["Chelsea the cat looking up", "my cat Chelsea", "Chelsea the Cat (tabby)",
                            "chelsea-the-cat close-up", "Chelsea on the sofa"]),
        ("coffee", "coffee", ["a cup of coffee on a saucer", "café au lait, morning", "Coffee cup, top view",
                              "latte art in a coffee cup", "cup of coffee and spoon"]),
        ("rocket", "rocket", ["rocket on the launch pad", "a launch vehicle before lift-off", "Rocket launch day",
                              "the rocket, seen from afar", "ROCKET at dawn"]),
        ("clock", "clock", ["an old wall clock", "wall clock close up", "Wall-clock on white wall",
                            "antique wall clock", "wall clock, 10 past 10"]),
    ]
    for name, _, captions in photo_subjects:
        base = _skimage(name)
        for k, cap in enumerate(captions):
            add(f"/img/{name}_{k}.jpg", _variant(base, rng, k), cap)
    for k in range(5):
        add(f"/img/robot_{k}.png", _robot(rng), ["red robot toy on a table", "a red toy robot", "Red robot toy, studio",
                                                  "kid's red robot toy", "red-robot-toy photo"][k], fmt="PNG")
    for k, src in enumerate(["camera", "coins", "hubble_deep_field", "immunohistochemistry", "colorwheel"]):
        add(f"/img/pixel_{k}.png", _pixel_art(_skimage(src)), f"{src.replace('_', ' ')} in pixel art", fmt="PNG")
    for k, src in enumerate(["moon", "horse", "brick", "coffee"]):
        add(f"/img/sketch_{k}.jpg", _sketch(_skimage(src)), f"pencil sketch of a {src}")
    # Near-duplicates of real photos (re-encode, resize, flip) and one exact copy at another URL.
    astro = routes["/img/astronaut_0.jpg"].body
    add("/img/astronaut_reencoded.jpg", Image.open(io.BytesIO(astro)).convert("RGB"),
        "Eileen Collins official portrait (repost)")
    routes["/mirror/astronaut_0.jpg"] = Route(astro)
    rows.append({"path": "/mirror/astronaut_0.jpg", "caption": "Eileen Collins portrait, mirror site"})
    add("/img/cat_small.jpg", _skimage("cat").resize((225, 150)), "Chelsea the cat thumbnail")
    add("/img/cat_flip.jpg", ImageOps.mirror(_skimage("cat")), "Chelsea the cat, mirrored")
    # Images the filters drop: a thumbnail (low resolution), a banner (extreme aspect), a celebrity caption on a
    # picture without a face (no face).
    add("/img/rocket_icon.png", _skimage("rocket").resize((48, 32)), "rocket icon", fmt="PNG")
    add("/img/rocket_banner.jpg", _skimage("rocket").crop((0, 180, 640, 300)).resize((960, 180)), "rocket launch banner")
    add("/img/collins_patch.png", _skimage("colorwheel"), "Eileen Collins mission patch colours", fmt="PNG")
    # A mis-tagged image: a coffee photo captioned with the cat's name lands in the cat's group; if the two groups
    # fall in different splits, the leakage audit finds it next to the coffee photos.
    add("/img/cat_coffee.jpg", _variant(_skimage("coffee"), rng, 3), "Chelsea the cat's morning coffee")
    # Captions that mention no tag: not crawled.
    for k, src in enumerate(["grass", "gravel"]):
        add(f"/img/texture_{k}.jpg", _skimage(src), f"a texture of {src}")
    # The failure zoo, each with a caption that mentions a tag so it is crawled.
    jpeg = routes["/img/cat_0.jpg"].body
    for path, route in broken_routes(jpeg).items():
        routes[path] = route
        rows.append({"path": path, "caption": f"Chelsea the cat ({path.rsplit('/', 1)[1]})"})
    return routes, rows


def write_demo_inputs(folder: Path, base_url: str, rows: list[dict[str, str]]) -> Path:
    """Write LAION-style metadata (two parquet files), the tag list and the curation config; returns the config."""
    folder.mkdir(parents=True, exist_ok=True)
    half = len(rows) // 2
    for i, part in enumerate((rows[:half], rows[half:])):
        pq.write_table(
            pa.table({"URL": [base_url + r["path"] for r in part], "TEXT": [r["caption"] for r in part]}),
            folder / f"metadata_{i}.parquet",
        )
    (folder / "tags.yaml").write_text(yaml.safe_dump(TAGS, allow_unicode=True, sort_keys=False))
    config = {
        "seed": 0,
        "num_shards": 4,
        "sources": [{"kind": "metadata", "paths": ["metadata_*.parquet"], "url_col": "URL", "caption_col": "TEXT"}],
        "crawl": {"tag_list": "tags.yaml", "allow_private_network": True, "timeout": 2, "thread_count": 8,
                  "max_body_bytes": 8 * 1024 * 1024},
        "group": {"min_group_size": 3, "max_group_size": 16,
                  # the subject photos of this sample web are edits of one picture each (crops, flips, recolouring),
                  # which the calibrated near-duplicate threshold (0.94) would collapse: the demo dedups at 0.98 so
                  # that only the planted copies go; mobilenet_v2 sees content, not style: consistency for subjects
                  "dedup_threshold": 0.98, "consistency_categories": ["subject"]},
        # the model steps (offline weights): image embedding for dedup, outliers and the leakage audit; faces for
        # the celebrity (Chelsea the Cat is a cat: no human face to check)
        "embed": {"encoder": "mobilenet_v2", "face_encoder": "dlib", "face_categories": ["celebrity"]},
        "dedup": {"threshold": 0.98},
        "filters": {"min_side": 64, "max_aspect": 4.0},
        "split": {"held_out_groups": 2, "held_in_groups": 2},
        "release": {"name": "mrbench-demo"},
        "executor": {"name": "local", "workers": 2},
    }
    path = folder / "curate.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


DEMO_MODELS = ("reference", "chance", "prompt-only", "easyref", "ip-adapter", "lora")
DEMO_METRICS = "image_sim@mobilenet_v2,face@dlib"  # the two encoders with real offline weights
# The per-group LoRA trains 500 steps by default; the demo trains 25 so that it stays a demo.
# Tiny random models: the LoRA recipe's gradient accumulation (4) would only make the demo 4x slower.
DEMO_MODEL_ARGS = {"lora": {"train_steps": 25, "gradient_accumulation_steps": 1}}


def run_demo_eval(release: Path, out: Path, console: object, models: tuple[str, ...] = DEMO_MODELS) -> dict:
    """Evaluate the demo release: the tiny-profile generators (random weights) plus the reference (ceiling) and
    chance rows, on held-out and held-in, then write the leaderboard. A model that fails is reported and skipped."""
    from mrbench.console import eval_progress, progress_display
    from mrbench.evaluation import build_leaderboard, run_eval

    runs, summaries, failed = [], [], {}
    for split in ("held-out", "held-in"):
        for model in models:
            t0 = time.perf_counter()
            progress, _ = progress_display()  # one bar per run, followed by its summary line
            report, phase = eval_progress(progress, f"eval {model} {split}")
            try:
                with progress:  # type: ignore[attr-defined]
                    result = run_eval(model, f"mrbench:{release}", out / "eval", split=split, profile="tiny",
                                      images_per_prompt=1, metrics=DEMO_METRICS, model_args=DEMO_MODEL_ARGS.get(model),
                                      progress=report, phase=phase)
            except Exception as e:  # noqa: BLE001 - the demo goes on and says what failed
                failed[f"{model}/{split}"] = f"{type(e).__name__}: {e}"
                console.print(f"[red]eval {model} on {split} failed[/]: {e}")  # type: ignore[attr-defined]
                continue
            runs.append(result.run_dir)
            summaries.append(result.summary)
            console.print(f"eval {model:<10} {split:<8} {len(result.rows)} images in "  # type: ignore[attr-defined]
                          f"{time.perf_counter() - t0:.1f} s")
    paths = build_leaderboard(runs, out / "leaderboard") if runs else {}
    return {"runs": [str(r) for r in runs], "summaries": summaries, "failed": failed,
            "leaderboard": {k: str(v) for k, v in paths.items()}}


def run_demo(out: Path, fresh: bool = False, evaluate: bool = True) -> dict:
    """Build the sample web, serve it, curate it into ``out``, print the summary, then (``evaluate``) evaluate the
    release with tiny models and the reference/chance rows and write a leaderboard; returns the summary."""
    from rich.console import Console

    from mrbench.app.summary import print_summary
    from mrbench.console import progress_display
    from mrbench.config import load_config
    from mrbench.curation.config import CurateConfig
    from mrbench.curation.pipeline import run_curation

    console = Console()
    out = Path(out)
    if fresh and out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    routes, rows = build_sample_web()
    # A resumed demo must serve the URLs its run folder already holds: reuse the port of the first run.
    port_file = out / "web" / "port"
    port = int(port_file.read_text()) if port_file.exists() else 0
    try:
        server = SampleWebServer(routes, port)
    except OSError:
        shutil.rmtree(out, ignore_errors=True)  # that port is taken: start over rather than mix two webs
        server = SampleWebServer(routes)
    with server:
        port_file.parent.mkdir(parents=True, exist_ok=True)
        port_file.write_text(str(server.server_address[1]))
        console.print(f"[bold]sample web[/]: {len(rows)} URLs served at {server.base_url}")
        cfg_path = write_demo_inputs(out / "web", server.base_url, rows)
        config = load_config(CurateConfig, cfg_path)
        progress, factory = progress_display()
        with progress:  # type: ignore[attr-defined]
            summary = run_curation(config, out / "run", factory)
    print_summary(summary)
    console.print(f"curation finished in {time.perf_counter() - t0:.1f} s")
    if evaluate:
        summary["eval"] = run_demo_eval(Path(summary["release"]), out, console)
        print_demo_leaderboard(summary["eval"], console)
    console.print(f"demo finished in {time.perf_counter() - t0:.1f} s")
    return summary


def print_demo_leaderboard(result: dict, console: object) -> None:
    """Print the main columns of the demo leaderboard; rows from random-weights models are labelled as such."""
    from rich.markup import escape
    from rich.table import Table

    from mrbench.evaluation.leaderboard import format_estimate

    if not result["runs"]:
        console.print("[red]no eval run finished: no leaderboard[/]")  # type: ignore[attr-defined]
        return
    table = Table(title=escape("demo leaderboard: mean over groups [95% CI]; [random weights] = tiny random model, "
                               "its numbers say nothing about quality"))
    keys = ("image_sim@mobilenet_v2.target", "face@dlib.target", "face@dlib.detected")
    for c in ("split", "model", "groups", "image sim to target\n(mobilenet_v2)", "face sim to target\n(dlib)",
              "face detected"):
        table.add_column(c)
    for s in result["summaries"]:
        flag = " [random weights]" if s["model_random_weights"] else ""
        for split, body in s["splits"].items():
            table.add_row(split, escape(s["model"] + flag), str(body["groups"]),
                          *(escape(format_estimate(body["metrics"].get(k))) for k in keys))
    console.print(table)  # type: ignore[attr-defined]
    console.print(f"leaderboard: {result['leaderboard']['md']} (+ .csv, .html)")  # type: ignore[attr-defined]
