"""Chat transcripts: CSV or JSONL rows, one per turn, grouped into one document per conversation.

Each row names its conversation (`conversation_field`), speaker (`speaker_field`) and position
(`turn_field`); the text field holds the utterance. A conversation becomes "speaker: utterance"
lines in turn order, so the model sees who said what. Bad rows are quarantined like any other;
a conversation whose rows are all bad produces no document.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from domaintune.data.records import Item, Record, Reject, SourceContext
from domaintune.data.text_readers import read_csv, read_jsonl


def _turn_key(value: Any, position: int) -> tuple[int, float, str]:
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, float(position), str(value))


def _rows(path: Path, ctx: SourceContext) -> Iterator[Item]:
    # id_field is the conversation's, not the row's: rows get derived ids.
    row_ctx = replace(ctx, id_field=None)
    return read_csv(path, row_ctx) if path.suffix.lower() == ".csv" else read_jsonl(path, row_ctx)


def read_chat(path: Path, ctx: SourceContext) -> Iterator[Item]:
    conversations: dict[str, list[tuple[tuple, Record]]] = {}
    for position, item in enumerate(_rows(path, ctx)):
        if isinstance(item, Reject):
            yield item
            continue
        conv = item.meta.get(ctx.conversation_field)
        if conv is None or conv == "":
            yield Reject.of(item, "missing_conversation_field",
                            f"field '{ctx.conversation_field}' is missing; set conversation_field in "
                            f"{ctx.key} to the field that groups turns")
            continue
        turn = item.meta.get(ctx.turn_field) if ctx.turn_field else None
        conversations.setdefault(str(conv), []).append((_turn_key(turn, position), item))
    for conv, turns in conversations.items():
        yield _conversation(path, ctx, conv, [rec for _, rec in sorted(turns, key=lambda t: t[0])])


def _conversation(path: Path, ctx: SourceContext, conv: str, turns: list[Record]) -> Record:
    speakers = [str(t.meta.get(ctx.speaker_field, "unknown")) for t in turns]
    text = "\n".join(f"{who}: {t.text}" for who, t in zip(speakers, turns))
    first_line = min(t.line for t in turns if t.line is not None)
    meta = {"conversation": conv, "turns": len(turns), "speakers": sorted(set(speakers))}
    return Record(f"{ctx.derived_id(path, None)}#{conv}", text, ctx.stream, ctx.name, str(path),
                  first_line, ["extract.chat"], meta)
