"""Grounded-answer SFT data from the knowledge base's own documents (retrieval-aware fine-tuning).

`domaintune kb sft-data CFG --out FILE` turns the question/answer pairs the enterprise already wrote
(FAQ sheets, Q&A sections: `Q: … / A: …`, `问：… / 答：…`) into conversations in exactly the prompt the
server sends with retrieval (kb.answer.with_context): the pair's question, the sources the index
returns for it, and as the target the written answer with the citation markers the answer filter
checks (the source that states its numbers). A small model fine-tuned on these learns to read the
numbered sources and copy the value with its marker, which a prompt alone does not teach it.

What goes in, and why:
- only the data stage's governed **train** split of the KB's `stream:` sources (PII masked, deduped;
  val/test stay held out);
- only documents labelled `public`, and retrieval as a principal that reads only `public`
  documents: what lands in a model's weights can reach anyone who may query the model;
- only answers whose numbers a shown source states (the target is grounded in what the model sees);
- no pair that shares an n-gram with the KB's labelled eval questions (`kb.eval_set`), so `kb eval`
  keeps measuring questions the model was not trained on; every drop is counted in the report.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from domaintune.artifacts import RunDir, atomic_write, atomic_write_json
from domaintune.config.kb import KBConfig
from domaintune.errors import ConfigError
from domaintune.kb.acl import PUBLIC
from domaintune.kb.answer import AnswerFilter, with_context
from domaintune.kb.sources import Document, governed_documents

# a pair: "Q: question" then, on the next line, "A: answer" (English or Chinese labels, either colon)
PAIR = re.compile(r"^[ \t]*(?:Q|问)[ \t]*[:：][ \t]*(?P<q>\S[^\n]*?)[ \t]*\n[ \t]*(?:A|答)[ \t]*[:：][ \t]*"
                  r"(?P<a>\S[^\n]*?)[ \t]*$", re.MULTILINE)
_WORDS = re.compile(r"[a-z0-9]+|[\u3400-\u9fff]")  # words; each CJK character on its own


class PublicReader:
    """The principal the data is built as: reads `public` documents only (not the open principal)."""

    id, key_id, user, groups, scopes = "kb-sft-data", None, None, frozenset(), {}


@dataclass
class Report:
    documents: int = 0
    pairs: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: {"not_public": 0, "eval_overlap": 0,
                                                              "not_in_sources": 0, "duplicate": 0})

    def to_json(self) -> dict:
        return {"documents": self.documents, "pairs": self.pairs, "kept": self.kept, "dropped": self.dropped}


def pairs_in(text: str) -> list[tuple[str, str]]:
    """The (question, answer) pairs a document writes as Q:/A: (问:/答:) lines."""
    return [(m.group("q"), m.group("a")) for m in PAIR.finditer(text)]


def _grams(text: str, n: int) -> set[tuple[str, ...]]:
    words = _WORDS.findall(text.lower())
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)} or ({tuple(words)} if words else set())


class EvalOverlap:
    """n-grams of the labelled eval questions; a training question sharing one is dropped."""

    def __init__(self, questions: list[str], n: int):
        self.n = n
        self.grams = set().union(*(_grams(q, n) for q in questions)) if questions else set()

    def hits(self, text: str) -> bool:
        return not self.grams.isdisjoint(_grams(text, self.n))


def _eval_questions(kb_cfg: KBConfig) -> list[str]:
    """The questions of `kb.eval_set` (none set: nothing to keep out); a set that is named but missing
    is an error, since building without it would silently train on the evaluation's questions."""
    from domaintune.kb.evaluate import load_questions

    if kb_cfg.eval_set is None:
        return []
    if not Path(kb_cfg.eval_set).is_file():
        raise ConfigError([f"kb.eval_set: file not found: {kb_cfg.eval_set} (kb sft-data keeps its questions out "
                           f"of the training data; fix the path or remove the key)"])
    return [q["question"] for q in load_questions(Path(kb_cfg.eval_set))]


def conversations(kb, documents: list[Document], overlap: EvalOverlap, report: Report, limit: int | None = None):
    """Yield one served-format conversation per usable pair (see the module docstring)."""
    seen: set[str] = set()
    for doc in documents:
        report.documents += 1
        for question, reply in pairs_in(doc.text):
            report.pairs += 1
            if PUBLIC not in doc.labels:
                report.dropped["not_public"] += 1
                continue
            if overlap.hits(question):
                report.dropped["eval_overlap"] += 1
                continue
            if question in seen:
                report.dropped["duplicate"] += 1
                continue
            shown = kb.passages(kb.search(PublicReader(), question), question)
            filt = AnswerFilter([p.source(kb.name) for p in shown])
            target = filt.filter(reply)
            if not filt.used:  # no shown source states the answer's numbers (or it states none)
                report.dropped["not_in_sources"] += 1
                continue
            seen.add(question)
            report.kept += 1
            messages = with_context([{"role": "user", "content": question}], shown)
            yield {"id": f"{doc.id}:{report.pairs}", "document_id": doc.id,
                   "messages": [*messages, {"role": "assistant", "content": target}]}
            if limit is not None and report.kept >= limit:
                return


def write_sft_data(cfg, kb, out: Path, *, limit: int | None = None, overlap_n: int = 8) -> Report:
    """Write the conversations to `out` (JSONL, the `openai` messages format `sft.data` reads) and
    the report next to it (`<out>.report.json`)."""
    from domaintune.kb.service import kb_section

    kb_cfg = kb_section(cfg)
    documents = governed_documents(kb_cfg, RunDir(cfg.run_path), splits=("train",))
    report = Report()
    overlap = EvalOverlap(_eval_questions(kb_cfg), overlap_n)
    atomic_write(out, lambda fh: fh.writelines((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")
                                               for row in conversations(kb, documents, overlap, report, limit)))
    atomic_write_json(out.with_name(out.name + ".report.json"), report.to_json())
    return report
