"""The step contract: a step takes a record and returns it (maybe changed) or a `Reject`.

Stage 1 is a fixed sequence of such steps over the record stream (see `stage.build_steps`);
later filters (PII, near-dup, quality) are new steps, not new branches in the stage.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from domaintune.data.records import Record, Reject
from domaintune.governance.normalize import Transform


class Step(Protocol):
    name: str

    def __call__(self, rec: Record) -> Record | Reject: ...


class TextStep:
    """A record step around a text transform (`governance.normalize`); its name goes into
    `rec.steps` only if the text changed, so a record's lineage lists exactly the steps that touched it."""

    def __init__(self, transform: Transform):
        self.inner, self.name = transform, transform.name

    def __call__(self, rec: Record) -> Record:
        new = self.inner.transform(rec.text)
        if new != rec.text:
            rec.text = new
            rec.steps.append(self.name)
        return rec


def apply_steps(rec: Record, steps: Sequence[Step],
                on_reject: Callable[[Step, Reject], None] | None = None) -> Record | Reject:
    """Run the steps in order; the first reject ends the record's journey (`on_reject` hears which
    step refused it)."""
    item: Record | Reject = rec
    for step in steps:
        item = step(item)
        if isinstance(item, Reject):
            if on_reject is not None:
                on_reject(step, item)
            break
    return item
