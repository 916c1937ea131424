"""The end-of-stage table: documents per stream and split, and rejects by reason."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from domaintune.console import console
from domaintune.data.split import SPLITS


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
