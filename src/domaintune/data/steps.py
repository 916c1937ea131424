"""The step contract: a step takes a record and returns it (maybe changed) or a `Reject`.

Stage 1 is a fixed sequence of such steps over the record stream (see `stage.build_steps`);
later filters (PII, near-dup, quality) are new steps, not new branches in the stage.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from domaintune.data.records import Record, Reject


class Step(Protocol):
    name: str

    def __call__(self, rec: Record) -> Record | Reject: ...


class TextStep:
    """A step that rewrites the text; its name goes into `rec.steps` only if the text changed,
    so a record's lineage lists exactly the steps that touched it."""

    name = "text"

    def transform(self, text: str) -> str:
        raise NotImplementedError

    def __call__(self, rec: Record) -> Record:
        new = self.transform(rec.text)
        if new != rec.text:
            rec.text = new
            rec.steps.append(self.name)
        return rec


def apply_steps(rec: Record, steps: Sequence[Step]) -> Record | Reject:
    """Run the steps in order; the first reject ends the record's journey."""
    item: Record | Reject = rec
    for step in steps:
        item = step(item)
        if isinstance(item, Reject):
            break
    return item
