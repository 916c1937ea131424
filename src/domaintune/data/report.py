"""What the data stage did, for people: the end-of-stage table, and data_report.json + .html.

The JSON holds everything the HTML shows (so `domaintune data report` can re-render it); the HTML
embeds its plots as base64 PNGs, so the page is one self-contained file.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

from rich.table import Table

from domaintune.console import console
from domaintune.data.split import SPLITS

REPORT_JSON, REPORT_HTML = "data_report.json", "data_report.html"
EXAMPLES_PER_REASON = 3
# Approximate tokens without a tokenizer (the data stage does not load the model): words, and
# each CJK character on its own.
_TOKEN = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]|\w+")
_LENGTH_BINS = [0, 100, 300, 1_000, 3_000, 10_000, 30_000, 100_000, 300_000, 10**12]


def approx_tokens(text: str) -> int:
    return len(_TOKEN.findall(text))


def print_summary(streams: dict[str, dict[str, Any]], total: dict[str, Any]) -> None:
    table = Table(title="data: documents per stream", title_justify="left")
    table.add_column("stream")
    for split in SPLITS:
        table.add_column(split, justify="right")
    table.add_column("chars", justify="right")
    for name, entry in streams.items():
        table.add_row(name, *(f"{entry['docs'][s]:,}" for s in SPLITS), f"{entry['chars']:,}")
    console.print(table)
    reasons = total["rejected_by_reason"]
    if reasons:
        listed = ", ".join(f"{reason}: {n:,}" for reason, n in reasons.items())
        console.print(f"  [dim]quarantined[/] {listed} [dim](see rejects.jsonl)[/]")
    found = total.get("pii_by_type")
    if found:
        listed = ", ".join(f"{kind}: {n:,}" for kind, n in found.items())
        console.print(f"  [dim]PII redacted[/] {listed} [dim](counts per type in stats.json)[/]")
    hidden = total.get("pii_suppressed_by_type")
    if hidden:
        listed = ", ".join(f"{kind}: {n:,}" for kind, n in hidden.items())
        console.print(f"  [yellow]PII NOT redacted[/] {listed} [dim](hidden by context words: "
                      "data.pii.suppress_context=true)[/]")


class LengthHistogram:
    """Document lengths counted into the report's bins as they stream past."""

    def __init__(self) -> None:
        self.counts: Counter = Counter()

    def add(self, n: int) -> None:
        self.counts[next(j for j in range(1, len(_LENGTH_BINS)) if n < _LENGTH_BINS[j])] += 1

    def to_json(self) -> dict[str, int]:
        labels = [f"<{b:,}" if b < 10**12 else f">={_LENGTH_BINS[-2]:,}" for b in _LENGTH_BINS[1:]]
        return {labels[i - 1]: self.counts[i] for i in range(1, len(_LENGTH_BINS))}


def length_histogram(lengths: list[int]) -> dict[str, int]:
    hist = LengthHistogram()
    for n in lengths:
        hist.add(n)
    return hist.to_json()


def build_report(stats: dict[str, Any], step_rows: list[dict[str, Any]], histograms: dict[str, dict[str, int]],
                 tokens: dict[str, int], clusters: list[dict[str, Any]], rejects: list[dict[str, Any]]) -> dict:
    by_reason: dict[str, list] = {}
    for rej in rejects:
        examples = by_reason.setdefault(rej["reason"], [])
        if len(examples) < EXAMPLES_PER_REASON:
            examples.append(rej)
    pii = stats.get("pii") or {name: c for name, c in stats.get("step_counts", {}).items() if "pii" in name}
    return {"total": stats["total"], "sources": stats["sources"], "streams": stats["streams"],
            "tokens_by_stream": tokens, "steps": step_rows, "length_histograms": histograms, "pii": pii,
            "near_duplicate_clusters": clusters, "example_rejects": by_reason}


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _bar_plot(title: str, series: dict[str, dict[str, int]]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3))
    labels = list(next(iter(series.values()), {}).keys())
    width = 0.8 / max(1, len(series))
    for i, (name, counts) in enumerate(series.items()):
        ax.bar([x + i * width for x in range(len(labels))], [counts.get(k, 0) for k in labels], width, label=name)
    ax.set_xticks([x + width * (len(series) - 1) / 2 for x in range(len(labels))], labels, rotation=30, ha="right")
    ax.set_title(title)
    if len(series) > 1:
        ax.legend(fontsize=8)
    return _png(fig)


