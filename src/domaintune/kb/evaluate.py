"""`domaintune kb eval`: retrieval recall@k and MRR per mode on a labelled set, retrieval latency, and
(with --answers) exact-answer accuracy of the run's model with and without retrieval plus citation
correctness. A retrieved chunk counts as relevant when it comes from a labelled source document and
holds the expected answer value itself."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from domaintune.artifacts import RunDir, atomic_write_json
from domaintune.config import Config
from domaintune.console import console
from domaintune.errors import ConfigError, DataError
from domaintune.kb.answer import AnswerFilter, cited_numbers, with_context
from domaintune.kb.service import embedder_for, index_dir, kb_section, open_from_config
from domaintune.kb.values import holds


class _Open:  # the open principal: evaluation measures retrieval quality, not access
    id, key_id, user, groups, scopes = "local", None, None, frozenset(), {}


def load_questions(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                row = json.loads(line)
                missing = {"question", "answer", "documents"} - set(row)
                if missing:
                    raise DataError(f"{path}:{n}: a labelled question needs {sorted(missing)}")
                rows.append(row)
    return rows


def relevant(hit, q: dict) -> bool:
    """A retrieved chunk (or the passage of it a prompt showed) from a labelled document that holds the value."""
    doc = hit.hit.document_id if hasattr(hit, "hit") else hit.document_id
    return doc in set(q["documents"]) and holds(hit.text, q["answer"])


def retrieval_scores(kb, questions: list[dict], k: int, mode: str) -> dict:
    ranks, times = [], []
    for q in questions:
        t0 = time.perf_counter()
        hits = kb.search(_Open(), q["question"], k, mode=mode)
        times.append((time.perf_counter() - t0) * 1000)
        ranks.append(next((h.rank for h in hits if relevant(h, q)), None))
    found = [r for r in ranks if r is not None]
    by_lang = {}
    for lang in sorted({q.get("lang", "") for q in questions}):
        sel = [r for r, q in zip(ranks, questions, strict=True) if q.get("lang", "") == lang]
        by_lang[lang or "all"] = round(sum(r is not None for r in sel) / max(len(sel), 1), 4)
    return {"mode": mode, "questions": len(questions), f"recall@{k}": round(len(found) / max(len(ranks), 1), 4),
            "mrr": round(sum(1 / r for r in found) / max(len(ranks), 1), 4), "recall_by_lang": by_lang,
            "latency_ms_p50": round(float(np.percentile(times, 50)), 2),
            "latency_ms_p95": round(float(np.percentile(times, 95)), 2)}


def run_eval(cfg: Config, questions: Path | None, *, k: int, modes: list[str], answers: bool, limit: int | None,
             out: Path | None, models: tuple[str, ...] = ("base", "tuned"), batch_size: int = 16) -> dict:
    kb_cfg = kb_section(cfg)
    path = questions or kb_cfg.eval_set
    if path is None:
        raise ConfigError(["kb.eval_set: give the labelled questions (--questions FILE or kb.eval_set)"])
    rows = load_questions(Path(path))[:limit]
    embedder = embedder_for(kb_cfg) if any(m != "lexical" for m in modes) else None
    kb = open_from_config(cfg, embedder=embedder, mode="lexical" if embedder is None else None)
    result = {"kb": kb.name, "index_version": kb.version, "embedder": embedder.model_id if embedder else None,
              "k": k, "load_average": list(os.getloadavg()), "retrieval": [retrieval_scores(kb, rows, k, m)
                                                                           for m in modes]}
    if answers:
        result["answers"] = answer_scores(cfg, kb, rows, batch_size=batch_size, only=models)
    atomic_write_json(out or index_dir(cfg) / "eval.json", result)
    return result


# ------------------------------------------------------------------ answers (slow: real generation)
def _models(cfg: Config, only: tuple[str, ...] = ("base", "tuned")) -> list[tuple[str, Path | str]]:
    unknown = set(only) - {"base", "tuned"}
    if unknown or not only:
        raise ConfigError([f"--models: {', '.join(sorted(unknown)) or 'nothing'} is not base or tuned "
                           f"(give base, tuned or base,tuned)"])
    run = RunDir(cfg.run_path)
    out = [("base", cfg.model.base)] if "base" in only else []
    if "tuned" in only:
        for stage in ("export", cfg.final_model_stage):
            if stage and run.manifest(stage) is not None:
                out.append(("tuned", run.output(stage, "model", by="kb eval")))
                break
        else:
            if only == ("tuned",):
                raise ConfigError([f"--models tuned: the run {cfg.run_path} has no tuned model yet (run the "
                                   f"pipeline first)"])
    return out


def _prompt_ids(tokenizer, messages: list[dict]) -> list[int]:
    from domaintune.generation import build_prompt_ids

    return build_prompt_ids(tokenizer, messages)[0].tolist()


def generate_batched(model, tokenizer, prompts: list[list[dict]], max_new_tokens: int = 40,
                     batch_size: int = 16) -> list[str]:
    """Greedy replies to `prompts`, in their order. Prompts are sorted by length and left-padded in
    batches (similar lengths waste little padding); greedy decoding as in the unbatched path."""
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = [_prompt_ids(tokenizer, p) for p in prompts]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out: list[str] = [""] * len(ids)
    for b in range(0, len(order), batch_size):
        rows = order[b:b + batch_size]
        width = max(len(ids[i]) for i in rows)
        batch = torch.tensor([[pad] * (width - len(ids[i])) + ids[i] for i in rows])
        mask = torch.tensor([[0] * (width - len(ids[i])) + [1] * len(ids[i]) for i in rows])
        with torch.no_grad():
            gen = model.generate(batch, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=pad)
        for row, i in enumerate(rows):
            out[i] = tokenizer.decode(gen[row, width:], skip_special_tokens=True)
    return out


def _share(flags: list[bool], rows: list[dict]) -> dict:
    """The share of true flags overall and per language."""
    out = {"all": round(sum(flags) / max(len(flags), 1), 4)}
    for lang in sorted({q.get("lang", "") for q in rows} - {""}):
        sel = [f for f, q in zip(flags, rows, strict=True) if q.get("lang") == lang]
        out[lang] = round(sum(sel) / max(len(sel), 1), 4)
    return out


def _cites(texts: list[str], correct: list[bool], shown: list, rows: list[dict]) -> list[bool]:
    """Per answer: correct, and one of its markers names a shown passage that holds the value."""
    return [ok and any(1 <= n <= len(s) and relevant(s[n - 1], q) for n in cited_numbers(t))
            for ok, t, s, q in zip(correct, texts, shown, rows, strict=True)]


def answer_scores(cfg: Config, kb, rows: list[dict], batch_size: int = 16,
                  only: tuple[str, ...] = ("base", "tuned")) -> list[dict]:
    """Per model: exact-answer accuracy without and with retrieval, and how often a correct answer
    cites a passage that holds the value: as served (after the answer filter checked the markers) and
    as the model wrote them. The prompt and the filter are the server's (kb.answer)."""
    from domaintune import models

    asks = [[{"role": "user", "content": q["question"]}] for q in rows]
    shown = [kb.passages(kb.search(_Open(), q["question"]), q["question"]) for q in rows]
    grounded = [with_context(ask, s) for ask, s in zip(asks, shown, strict=True)]
    scores = []
    for label, where in _models(cfg, only):
        trained = models.load_trained(where, base=cfg.model if label == "tuned" else None, device="cpu")
        model, tok = trained.model.eval(), trained.tokenizer
        t0 = time.perf_counter()
        plain_text = generate_batched(model, tok, asks, batch_size=batch_size)
        rag_text = generate_batched(model, tok, grounded, batch_size=batch_size)
        seconds = time.perf_counter() - t0
        # what the server sends: the same filter checks, moves or adds the markers (kb.answer.AnswerFilter)
        served = [AnswerFilter([p.source(kb.name) for p in s]).filter(t) for t, s in zip(rag_text, shown, strict=True)]
        plain = [holds(t, q["answer"]) for t, q in zip(plain_text, rows, strict=True)]
        rag = [holds(t, q["answer"]) for t, q in zip(served, rows, strict=True)]

        cited, by_model = _cites(served, rag, shown, rows), _cites(rag_text, rag, shown, rows)
        n = max(len(rows), 1)
        scores.append({"model": label, "questions": len(rows), "accuracy_no_retrieval": round(sum(plain) / n, 4),
                       "accuracy_with_retrieval": round(sum(rag) / n, 4), "correct_and_cited": round(sum(cited) / n, 4),
                       "cited_by_model": round(sum(by_model) / n, 4),
                       "by_lang": {"no_retrieval": _share(plain, rows), "with_retrieval": _share(rag, rows),
                                   "correct_and_cited": _share(cited, rows), "cited_by_model": _share(by_model, rows)},
                       "generation_s": round(seconds, 1),
                       "replies": [{"id": q.get("id"), "no_retrieval": a, "with_retrieval": b, "served": c}
                                   for q, a, b, c in zip(rows, plain_text, rag_text, served, strict=True)]})
    return scores


