#!/usr/bin/env python
"""Write kb_questions.jsonl: the quickstart's labelled retrieval set (English and Chinese).

    python examples/quickstart/eval_tasks/make_kb_questions.py [--corpus DIR]

Every question comes from questions.yaml (a fact of ../corpus_tables/bank_facts.yaml, asked in
English and Chinese), asked in five phrasings. The expected answer is the exact value as the
documents write it ("$35", "35美元", "3.75%", "1.5%": a fact the corpus templates render with
`|pctn` is written without trailing zeros, as there). `documents` are the ids of the corpus
documents in the question's language that state that value as a whole number ("$35" is not in
"$350"; the rule kb eval applies, domaintune.kb.evaluate.holds; the corpus is rebuilt with
build_corpus.py's default seed when --corpus is not given); questions no document answers are dropped.
Same inputs, same file.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from make_domain_task import FACTS, lookup, write_value  # noqa: E402

from domaintune.kb.evaluate import holds  # noqa: E402

TEMPLATES = HERE.parent / "corpus_tables"


def corpus_filters() -> dict[str, set[str]]:
    """fact -> the format filters the corpus templates write it with ({fees.fx_margin.standard|pctn})."""
    out: dict[str, set[str]] = {}
    for f in TEMPLATES.glob("templates_*.yaml"):
        for fact, filt in re.findall(r"\{([a-z_.0-9]+)\|([a-z]+)\}", f.read_text(encoding="utf-8")):
            out.setdefault(fact, set()).add(filt)
    return out


def corpus_value(facts: dict, entry: dict, lang: str, filters: dict[str, set[str]]) -> str:
    """The answer as the documents write it: make_domain_task's form, except for facts the corpus
    renders with `pctn` (1.5%, where the domain task's options say 1.50%)."""
    value = lookup(facts, entry["fact"])
    if entry["unit"] == "pct" and filters.get(entry["fact"]) == {"pctn"} and isinstance(value, float):
        return f"{value:g}%"
    return write_value(value, entry["unit"], lang)

FRAMES = {
    "en": ["{q}", "Quick question: {q}", "{q} Please give the exact figure.", "I bank with Harborview. {q}",
           "Could you check the documents for me? {q}", "{q} (a one-line answer is fine)"],
    "zh": ["{q}", "请问，{q}", "{q}请给出准确数字。", "我是海港银行的客户。{q}", "麻烦帮我查一下资料：{q}",
           "{q}（请简短回答）"],
}


def corpus_docs(corpus: Path | None) -> list[dict]:
    if corpus is None:
        tmp = Path(tempfile.mkdtemp(prefix="kbq-"))
        subprocess.run([sys.executable, str(HERE.parent / "build_corpus.py"), "--out", str(tmp)], check=True,
                       stdout=subprocess.DEVNULL)
        corpus = tmp
    with open(corpus / "domain" / "bank_docs.jsonl", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", type=Path, default=None, help="a build_corpus.py output folder")
    args = ap.parse_args()
    facts = yaml.safe_load(FACTS.read_text(encoding="utf-8"))
    entries = yaml.safe_load((HERE / "questions.yaml").read_text(encoding="utf-8"))
    docs = corpus_docs(args.corpus)
    filters = corpus_filters()
    rows = []
    for lang in ("en", "zh"):
        for entry in entries:
            answer = corpus_value(facts, entry, lang, filters)
            gold = sorted(d["id"] for d in docs if d.get("lang") == lang and holds(d["text"], answer))
            if not gold:
                continue
            for i, frame in enumerate(FRAMES[lang]):
                rows.append({"id": f"{entry['fact']}:{lang}:{i}", "lang": lang, "fact": entry["fact"],
                             "question": frame.format(q=entry[lang]), "answer": answer, "documents": gold})
    out = HERE / "kb_questions.jsonl"
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {len(rows)} questions to {out}")


if __name__ == "__main__":
    main()
