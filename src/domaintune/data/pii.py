"""The data stage's PII step: redact each record with `governance.pii`, or reject it (action=drop).

Counts per type go to `rec.meta["pii_redacted"]` (never the values), which the stage stats add up.
"""

from __future__ import annotations

from domaintune.config import PiiConfig
from domaintune.data.records import Record, Reject
from domaintune.governance.pii import Redactor

META_KEY = "pii_redacted"


class RedactPii:
    """The data-stage step: redact in place (mask/hash) or reject the document (drop)."""

    name = "pii.redact"

    def __init__(self, cfg: PiiConfig):
        # With action=drop the redactor masks: the drop reject's excerpt must not carry raw values either.
        self.redactor = Redactor.from_config(cfg, key="data.pii")
        self.drop = cfg.action == "drop"

    def __call__(self, rec: Record) -> Record | Reject:
        rec.text, counts = self.redactor.redact_value(rec.text)
        # Fields carried over from the source row (author, contact...) reach the split files too.
        rec.meta, meta_counts = self.redactor.redact_value(rec.meta)
        counts.update(meta_counts)
        if not counts:
            return rec
        if self.drop:
            found = ", ".join(f"{k}: {n}" for k, n in sorted(counts.items()))
            return Reject.of(rec, "pii.drop", f"contains personal data ({found}) and data.pii.action=drop; "
                                              "use mask or hash to keep such documents redacted")
        rec.meta[META_KEY] = dict(sorted(counts.items()))
        rec.steps.append(self.name)
        return rec