def print_report(result: dict) -> None:
    from rich.table import Table

    k = result["k"]
    table = Table(title=f"kb '{result['kb']}' v{result['index_version']} — retrieval (embedder "
                        f"{result['embedder'] or 'none'})", title_justify="left")
    for col in ("mode", "questions", f"recall@{k}", "MRR", "by language", "p50 ms", "p95 ms"):
        table.add_column(col)
    for r in result["retrieval"]:
        table.add_row(r["mode"], str(r["questions"]), f"{r[f'recall@{k}']:.3f}", f"{r['mrr']:.3f}",
                      " ".join(f"{lang}:{v:.3f}" for lang, v in r["recall_by_lang"].items()),
                      f"{r['latency_ms_p50']:.1f}", f"{r['latency_ms_p95']:.1f}")
    console.print(table)
    if result.get("answers"):
        console.print(_answers_table(result["answers"]))
    console.print(f"load average {' '.join(f'{x:.2f}' for x in result['load_average'])}")


def _answers_table(answers: list[dict]):
    from rich.table import Table

    table = Table(title="answers — exact value (and unit); cited: the served answer cites a source that holds it "
                        "(by the model: before the answer filter checked its markers)",
                  title_justify="left")
    for col in ("model", "questions", "no retrieval", "with retrieval", "correct and cited",
                "cited by the model", "seconds"):
        table.add_column(col)

    def cell(a: dict, key: str) -> str:
        langs = " ".join(f"{lang}:{v:.3f}" for lang, v in a["by_lang"][key].items() if lang != "all")
        return f"{a['by_lang'][key]['all']:.3f}" + (f" ({langs})" if langs else "")

    for a in answers:
        table.add_row(a["model"], str(a["questions"]), cell(a, "no_retrieval"), cell(a, "with_retrieval"),
                      cell(a, "correct_and_cited"), cell(a, "cited_by_model"), f"{a['generation_s']:.0f}")
    return table
