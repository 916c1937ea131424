from __future__ import annotations

from domaintune.data.records import Record, Reject
from domaintune.data.steps import TextStep, apply_steps
from domaintune.governance.normalize import NormalizeUnicode, NormalizeWhitespace


def rec(text: str) -> Record:
    return Record("id", text, "s", "src", "f", 1)


def test_steps_recorded_only_when_text_changes():
    r = TextStep(NormalizeWhitespace())(TextStep(NormalizeUnicode("NFKC"))(rec("ＡＢＣ")))
    assert r.text == "ABC" and r.steps == ["normalize.unicode"]
    r = TextStep(NormalizeWhitespace())(TextStep(NormalizeUnicode("NFKC"))(rec("already clean")))
    assert r.steps == []
    r = TextStep(NormalizeWhitespace())(TextStep(NormalizeUnicode("NFKC"))(rec("Ｘ  y ")))
    assert r.text == "X y" and r.steps == ["normalize.unicode", "normalize.whitespace"]


def test_apply_steps_stops_at_the_first_reject_and_names_its_step():
    class Refuse:
        name = "refuse"

        def __call__(self, r: Record) -> Reject:
            return Reject.of(r, "no", "refused")

    class Never:
        name = "never"

        def __call__(self, r: Record) -> Record:
            raise AssertionError("a step after a reject ran")

    heard: list[tuple[str, str]] = []
    out = apply_steps(rec("Ｘ"), [TextStep(NormalizeUnicode("NFKC")), Refuse(), Never()],
                      on_reject=lambda step, rej: heard.append((step.name, rej.reason)))
    assert isinstance(out, Reject) and out.excerpt == "X" and heard == [("refuse", "no")]
    kept = apply_steps(rec("fine"), [TextStep(NormalizeWhitespace())], on_reject=lambda *a: heard.append(a))
    assert isinstance(kept, Record) and len(heard) == 1
