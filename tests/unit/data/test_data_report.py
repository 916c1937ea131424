from __future__ import annotations

import json
from collections import Counter

from datatrove.data import Document

from domaintune.data.engine import RecordSteps
from domaintune.data.records import Record, Reject
from domaintune.data.report import build_report, length_histogram, render_html


class CountingStep:
    """Stands in for a PII step that counts what it found by type."""

    name = "pii.redact"

    def __init__(self):
        self.counts = Counter()

    def __call__(self, rec):
        self.counts["email"] += rec.text.count("@")
        return Reject.of(rec, "has_secret", "secret found") if "secret" in rec.text else rec


def test_record_steps_remember_the_rejecting_step_and_save_counts(tmp_path):
    step = RecordSteps([CountingStep()], str(tmp_path))
    docs = [Document(t, str(i), metadata={"item": Record(str(i), t, "s", "src", "f", i)})
            for i, t in enumerate(["a@b c@d", "secret"])]
    out = list(step.run(iter(docs), rank=3))
    assert isinstance(out[0].metadata["item"], Record) and out[0].metadata["step"] is None
    assert out[1].metadata["item"].reason == "has_secret" and out[1].metadata["step"] == "pii.redact"
    assert json.loads((tmp_path / "00003.counts.json").read_text()) == {"pii.redact": {"email": 2}}


def test_report_html_embeds_plots_and_lists_pii_by_type():
    stats = {"total": {"records": 3, "kept": 2, "rejected": 1, "duplicates": 0,
                       "rejected_by_reason": {"too_short": 1}},
             "sources": [{"name": "src", "stream": "s", "files": 1, "records": 3, "kept": 2}],
             "streams": {"s": {"docs": {"train": 2, "val": 0, "test": 0}, "chars": 120}},
             "step_counts": {"pii.redact": {"email": 4, "phone": 1}, "other": {"n": 1}}}
    report = build_report(stats, [{"step": "filter.min_chars", "changed": "", "reason": "too_short", "removed": 1}],
                          {"s": length_histogram([50, 150, 5000])}, {"s": 30}, [],
                          [{"reason": "too_short", "file": "f", "line": 1, "detail": "d", "excerpt": "e"}])
    assert report["pii"] == {"pii.redact": {"email": 4, "phone": 1}}
    assert report["length_histograms"]["s"]["<100"] == 1 and report["length_histograms"]["s"]["<10,000"] == 1
    page = render_html(report)
    assert page.count('<img alt=') == 2 and 'src="data:image/png;base64,iVBOR' in page
    assert "<td>email</td><td>4</td>" in page and "too_short" in page
