"""Self-contained HTML pages: inline thumbnails, embedded matplotlib plots, sortable tables.

Shared by the curation report (``mrbench report``) and the leaderboard page. Every page is one file: images are
base64 JPEG thumbnails, plots are base64 PNGs, the table sorting is a few lines of inline JavaScript, so a page can
be mailed, archived or opened from a release folder without anything next to it.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any, Iterable, Sequence

from PIL import Image

esc = html.escape

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:24px 32px;color:#222;max-width:1600px}
h1{margin:0 0 4px}h2{margin:32px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}h3{margin:20px 0 6px}
.note{color:#555;font-size:13px;max-width:1000px}
table{border-collapse:collapse;margin:8px 0 16px}
td,th{border:1px solid #d4d4d4;padding:4px 8px;font-size:13px;vertical-align:top}
th{background:#f3f3f3;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}
table.sortable th{cursor:pointer;user-select:none}
table.sortable th.asc:after{content:' \\25B2';color:#333}
table.sortable th.desc:after{content:' \\25BC';color:#333}
.best{font-weight:bold;background:#e6f4e6}
.near{background:#f1f8ea}
.rw{color:#b00;font-weight:bold}
.real{background:#f6f6ff}
.thumbs{display:flex;flex-wrap:wrap;gap:6px;align-items:flex-start}
figure{margin:0;display:inline-block;text-align:center}
figure img{display:block;border:1px solid #ccc;background:#fafafa}
figcaption{font-size:11px;color:#555;max-width:160px;overflow-wrap:anywhere}
.target img{border:3px solid #2a7}
.card{border:1px solid #ddd;border-radius:6px;padding:8px;margin:0 8px 8px 0;display:inline-block;vertical-align:top}
.muted{color:#888}
.plots img{max-width:100%;border:none}
.bar{display:inline-block;height:12px;background:#5b8def;vertical-align:middle}
"""

# Click a header to sort by it; numbers sort numerically (the first number of a cell: "0.51 [0.4, 0.6]" -> 0.51),
# empty / "-" / "n/a" cells go last either way. The first click sorts ascending, or best first where the header
# names its better direction (data-better='higher' / 'lower', the metric's registered direction); a click flips.
SORT_JS = """
<script>
document.querySelectorAll('table.sortable').forEach(function(t){
  t.querySelectorAll('th').forEach(function(th,col){
    th.addEventListener('click',function(){
      var asc=th.classList.contains('asc')?false:th.classList.contains('desc')?true:th.getAttribute('data-better')!=='higher';
      t.querySelectorAll('th').forEach(function(h){h.classList.remove('asc','desc');});
      th.classList.add(asc?'asc':'desc');
      var body=t.tBodies[0],rows=Array.prototype.slice.call(body.rows);
      function key(r){var c=r.cells[col];var v=c.getAttribute('data-v');if(v===null)v=c.textContent.trim();
        var m=/^-?\\d+(\\.\\d+)?(e-?\\d+)?/.exec(v);return m?parseFloat(m[0]):(v===''||v==='-'||v==='n/a'?null:v);}
      rows.sort(function(a,b){var x=key(a),y=key(b);if(x===null)return 1;if(y===null)return -1;
        var r=(typeof x==='number'&&typeof y==='number')?x-y:String(x).localeCompare(String(y));return asc?r:-r;});
      rows.forEach(function(r){body.appendChild(r);});
    });
  });
});
</script>
"""


def thumb_uri(image: Image.Image | bytes, size: int = 128, quality: int = 80) -> str:
    """A ``data:`` URI of a JPEG thumbnail (longest side ``size``) of a PIL image or encoded image bytes."""
    if isinstance(image, (bytes, bytearray)):
        image = Image.open(io.BytesIO(image))
        image.draft("RGB", (size, size))  # JPEG: decode at a reduced scale (much faster for large photos)
    return "data:image/jpeg;base64," + base64.b64encode(jpeg_thumbnail(image, size, quality)).decode()


def jpeg_thumbnail(image: Image.Image, size: int = 128, quality: int = 80) -> bytes:
    """A JPEG thumbnail (longest side ``size``, RGB) of a decoded image; ``image`` itself is left as it is."""
    im = image.convert("RGB")
    im.thumbnail((size, size))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def try_thumb(data: bytes | None, size: int) -> str | None:
    """:func:`thumb_uri` of image bytes, or None when there are none or they do not decode."""
    if not data:
        return None
    try:
        return thumb_uri(data, size)
    except Exception:  # noqa: BLE001 - a reject can be any bytes at all: no thumbnail rather than no page
        return None


def figure(uri: str | None, caption: str = "", title: str = "", cls: str = "", size: int = 128) -> str:
    """An image with a caption; a grey box with the caption when there is no image."""
    c = f" class='{cls}'" if cls else ""
    t = f" title='{esc(title)}'" if title else ""
    if uri is None:
        img = (f"<div style='width:{size}px;height:{size // 2}px;border:1px dashed #bbb;color:#999;font-size:11px;"
               f"display:flex;align-items:center;justify-content:center'>no image</div>")
    else:
        img = f"<img src='{uri}' alt='{esc(caption)}'>"
    return f"<figure{c}{t}>{img}<figcaption>{esc(caption)}</figcaption></figure>"


def plot_uri(fig: Any) -> str:
    """A ``data:`` URI of a matplotlib figure as PNG (the figure is closed)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def new_figure(width: float = 6.0, height: float = 3.2) -> tuple[Any, Any]:
    """A matplotlib figure and axes on the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height))
    ax.spines[["top", "right"]].set_visible(False)
    return fig, ax


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], sortable: bool = True, numeric: Sequence[int] = ()) -> str:
    """An HTML table; cells are escaped unless they are :class:`Raw`; ``numeric`` columns are right-aligned."""
    cls = " class='sortable'" if sortable else ""
    out = [f"<table{cls}><thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in headers) + "</tr></thead><tbody>"]
    for row in rows:
        cells = []
        for k, v in enumerate(row):
            attr = " class='num'" if k in numeric else ""
            cells.append(f"<td{attr}>{v.html if isinstance(v, Raw) else esc(str(v))}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


class Raw:
    """Markup that :func:`table` inserts as is."""

    def __init__(self, html_text: str) -> None:
        self.html = html_text


def page(title: str, body: Sequence[str], subtitle: str = "") -> str:
    """A whole self-contained page."""
    sub = f"<p class='note'>{subtitle}</p>" if subtitle else ""
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width,initial-scale=1'>"
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body><h1>{esc(title)}</h1>{sub}\n"
            + "\n".join(body) + SORT_JS + "</body></html>\n")
