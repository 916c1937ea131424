"""synth_report.json + synth_report.html: the funnel per filter, diversity, grounding, oracle
correctness (and the grounding check's precision against it), contamination per set, speed and
example pairs."""

from __future__ import annotations

import html
import json
from pathlib import Path
from statistics import median
from typing import Any

from domaintune.artifacts import atomic_write_json, atomic_write_text
from domaintune.synth.text import distinct_n


def diversity(questions: list[str], rouge_scores: list[float], seed_scores: list[float] | None) -> dict[str, Any]:
    out: dict[str, Any] = {"distinct_1": round(distinct_n(questions, 1), 4),
                           "distinct_2": round(distinct_n(questions, 2), 4),
                           "mean_question_chars": round(sum(map(len, questions)) / len(questions), 1) if questions
                           else 0}
    if rouge_scores:
        out["rouge_l_to_pool_median"] = round(median(rouge_scores), 4)
        out["rouge_l_to_pool_share_gt_0.5"] = round(sum(s > 0.5 for s in rouge_scores) / len(rouge_scores), 4)
    if seed_scores:
        out["rouge_l_to_seeds_median"] = round(median(seed_scores), 4)
    return out


def fidelity(verdicts: list[tuple[bool, str]]) -> dict[str, Any]:
    """(grounding passed, oracle verdict) per doc_qa pair -> pass rate, oracle correctness, and the
    grounding check's precision (correct among passed) and recall (passed among correct)."""
    if not verdicts:
        return {}
    passed = [v for g, v in verdicts if g]
    out: dict[str, Any] = {"pairs": len(verdicts), "grounding_pass_rate": round(len(passed) / len(verdicts), 4)}
    matched = [(g, v) for g, v in verdicts if v != "unmatched"]
    if matched:
        correct = [g for g, v in matched if v == "correct"]
        passed_matched = [v for g, v in matched if g]
        out.update(oracle_matched=len(matched), oracle_correct=len(correct),
                   oracle_correctness=round(len(correct) / len(matched), 4),
                   grounding_precision=round(sum(v == "correct" for v in passed_matched) / len(passed_matched), 4)
                   if passed_matched else None,
                   grounding_recall=round(sum(correct) / len(correct), 4) if correct else None)
    return out


def write(out_dir: Path, report: dict[str, Any]) -> tuple[str, str]:
    atomic_write_json(out_dir / "synth_report.json", report)
    atomic_write_text(out_dir / "synth_report.html", render_html(report))
    return "synth_report.json", "synth_report.html"


def _table(rows: list[tuple[Any, ...]], head: tuple[str, ...]) -> str:
    e = html.escape
    body = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return "<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + f"</tr>{body}</table>"


def render_html(r: dict[str, Any]) -> str:
    e = html.escape
    funnel = _table([(f["step"], f["kept"], f["dropped"]) for f in r["funnel"]], ("step", "kept", "dropped"))
    sections = [f"<h1>synth report — {e(r['run'])}</h1><p>teacher {e(r['teacher'])}; methods "
                f"{e(', '.join(r['methods']))}</p>", "<h2>Funnel</h2>", funnel]
    for title, key in (("Diversity", "diversity"), ("Fidelity (doc_qa)", "fidelity"),
                       ("Contamination hits per set", "contamination"), ("Speed", "speed"),
                       ("Method details", "methods_detail")):
        if r.get(key):
            sections += [f"<h2>{title}</h2>", _table(sorted((k, json.dumps(v, ensure_ascii=False))
                                                            for k, v in r[key].items()), ("key", "value"))]
    examples = [(x["method"], x["question"], x["answer"]) for x in r.get("examples", [])]
    sections += ["<h2>Example pairs</h2>", _table(examples, ("method", "question", "answer"))]
    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse;margin:8px 0}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>synth report</title><style>{style}"
            f"</style></head><body>{''.join(sections)}</body></html>\n")
