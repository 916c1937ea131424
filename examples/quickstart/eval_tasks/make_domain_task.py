#!/usr/bin/env python
"""Write harborview_qa.jsonl (the quickstart's domain benchmark) from questions.yaml and the fact sheet.

    python examples/quickstart/eval_tasks/make_domain_task.py

Every correct answer is read from ../corpus_tables/bank_facts.yaml, the same file the training
corpus is generated from, so the questions agree with the documents. Option order is shuffled
with a fixed seed: the same inputs always give the same file.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
FACTS = HERE.parent / "corpus_tables" / "bank_facts.yaml"
UNITS = {
    "usd": {"en": "${}", "zh": "{}美元"},
    "pct": {"en": "{}%", "zh": "{}%"},
    "days": {"en": "{} days", "zh": "{}天"},
    "plain": {"en": "{}", "zh": "{}"},
}


def lookup(facts: dict, path: str):
    """A dotted fact path, or None when it is a literal option (no such path in the sheet)."""
    node = facts
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def write_value(value, unit: str, lang: str) -> str:
    if isinstance(value, dict):
        value = value[lang]
    if isinstance(value, float):
        value = f"{value:.2f}".rstrip("0").rstrip(".") if unit != "pct" else f"{value:.2f}"
    return UNITS[unit][lang].format(value)


def options(entry: dict, facts: dict, lang: str) -> tuple[str, list[str]]:
    correct = write_value(lookup(facts, entry["fact"]), entry["unit"], lang)
    wrong = []
    for other in entry["wrong"]:
        value = lookup(facts, other)
        text = write_value(value, entry["unit"], lang) if value is not None else str(other)
        if text != correct and text not in wrong:
            wrong.append(text)
    if len(wrong) < 3:
        raise SystemExit(f"{entry['fact']}: needs 3 distinct wrong options, got {wrong}")
    return correct, wrong[:3]


def main() -> None:
    facts = yaml.safe_load(FACTS.read_text(encoding="utf-8"))
    entries = yaml.safe_load((HERE / "questions.yaml").read_text(encoding="utf-8"))
    rng = random.Random(0)
    rows = []
    for lang in ("en", "zh"):
        for entry in entries:
            correct, wrong = options(entry, facts, lang)
            choices = [correct, *wrong]
            rng.shuffle(choices)
            rows.append({"id": f"{entry['fact']}:{lang}", "subject": f"harborview_{lang}", "question": entry[lang],
                         "choices": choices, "answer": choices.index(correct)})
    out = HERE / "harborview_qa.jsonl"
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {len(rows)} questions to {out}")


if __name__ == "__main__":
    main()
