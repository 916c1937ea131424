"""The HTML reader: one document per page, either its main content (`html: main`, the default) or all
its visible text (`html: all`).

Main content is what trafilatura finds, called through datatrove's `Trafilatura` extractor (the
step FineWeb-style pipelines use; no comments, deduplicate, but not favour_precision, which drops
the headings and short lists of small pages): navigation, footers, cookie banners and "related"
boxes are left out, and blocks come out one per line (tables as `| a | b |` rows, list items as
`- item`). A page where it finds no main content falls back to all visible text, marked
`extract.html.fallback` in the record's steps, so that no page disappears without a trace; the
quality filters then judge it like any other document.

`html: all` keeps every visible block, one per line, table cells apart.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from domaintune.data.office import unreadable
from domaintune.data.records import Item, SourceContext
from domaintune.data.text_readers import document, whole_text_reader
from domaintune.extras import require

# Block-level tags end a line in the extracted text, so paragraphs, list items and page regions
# ("Home | Login" in a <nav> before the article) never run into each other.
_HTML_BLOCKS = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "blockquote",
                "section", "article", "table", "ul", "ol", "dd", "dt", "header", "footer", "title",
                "nav", "main", "aside", "form", "figure", "figcaption", "address", "dl", "hr", "details",
                "summary", "caption", "fieldset", "legend"}
_HTML_CELLS = {"td", "th"}
_HTML_DROP = ("script", "style", "noscript", "template", "svg", "iframe")
MODES = ("main", "all")


def html_to_text(html: str) -> str:
    """Visible text of a page: scripts/styles dropped, one line per block element, cells tab-separated."""
    require("lxml", "office", "format: html")
    import lxml.html
    from lxml import etree

    root = lxml.html.document_fromstring(html)
    etree.strip_elements(root, *_HTML_DROP, etree.Comment, with_tail=False)
    for el in root.iter():
        if not isinstance(el.tag, str):
            continue
        tag = el.tag.lower()
        if tag in _HTML_BLOCKS:
            el.tail = "\n" + (el.tail or "")
        elif tag in _HTML_CELLS and el.getnext() is not None:
            el.tail = "\t" + (el.tail or "")
    return root.text_content()


@lru_cache(maxsize=1)
def _extractor():
    require("trafilatura", "office", "format: html with html: main (main-content extraction)")
    from datatrove.pipeline.extractors import Trafilatura

    return Trafilatura(favour_precision=False, deduplicate=True)


def main_text(html: str) -> str | None:
    """The page's main content, or None when trafilatura finds none."""
    text = _extractor().extract(html)
    return text if text and text.strip() else None


def _html_document(path: Path, ctx: SourceContext, raw: str, steps: list[str]) -> Item:
    """The page's main content (html: main) or visible text (html: all) as one document."""
    if not raw.strip():
        return document(path, ctx, "", [*steps, f"extract.html.{ctx.html}"])
    if ctx.html == "main":
        _extractor()  # a missing trafilatura is a setup error (ImportError naming the package), not a bad page
    try:
        text = main_text(raw) if ctx.html == "main" else None
        step = f"extract.html.{ctx.html}"
        if text is None:
            text = html_to_text(raw)
            step = "extract.html.fallback" if ctx.html == "main" else step
    except Exception as exc:  # lxml raises several types for broken markup
        return unreadable(path, ctx, "html", exc)
    return document(path, ctx, text, [*steps, step])


read_html = whole_text_reader(_html_document)
