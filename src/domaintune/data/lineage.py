"""Lineage: where every record came from, what changed it, and where it went.

`lineage.jsonl` holds one line per record that got an id (kept, rejected by a step, or dropped as
a duplicate): source file and line, hashes of the original and final text, the steps that changed
it, and its outcome (stream + split, or reason). Texts are not copied: `trace` re-reads the
original from the source at the recorded location, checks its hash, and replays the per-record
steps to show each change; that keeps lineage small and exact (the replay must reproduce the
recorded final hash, or trace says so).
"""

from __future__ import annotations

import difflib
import heapq
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from domaintune.data.engine import text_sha
from domaintune.data.merge import Merged
from domaintune.data.readers import read_file
from domaintune.data.records import Record, Reject, SourceContext
from domaintune.data.steps import Step
from domaintune.data.writers import JsonlWriter
from domaintune.errors import DataError

LINEAGE = "lineage.jsonl"


def _kept_entries(merged: Merged) -> Iterator[tuple[tuple, dict[str, Any]]]:
    for pos, rid, path, line, source, orig, sha, steps, stream, split, near in merged.kept():
        yield pos, {"id": rid, "source_index": pos[0], "path": path, "line": line, "source": source,
                    "orig": orig, "final": sha, "steps": steps, "outcome": "kept", "stream": stream,
                    "split": split, "near_duplicates": near}


def _dropped_entries(merged: Merged) -> Iterator[tuple[tuple, dict[str, Any]]]:
    for d in merged.dropped():
        if d.id is None:
            continue  # unparseable rows have no id; rejects.jsonl has them by file and line
        rej = d.reject
        yield d.pos, {"id": d.id, "source_index": d.pos[0], "path": rej.file, "line": rej.line,
                      "source": rej.source, "orig": d.orig,
                      "outcome": "duplicate" if rej.reason.endswith("duplicate") else "rejected",
                      "reason": rej.reason, "detail": rej.detail, "step": d.step,
                      "duplicate_of": merged.duplicate_of(d.id)}


def write_lineage(path: Path, merged: Merged) -> None:
    # Kept and dropped records both come in reading order: merging the two streams writes the entries in
    # position order without holding any of them.
    with JsonlWriter(path) as out:
        for _, entry in heapq.merge(_kept_entries(merged), _dropped_entries(merged), key=lambda e: e[0]):
            out.write(entry)


def find_entry(path: Path, record_id: str) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(f"no lineage at {path}: run the data stage first (domaintune data prepare CONFIG)")
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if f'"id": {json.dumps(record_id, ensure_ascii=False)},' in line:
                entry = json.loads(line)
                if entry["id"] == record_id:
                    return entry
    raise DataError(f"record '{record_id}' is not in {path}; ids are listed there and in the split files "
                    "(rows that could not be parsed have no id: see rejects.jsonl)")


def reread(entry: dict[str, Any], ctx: SourceContext) -> Record:
    """The record as the reader produced it, before any step."""
    for item in read_file(Path(entry["path"]), ctx):
        if isinstance(item, Record) and item.id == entry["id"]:
            return item
    raise DataError(f"record '{entry['id']}' is no longer in {entry['path']} (line {entry['line']}); "
                    "the source changed since the run: re-run the data stage")


def replay(rec: Record, steps: list[Step]) -> tuple[list[dict[str, Any]], str]:
    """Each step that changed the text or rejected the record (with a unified diff), and the
    final text."""
    changes = []
    for step in steps:
        before = rec.text
        item = step(rec)
        if isinstance(item, Reject):
            changes.append({"step": step.name, "rejected": item.reason, "detail": item.detail})
            break
        if item.text != before:
            diff = difflib.unified_diff(before.splitlines(), item.text.splitlines(), "before", step.name,
                                        lineterm="", n=1)
            changes.append({"step": step.name, "diff": "\n".join(diff)})
        rec = item
    return changes, rec.text


def trace(entry: dict[str, Any], ctx: SourceContext, steps: list[Step]) -> dict[str, Any]:
    rec = reread(entry, ctx)
    original = rec.text
    source_ok = text_sha(original) == entry["orig"]
    changes, final = replay(Record(rec.id, rec.text, rec.stream, rec.source_name, rec.path, rec.line,
                                   list(rec.steps), dict(rec.meta)), steps)
    replay_ok = entry.get("final") in (None, text_sha(final))
    return {"entry": entry, "original": original, "source_unchanged": source_ok, "replay_matches": replay_ok,
            "reader_steps": rec.steps, "changes": changes}


def print_trace(result: dict[str, Any], max_chars: int = 2000) -> None:
    from rich.markup import escape

    from domaintune.console import console

    entry = result["entry"]
    where = f"{entry['path']}" + (f":{entry['line']}" if entry["line"] is not None else "")
    console.print(f"[bold]{escape(entry['id'])}[/]  from {escape(where)} (source {escape(entry['source'])})")
    if not result["source_unchanged"]:
        console.print("[yellow]warning:[/] the source text changed since the run; showing the current file")
    original = result["original"]
    cut = f"\n… ({len(original) - max_chars:,} more chars)" if len(original) > max_chars else ""
    console.rule("original")
    console.print(escape(original[:max_chars] + cut))
    for step in result["reader_steps"]:
        console.print(f"[dim]reader:[/] {escape(step)}")
    for change in result["changes"]:
        console.rule(change["step"])
        if "rejected" in change:
            console.print(f"[red]rejected[/] {change['rejected']}: {escape(change['detail'])}")
        else:
            console.print(escape(change["diff"]))
    if not result["changes"]:
        console.print("[dim]no step changed the text[/]")
    if not result["replay_matches"]:
        console.print("[yellow]warning:[/] replaying the steps now gives a different text than the run did "
                      "(settings or code changed since); re-run the data stage")
    console.rule("outcome")
    if entry["outcome"] == "kept":
        dups = f"; {entry['near_duplicates']} near-duplicate(s) dropped in its favour" if entry["near_duplicates"] \
            else ""
        console.print(f"[green]kept[/] in stream '{entry['stream']}', split '{entry['split']}'{dups}")
    else:
        of = f" of '{entry['duplicate_of']}'" if entry.get("duplicate_of") else ""
        console.print(f"[red]{entry['outcome']}[/]{escape(of)} by {entry['step'] or 'reader'}: {entry['reason']} — "
                      f"{escape(entry['detail'])}")
