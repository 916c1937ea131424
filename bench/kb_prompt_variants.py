"""Answer-prompt variants for knowledge-base answers, on one model and one labelled subset.

    python bench/kb_prompt_variants.py examples/quickstart/domaintune.yaml --index-dir /tmp/kb/hybrid \
        --questions SUBSET.jsonl --variants k=5,k=5+noex,k=3+rev --threads 2

Each variant is `+`-joined options over the shipped prompt (kb/answer.py): `k=N` sources shown (top-k),
`s=N` sentences per source (0: the whole chunk), `t=N` new tokens, `noex` without the one-shot example
turn, `rev` the best source last. Replies are greedy (kb eval's batched generation) and scored as the
server sends them (kb.answer.AnswerFilter): exact value, correct and cited, and whether a shown source
held the value at all. The shipped prompt is `k=5` (kb.retrieval.top_k, sentences 2, 48 tokens).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config")
    ap.add_argument("--index-dir", required=True)
    ap.add_argument("--questions", required=True)
    ap.add_argument("--variants", default="k=5")
    ap.add_argument("--model", choices=["base", "tuned"], default="tuned")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None, help="write every reply here")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from domaintune import models
    from domaintune.config import load_config
    from domaintune.kb import answer
    from domaintune.kb import evaluate as ev
    from domaintune.kb.service import open_from_config

    cfg = load_config(args.config, overrides=[f"kb.index_dir={args.index_dir}"])
    kb = open_from_config(cfg)
    rows = ev.load_questions(Path(args.questions))
    _, where = ev._models(cfg, (args.model,))[0]
    trained = models.load_trained(where, base=cfg.model if args.model == "tuned" else None, device="cpu")
    model, tok = trained.model.eval(), trained.tokenizer
    shipped_example = answer.example_turns
    print(f"{len(rows)} questions, {args.model} model, load average {os.getloadavg()[0]:.2f}", flush=True)
    results = {}
    for variant in args.variants.split(","):
        opts = dict(o.split("=", 1) if "=" in o else (o, "1") for o in variant.split("+"))
        k, sentences = int(opts.get("k", kb.top_k)), int(opts.get("s", kb.sentences))
        new_tokens = int(opts.get("t", 48))
        answer.example_turns = (lambda: []) if "noex" in opts else shipped_example
        try:
            shown = [answer.passages(kb.search(ev._Open(), q["question"], k), q["question"], sentences, kb.term_weight)
                     for q in rows]
            prompts = [answer.with_context([{"role": "user", "content": q["question"]}],
                                           list(reversed(s)) if "rev" in opts else s) for q, s in zip(rows, shown)]
            t0 = time.perf_counter()
            replies = ev.generate_batched(model, tok, prompts, max_new_tokens=new_tokens)
            seconds = time.perf_counter() - t0
        finally:
            answer.example_turns = shipped_example
        served = [answer.AnswerFilter([p.source(kb.name) for p in s]).filter(r) for r, s in zip(replies, shown)]
        exact = [ev.holds(t, q["answer"]) for t, q in zip(served, rows)]
        cited = ev._cites(served, exact, shown, rows)
        by_model = ev._cites(replies, exact, shown, rows)
        held = [any(ev.relevant(p, q) for p in s) for s, q in zip(shown, rows)]
        lang = {g: sum(e for e, q in zip(exact, rows) if q.get("lang") == g) for g in ("en", "zh")}
        results[variant] = {"exact": sum(exact), "cited": sum(cited), "cited_by_model": sum(by_model),
                            "value_shown": sum(held), "exact_by_lang": lang, "questions": len(rows),
                            "seconds": round(seconds, 1),
                            "replies": [{"id": q.get("id"), "answer": q["answer"], "reply": r, "served": s}
                                        for q, r, s in zip(rows, replies, served)]}
        print(f"{variant:24s} exact {sum(exact)}/{len(rows)}  correct+cited {sum(cited)}  cited by model "
              f"{sum(by_model)}  value shown {sum(held)}  en {lang['en']} zh {lang['zh']}  {seconds:.0f} s", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, ensure_ascii=False, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
