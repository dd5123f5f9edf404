"""The dataset card renders web text (captions) and the release name as text: no payload runs in a renderer that
does not sanitise (markdown-it with raw HTML on, as many do), and none reaches the page in headless Chromium."""

from __future__ import annotations

from html.parser import HTMLParser

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from mrbench.curation.config import CurateConfig, ReleaseConfig
from mrbench.curation.release import finalize_release
from mrbench.curation.release import RELEASE_PARTS
from test_release_card import NUM_SHARDS, card_html, make_run

PAYLOADS = [
    "<img src=x onerror=\"document.body.dataset.pwned='img'\">",
    "<script>document.body.dataset.pwned='script'</script>",
    "<svg onload=\"document.body.dataset.pwned='svg'\"></svg>",
    "[click me](javascript:document.body.dataset.pwned='link') ![x](javascript:1) <http://evil.example>",
    "**bold** `code` # not a heading | not a cell \\",
]
NAME = "<img src=x onerror=\"document.body.dataset.pwned='name'\"> release"


class _Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, dict]] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.found.append((tag, dict(attrs)))


@pytest.fixture()
def hostile_release(tmp_path):
    config = CurateConfig(num_shards=NUM_SHARDS, release=ReleaseConfig(name=NAME, license="cc-by-4.0"))
    run = make_run(tmp_path, config)
    for k, f in enumerate(sorted((run / RELEASE_PARTS).glob("*.parquet"))):
        t = pq.read_table(f)
        caps = [PAYLOADS[(k + i) % len(PAYLOADS)] for i in range(t.num_rows)]
        t = t.set_column(t.schema.get_field_index("caption"), "caption", pc.cast(caps, t.schema.field("caption").type))
        pq.write_table(t, f)
    finalize_release(config, run)
    return run / "release"


def test_captions_and_release_name_render_as_text(hostile_release):
    page = card_html(hostile_release)
    parser = _Elements()
    parser.feed(page)
    tags = [tag for tag, _ in parser.found]
    assert tags.count("script") == 1  # the test page's own image counter only
    assert "svg" not in tags
    assert not [a for _, attrs in parser.found for a in attrs if a.startswith("on")]
    assert not [attrs for tag, attrs in parser.found if tag == "img" and attrs.get("src") in ("x", "javascript:1")]
    assert not [attrs for tag, attrs in parser.found if tag == "a" and "javascript" in attrs.get("href", "")]
    text = (hostile_release / "README.md").read_text()
    assert text.count("\n# ") == 1  # the caption's "# " did not start a heading
    # the reader still sees what the captions say
    assert "&lt;img src=x onerror=" in page and "[click me](javascript:" in page


def test_payloads_do_not_run_in_chromium(hostile_release, tmp_path):
    from pagecheck import CHROMIUM, load_page

    if CHROMIUM is None:
        pytest.skip("headless Chromium not installed (Debian: apt-get install chromium); card page not rendered")
    page = tmp_path / "card.html"
    page.write_text(card_html(hostile_release))
    dom, errors = load_page(page)
    assert "data-pwned" not in dom
    assert "onerror=" in dom  # shown as text
