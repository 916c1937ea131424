"""PII detection quality on bench/data/pii_eval.jsonl: ours vs a naive regex-only baseline.

    python bench/pii_eval.py [--data bench/data/pii_eval.jsonl] [--json bench/pii_eval.json]

Both detectors run in the same process on the same items. "ours" is domaintune's PiiFinder
(regex table + checksum/date/range validators + deny-context words). "naive" is what a quick
regex redactor does: the usual pattern per type, no validation, no context, the same priority
order and overlap rule. A prediction counts only if its type and exact span match a gold span.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from pathlib import Path

from domaintune.governance.pii import Detector, PiiFinder, builtin_detectors

HERE = Path(__file__).resolve().parent
NAIVE = {
    "URL_CREDENTIALS": [r"://(?P<pii>[^\s:@/]+:[^\s@/]+)@"],
    "EMAIL": [r"[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.\w+"],
    "ID_CARD": [r"(?<!\d)\d{17}[\dXx](?!\d)"],
    "BANK_CARD": [r"(?<!\d)(?:\d{4}[ -]){3}\d{4}(?!\d)", r"(?<!\d)\d{13,19}(?!\d)"],
    "PHONE": [r"(?<![\d+])(?:\+86[ -]?)?1\d{2}[ -]?\d{4}[ -]?\d{4}(?!\d)", r"\+\d[\d ()-]{6,}\d",
              r"\(?\d{3}\)?[ .-]\d{3}[ .-]\d{4}", r"0\d{2,3}-\d{7,8}"],
    "IP": [r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])", r"(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{1,4}"],
}


def naive_finder() -> PiiFinder:
    return PiiFinder([Detector(t, tuple(re.compile(p) for p in ps)) for t, ps in NAIVE.items()])


def score(finder: PiiFinder, items: list[dict]) -> dict[str, dict[str, float]]:
    tp, fp, fn = Counter(), Counter(), Counter()
    for item in items:
        gold = {(s["type"], s["start"], s["end"]) for s in item["spans"]}
        pred = {(f.type, f.start, f.end) for f in finder.find(item["text"])}
        for t, *_ in pred & gold:
            tp[t] += 1
        for t, *_ in pred - gold:
            fp[t] += 1
        for t, *_ in gold - pred:
            fn[t] += 1
    table = {}
    for t in [*NAIVE, "ALL"]:
        a, b, c = (sum(x.values()) for x in (tp, fp, fn)) if t == "ALL" else (tp[t], fp[t], fn[t])
        p = a / (a + b) if a + b else 0.0
        r = a / (a + c) if a + c else 0.0
        table[t] = {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0,
                    "tp": a, "fp": b, "fn": c}
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=HERE / "data" / "pii_eval.jsonl")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    items = [json.loads(line) for line in args.data.read_text(encoding="utf-8").splitlines()]
    gold = Counter(s["type"] for i in items for s in i["spans"])
    langs = Counter(i["lang"] for i in items)
    kinds = Counter(i["kind"] for i in items)
    print(f"{len(items)} items ({dict(langs)}; {dict(kinds)}), {sum(gold.values())} gold spans")
    results = {}
    for name, finder in (("ours", PiiFinder(builtin_detectors())), ("naive", naive_finder())):
        results[name] = score(finder, items)
    print(f"\n{'type':16} {'gold':>4} | {'ours P':>7} {'R':>6} {'F1':>6} {'FP':>3} | "
          f"{'naive P':>7} {'R':>6} {'F1':>6} {'FP':>3}")
    for t in [*NAIVE, "ALL"]:
        o, n = results["ours"][t], results["naive"][t]
        support = sum(gold.values()) if t == "ALL" else gold[t]
        print(f"{t:16} {support:>4} | {o['precision']:7.3f} {o['recall']:6.3f} {o['f1']:6.3f} {o['fp']:>3} | "
              f"{n['precision']:7.3f} {n['recall']:6.3f} {n['f1']:6.3f} {n['fp']:>3}")
    ratio = results["ours"]["ALL"]["f1"] / results["naive"]["ALL"]["f1"]
    print(f"\nmicro F1 ours/naive = {ratio:.2f}; false positives ours {results['ours']['ALL']['fp']} vs naive "
          f"{results['naive']['ALL']['fp']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
