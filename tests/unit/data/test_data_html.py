"""HTML main-content extraction (html: main, trafilatura via datatrove) against all visible text."""

from __future__ import annotations

import pytest

from domaintune.config import SourceConfig
from domaintune.data.html import html_to_text
from domaintune.data.readers import read_file

ARTICLE = [
    "A cross-border guarantee lets an exporter's bank promise payment to a foreign buyer if the exporter "
    "fails to deliver the goods under the contract.",
    "The guarantee is issued under the Uniform Rules for Demand Guarantees, and the bank charges a fee that "
    "depends on the amount and the term of the guarantee.",
    "Applications are reviewed within five working days after all documents have been received by the "
    "trade finance desk.",
]
PAGE = f"""<!DOCTYPE html><html lang="en"><head><title>Cross-border guarantees | Harbor Bank</title>
<script>var tracking = 1;</script></head><body>
<div id="cookie-banner" class="cookie-consent">We use cookies to improve your experience.
<button>Accept all cookies</button></div>
<header><nav class="menu"><a href="/">Home</a> | <a href="/login">Login</a></nav></header><main><article>
<h1>Cross-border guarantees</h1><p>{ARTICLE[0]}</p><p>{ARTICLE[1]}</p>
<h2>Fees</h2><table><tr><th>Term</th><th>Fee</th></tr><tr><td>Up to 1 year</td><td>0.5%</td></tr>
<tr><td>1 to 3 years</td><td>0.8%</td></tr></table>
<h2>What you need</h2><ul><li>The signed sales contract</li><li>Two years of audited accounts</li></ul>
<p>{ARTICLE[2]}</p></article></main>
<aside class="related"><a href="/a">Related: letters of credit</a></aside>
<footer><p>© Harbor Bank 2026. All rights reserved.</p><a href="/privacy">Privacy</a></footer></body></html>"""
BOILERPLATE = ("Home", "Login", "cookies", "© Harbor Bank", "Privacy", "Related: letters", "tracking")


def read_one(tmp_path, make_ctx, html: str, mode: str | None = None):
    path = tmp_path / "page.html"
    path.write_text(html, encoding="utf-8")
    (rec,) = read_file(path, make_ctx() if mode is None else make_ctx(html=mode))
    return rec


def test_main_content_drops_navigation_footer_and_cookie_banner(tmp_path, make_ctx):
    rec = read_one(tmp_path, make_ctx, PAGE)  # html: main is the default
    lines = rec.text.splitlines()
    for paragraph in ARTICLE:
        assert paragraph in lines  # each block on its own line: nothing glued to its neighbour
    for junk in BOILERPLATE:
        assert junk not in rec.text, junk
    assert "| Term | Fee |" in rec.text and "| Up to 1 year | 0.5% |" in rec.text  # table rows, cells apart
    assert "- The signed sales contract" in lines and "- Two years of audited accounts" in lines
    assert rec.steps == ["extract.html.main"]


def test_all_mode_keeps_every_block_on_its_own_line(tmp_path, make_ctx):
    rec = read_one(tmp_path, make_ctx, PAGE, "all")
    lines = [line.strip() for line in rec.text.splitlines()]
    assert "Home | Login" in lines  # kept, but never glued to the heading after it
    assert "Cross-border guarantees" in lines and "© Harbor Bank 2026. All rights reserved." in lines
    assert "Term\tFee" in lines and "Up to 1 year\t0.5%" in lines
    assert rec.steps == ["extract.html.all"]


def test_glued_regions_get_a_separator_in_all_mode():
    html = "<body><nav><a>Home</a> | <a>Login</a></nav><main><p>Cross-border guarantees</p></main></body>"
    assert "Home | LoginCross" not in html_to_text(html)
    assert [s.strip() for s in html_to_text(html).splitlines() if s.strip()] == [
        "Home | Login", "Cross-border guarantees"]


def test_page_without_main_content_falls_back_to_all_text(tmp_path, make_ctx, monkeypatch):
    import domaintune.data.html as html_mod

    monkeypatch.setattr(html_mod, "main_text", lambda raw: None)
    rec = read_one(tmp_path, make_ctx, "<html><body><p>Only a line.</p></body></html>")
    assert rec.text.strip() == "Only a line." and rec.steps == ["extract.html.fallback"]


def test_source_html_setting_is_validated_and_reaches_the_reader():
    assert SourceConfig(path="p", stream="s").html == "main"
    assert SourceConfig(path="p", stream="s", html="all").html == "all"
    with pytest.raises(ValueError, match="html"):
        SourceConfig(path="p", stream="s", html="visible")