def _table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(r.get(c, '')))}</td>" for c in cols) + "</tr>"
                   for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render_html(report: dict[str, Any]) -> str:
    total = report["total"]
    plots = [("Document length (chars) per stream", report["length_histograms"])]
    reasons = {"rejects": total["rejected_by_reason"]} if total["rejected_by_reason"] else {}
    if reasons:
        plots.append(("Quarantined and duplicate records by reason", reasons))
    images = "".join(f'<h3>{html.escape(t)}</h3><img alt="{html.escape(t)}" src="data:image/png;base64,'
                     f'{_bar_plot(t, s)}">' for t, s in plots if s)
    streams = [{"stream": k, **{s: v["docs"].get(s, 0) for s in SPLITS}, "chars": v["chars"],
                "approx_tokens": report["tokens_by_stream"].get(k, 0)} for k, v in report["streams"].items()]
    examples = [{"reason": reason, **ex} for reason, exs in report["example_rejects"].items() for ex in exs]
    clusters = [{**c, "duplicates": ", ".join(c["duplicates"][:5])} for c in report["near_duplicate_clusters"]]
    pii = [{"step": s, "type": t, "count": n} for s, counts in report["pii"].items()
           for t, n in (counts.items() if isinstance(counts, dict) else [("all", counts)])]
    parts = [
        "<h1>domaintune data report</h1>",
        f"<p>{total['records']:,} records read: {total['kept']:,} kept, {total['rejected']:,} rejected, "
        f"{total['duplicates']:,} duplicates.</p>",
        "<h2>Streams</h2>", _table(streams, ["stream", *SPLITS, "chars", "approx_tokens"]),
        "<h2>Sources</h2>", _table(report["sources"], ["name", "stream", "files", "records", "kept", "rejected",
                                                       "duplicates", "chars", "approx_tokens"]),
        "<h2>Steps: what each changed or removed</h2>",
        _table(report["steps"], ["step", "changed", "reason", "removed"]),
        "<h2>Plots</h2>", images,
        "<h2>PII found, by type</h2>", _table(pii, ["step", "type", "count"]) if pii else "<p>no PII step ran</p>",
        "<h2>Largest near-duplicate clusters</h2>", _table(clusters, ["keeper", "size", "duplicates"]),
        "<h2>Example rejects</h2>", _table(examples, ["reason", "file", "line", "detail", "excerpt"]),
    ]
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse;"
             "margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left}")
    return f"<!doctype html><html><head><meta charset='utf-8'><title>data report</title><style>{style}</style>" \
           f"</head><body>{''.join(parts)}</body></html>"


def write_report(stage_dir: Path, report: dict[str, Any]) -> None:
    from domaintune.artifacts import atomic_write_json, atomic_write_text

    atomic_write_json(stage_dir / REPORT_JSON, report)
    atomic_write_text(stage_dir / REPORT_HTML, render_html(report))


def rerender(stage_dir: Path) -> Path:
    """`domaintune data report`: rebuild the HTML from data_report.json."""
    from domaintune.artifacts import atomic_write_text
    from domaintune.errors import DataError

    src = stage_dir / REPORT_JSON
    if not src.is_file():
        raise DataError(f"no {REPORT_JSON} in {stage_dir}: run the data stage first (domaintune data prepare CONFIG)")
    atomic_write_text(stage_dir / REPORT_HTML, render_html(json.loads(src.read_text(encoding="utf-8"))))
    return stage_dir / REPORT_HTML
