"""Oracle correctness: score generated answers against an answer key made from a fact sheet.

A 135M teacher passes lexical grounding with wrong answers (research note §2.2), so where ground
truth exists (the quickstart's fact sheet, through its question table) each generated pair is
matched to the answer-key question it asks (best ROUGE-L >= MATCH) and judged: correct when the
key's answer is in the generated answer, wrong otherwise. The report then shows the grounding
check's precision: of the pairs it passed, the share the oracle calls correct.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from domaintune.errors import DataError
from domaintune.synth.text import lcs_length, numbers, tokens

MATCH = 0.5


def read_key(path: Path) -> list[dict[str, Any]]:
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            answer = row["choices"][row["answer"]] if "choices" in row else row["answer"]
            rows.append({"question": row["question"], "answer": str(answer)})
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise DataError(f"{path}:{n}: an answer-key row needs question and answer (text) or choices + answer "
                            f"(index) ({type(exc).__name__}: {exc})") from None
    return rows


def says(answer: str, value: str) -> bool:
    """Whether `answer` states `value`: its numbers when it has any ('$35' ~ '35美元'), else its text."""
    want = numbers(value)
    if want:
        return want <= numbers(answer)
    return " ".join(tokens(value)) in " ".join(tokens(answer))


class Oracle:
    def __init__(self, key: list[dict[str, Any]]):
        self.key = key
        self.questions = [tokens(row["question"]) for row in key]

    def judge(self, question: str, answer: str) -> str:
        """'correct' | 'wrong' | 'unmatched' (no answer-key question is close enough)."""
        toks = tokens(question)
        best, best_i = 0.0, None
        for i, kt in enumerate(self.questions):  # the key is small (tens to hundreds of questions)
            s = _f1(toks, kt)
            if s > best:
                best, best_i = s, i
        if best_i is None or best < MATCH:
            return "unmatched"
        return "correct" if says(answer, self.key[best_i]["answer"]) else "wrong"


def _f1(a: list[str], b: list[str]) -> float:
    return 2 * lcs_length(a, b) / (len(a) + len(b)) if a and b else 0.0
