"""Stage "synth": instruction data written by a teacher, journaled exactly once, filtered, reported.

Reads top to bottom: sources (the data stage's train split; seed tasks) -> the methods in the
configured order, each asking the teacher through the journal (a killed run resumes without
duplicates or gaps) -> the filter funnel (length, refusal/leak, grounding, ROUGE-L novelty,
MinHash near-dup, decontamination against every eval task and the held-out splits, judge) ->
sft.jsonl (+ dpo.jsonl) for the sft/align stages, pairs.jsonl with provenance, the report ->
manifest (written by the pipeline, last).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from domaintune.artifacts import FileHashCache, RunDir, StageResult, atomic_write_text, fingerprint_path
from domaintune.config import Config
from domaintune.console import console
from domaintune.errors import DataError
from domaintune.synth import filters, methods, report
from domaintune.synth.journal import Journal, PhaseStats, run_phase
from domaintune.synth.oracle import Oracle, read_key
from domaintune.synth.teachers import build_teacher
from domaintune.synth.text import language, tokens

STAGE = "synth"
SFT, DPO, PAIRS, DROPPED = "sft.jsonl", "dpo.jsonl", "pairs.jsonl", "dropped.jsonl"
JUDGE_SAMPLING = {"temperature": 0.0, "top_p": 1.0, "max_new_tokens": 4}


def inputs(cfg: Config) -> list[str]:
    s = cfg.synth
    files = [s.self_instruct.seeds] if s.self_instruct else []
    files += [p for p in (s.oracle, s.augment.rules_file or (cfg.data.rules_file if cfg.data else None)) if p]
    if s.teacher.kind == "local" and Path(s.teacher.model or cfg.model.base).exists():
        files.append(s.teacher.model or cfg.model.base)
    return [str(f) for f in files]


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _streams(cfg: Config, run_dir: RunDir) -> tuple[Path, dict[str, Any]]:
    path = run_dir.output("data", "streams", by=STAGE)
    return path.parent, json.loads(path.read_text(encoding="utf-8"))


def _train_docs(cfg: Config, run_dir: RunDir) -> list[dict[str, Any]]:
    """The governed *train* split only: val/test stay unseen by the teacher and the student."""
    root, streams = _streams(cfg, run_dir)
    wanted = cfg.synth.doc_qa.streams or list(streams)
    unknown = [s for s in wanted if s not in streams]
    if unknown:
        raise DataError(f"synth.doc_qa.streams: no data stream {unknown} (streams: {', '.join(streams)})")
    return [d for s in wanted for d in _read_jsonl(root / streams[s]["train"])]


class _Asker:
    """`ask(phase, units, sampling)` for the methods: journaled, with the teacher loaded on first use."""

    def __init__(self, cfg: Config, out_dir: Path, teacher_id: str):
        self.cfg, self.out_dir, self.teacher_id = cfg, out_dir, teacher_id
        self._teacher, self.stats = None, PhaseStats()

    def teacher(self):
        if self._teacher is None:
            self._teacher = build_teacher(self.cfg.synth.teacher, self.cfg.model.base)
        return self._teacher

    def __call__(self, phase: str, units, sampling):
        journal = Journal(self.out_dir / "journal" / phase)
        return run_phase(units, journal, lambda batch, seed: self.teacher().generate(batch, seed, sampling),
                         self.cfg.synth.teacher.journal_batch, self.stats)


def _ctx(cfg: Config, ask: _Asker) -> methods.Ctx:
    return methods.Ctx(ask.teacher_id, cfg.synth.language, ask, cfg.synth.teacher.journal_batch)


def _teacher_id(cfg: Config, run_dir: RunDir) -> str:
    t = cfg.synth.teacher
    if t.kind == "openai":
        return f"openai:{t.url.rstrip('/')}#{t.model}"
    path = t.model or cfg.model.base
    hashes = FileHashCache(run_dir.root / "cache" / "file_hashes.json")
    fp = fingerprint_path(path, hashes)  # the weights decide the outputs, not the folder's name
    hashes.save()
    return f"local:{fp}"


def _glossary(cfg: Config) -> tuple[list[str], list[list[str]]]:
    from domaintune.governance.rules import load_rules

    path = cfg.synth.augment.rules_file or (cfg.data.rules_file if cfg.data else None)
    if path is None:
        return [], []
    rules = load_rules(path, "synth.augment.rules_file")
    return list(rules.glossary), [list(g) for g in rules.synonyms]


def _seeds(cfg: Config) -> list[str]:
    if cfg.synth.self_instruct is None:
        return []
    path = Path(cfg.synth.self_instruct.seeds)
    rows = _read_jsonl(path)
    bad = [i + 1 for i, r in enumerate(rows) if not isinstance(r.get("instruction"), str)]
    if bad or not rows:
        raise DataError(f"{path}: line(s) {bad[:5] or 'all'}: a seed task needs an 'instruction' string")
    return [r["instruction"] for r in rows]


# --------------------------------------------------------------------------- generation
def _generate(cfg: Config, run_dir: RunDir, ask: _Asker, seeds: list[str]) -> tuple[list[dict], dict[str, Any]]:
    s, ctx = cfg.synth, _ctx(cfg, ask)
    pairs: list[dict] = []
    detail: dict[str, Any] = {}
    for method in s.methods:
        before = len(pairs)
        if method == "doc_qa":
            pairs += methods.doc_qa(ctx, _train_docs(cfg, run_dir), s.doc_qa)
        elif method == "self_instruct":
            pairs += methods.self_instruct(ctx, seeds, s.self_instruct)
        elif method == "evol":
            parents = ([p for p in pairs if p["method"] == "doc_qa"] if s.evol.source == "doc_qa" else
                       [{"id": f"seed{i}", "question": q, "lang": language(q)} for i, q in enumerate(seeds)])
            evolved, detail["evol_eliminated"] = methods.evol(ctx, parents, s.evol)
            pairs += evolved
        elif method == "magpie":
            prefix = ask.teacher().pre_query_prefix(s.magpie.system_prompt)
            detail["magpie_prefix"] = prefix
            lang = s.language if s.language != "auto" else language(s.magpie.system_prompt or "")
            pairs += methods.magpie(ctx, prefix, s.magpie, lang)
        elif method == "augment":
            protected, synonyms = _glossary(cfg)
            extra, detail["augment_damaged_terms"] = methods.augment(ctx, list(pairs), s.augment, protected,
                                                                     synonyms)
            pairs += extra
        detail[f"generated_{method}"] = len(pairs) - before
    return pairs, detail


# --------------------------------------------------------------------------- filters
def eval_item_texts(task) -> list[str]:
    """What of an eval task must not leak into training data: each question, and each question
    followed by its gold answer. A gold answer on its own is not a leak: shorter than the n-gram,
    it would be matched by containment, and "$35" or "None of the above" occurs in countless
    innocent answers (on the quickstart it flagged most pairs as MMLU contamination)."""
    texts = [it.question for it in task.items + task.fewshot_pool]
    texts += [f"{it.question} {it.choices[it.gold]}" for it in task.items
              if isinstance(it.gold, int) and it.choices]
    return texts


def _contamination_sets(cfg: Config, run_dir: RunDir) -> filters.Contamination:
    from domaintune.benchmarks.tasks import load_task

    sets, f = filters.Contamination(), cfg.synth.filters
    for t in cfg.eval.tasks:
        task = load_task(str(t.task), data=t.data)  # every item, not only the evaluated subset
        sets.add_set(f"eval:{task.spec.name}", eval_item_texts(task), f.decontam_ngram)
    if cfg.data is not None:
        root, streams = _streams(cfg, run_dir)
        for stream, entry in streams.items():
            for split in ("val", "test"):
                if split in entry:
                    docs = _read_jsonl(root / entry[split])
                    sets.add_set(f"heldout:{stream}/{split}", [d["text"] for d in docs], f.heldout_ngram)
    return sets


class Funnel:
    def __init__(self, pairs: list[dict]):
        self.steps = [{"step": "generated", "kept": len(pairs), "dropped": 0}]
        self.dropped: list[dict] = []

    def step(self, name: str, before: list[dict], after: list[dict]) -> list[dict]:
        kept = {p["id"] for p in after}
        self.dropped += [{"id": p["id"], "reason": name, "question": p["question"]} for p in before
                         if p["id"] not in kept]
        self.steps.append({"step": name, "kept": len(after), "dropped": len(before) - len(after)})
        return after


def _filter(cfg: Config, run_dir: RunDir, pairs: list[dict], seeds: list[str], ask: _Asker):
    f, funnel, out = cfg.synth.filters, Funnel(pairs), {}
    cur = funnel.step("length", pairs, [p for p in pairs if filters.length_ok(p, f.min_chars, f.max_chars)])
    cur = funnel.step("refusal_or_leak", cur, [p for p in cur if filters.refusal_or_leak(p) is None])
    glossary = tuple(_glossary(cfg)[0])
    grounding = {p["id"]: filters.grounded(p["answer"], p["chunk"], glossary)[0] for p in cur if "chunk" in p}
    out["grounding"] = grounding
    if f.grounding:
        cur = funnel.step("grounding", cur, [p for p in cur if grounding.get(p["id"], True)])
    kept, out["rouge_scores"] = filters.rouge_novel(cur, seeds, f.rouge_threshold)
    cur = funnel.step("rouge_l_novelty", cur, kept)
    cur = funnel.step("near_duplicate", cur, filters.near_duplicates(cur, f.neardup_threshold, f.neardup_ngram))
    kept, out["contamination"], out["contamination_hits"] = filters.decontaminate(cur, _contamination_sets(cfg,
                                                                                                      run_dir))
    cur = funnel.step("decontamination", cur, kept)
    if "judge" in cfg.synth.methods:
        from types import SimpleNamespace

        scored = methods.judge(_ctx(cfg, ask), cur, SimpleNamespace(**JUDGE_SAMPLING))
        out["scores"] = {p["id"]: p["score"] for p in scored}
        cur = funnel.step("judge", cur, [p for p in scored if (p["score"] or 0) >= cfg.synth.judge.min_score])
    return cur, funnel, out


# --------------------------------------------------------------------------- outputs
def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows)


def _preference_pairs(cfg: Config, ask: _Asker, kept: list[dict], scores: dict[str, int | None]) -> list[dict]:
    """chosen = a kept answer; rejected = the teacher's closed-book answer to the same question (no
    chunk), when it is worse: rated lower by the judge, or not grounded where the kept one is."""
    from types import SimpleNamespace

    ctx = _ctx(cfg, ask)
    asked = [{"id": p["id"], "text": p["question"], "payload": {"lang": p["lang"], "source": p["id"]}}
             for p in kept]
    sampling = cfg.synth.doc_qa.answer
    closed = {r["parent"]: r for r in _closed_book(ctx, asked, sampling)}
    rated = {p["id"]: p["score"] for p in methods.judge(ctx, list(closed.values()), SimpleNamespace(**JUDGE_SAMPLING),
                                                      "closed_book_judge")}
    glossary, rows = tuple(_glossary(cfg)[0]), []
    for p in kept:
        rival = closed.get(p["id"])
        if rival is None or rival["answer"].strip() == p["answer"].strip():
            continue
        ungrounded = "chunk" in p and not filters.grounded(rival["answer"], p["chunk"], glossary)[0]
        if (rated.get(rival["id"]) or 0) < (scores.get(p["id"]) or 0) or ungrounded:
            rows.append({"prompt": [{"role": "user", "content": p["question"]}],
                         "chosen": [{"role": "assistant", "content": p["answer"]}],
                         "rejected": [{"role": "assistant", "content": rival["answer"]}]})
    return rows


def _closed_book(ctx: methods.Ctx, asked: list[dict], sampling) -> list[dict]:
    rows = methods.answer_pairs(ctx, "closed_book", asked, sampling)
    by_question = {a["text"]: a["id"] for a in asked}
    return [{**r, "parent": by_question.get(r["question"])} for r in rows]


def _oracle_verdicts(cfg: Config, pairs: list[dict], grounding: dict[str, bool]) -> list[tuple[bool, str]]:
    if cfg.synth.oracle is None:
        return []
    oracle = Oracle(read_key(Path(cfg.synth.oracle)))
    return [(grounding[p["id"]], oracle.judge(p["question"], p["answer"])) for p in pairs if p["id"] in grounding]


def run(cfg: Config, run_dir: RunDir) -> StageResult:
    # setup
    out_dir = run_dir.stage_dir(STAGE)
    t0 = time.perf_counter()
    seeds = _seeds(cfg)
    ask = _Asker(cfg, out_dir, _teacher_id(cfg, run_dir))
    # work
    pairs, detail = _generate(cfg, run_dir, ask, seeds)
    gen_s = time.perf_counter() - t0
    kept, funnel, info = _filter(cfg, run_dir, pairs, seeds, ask)
    if not kept:
        raise DataError(f"synth: no pair survived the filters (funnel: {funnel.steps}); see "
                        f"{out_dir / DROPPED} for why, and loosen synth.filters or raise the counts")
    # write outputs
    atomic_write_text(out_dir / SFT, _jsonl([{"messages": [{"role": "user", "content": p["question"]},
                                                          {"role": "assistant", "content": p["answer"]}]}
                                              for p in kept]))
    atomic_write_text(out_dir / PAIRS, _jsonl([{k: v for k, v in p.items()} for p in kept]))
    atomic_write_text(out_dir / DROPPED, _jsonl(funnel.dropped))
    outputs = {"sft": SFT, "pairs": PAIRS, "dropped": DROPPED}
    if "judge" in cfg.synth.methods and cfg.synth.judge.preference_pairs:
        preference = _preference_pairs(cfg, ask, kept, info["scores"])
        atomic_write_text(out_dir / DPO, _jsonl(preference))
        detail["preference_pairs"] = len(preference)
        outputs["dpo"] = DPO
    rep = _report(cfg, ask, pairs, kept, funnel, info, detail, seeds, gen_s)
    outputs["report_json"], outputs["report"] = report.write(out_dir, rep)
    console.print(f"  synth: {len(pairs)} generated → {len(kept)} kept; "
                  + ", ".join(f"{f['step']} -{f['dropped']}" for f in funnel.steps[1:]))
    metrics = {"generated": len(pairs), "kept": len(kept), "funnel": funnel.steps,
               "contamination": info["contamination"], **{k: v for k, v in rep["fidelity"].items()},
               **rep["speed"]}
    return StageResult(outputs=outputs, metrics=metrics,
                       summary=f"{len(kept)} of {len(pairs)} synthetic pairs kept → {SFT}")


def _report(cfg, ask, pairs, kept, funnel, info, detail, seeds, gen_s) -> dict[str, Any]:
    stats = ask.stats
    seed_scores = None
    if seeds:
        pool = filters.RougePool(1.0)
        for s in seeds:
            pool.add(tokens(s))
        seed_scores = [pool.max_score(tokens(p["question"]), stop_at=0.0) for p in kept]
    fid = report.fidelity(_oracle_verdicts(cfg, [p for p in pairs if p["method"] == "doc_qa"], info["grounding"]))
    speed = {"units": stats.units, "units_generated": stats.generated, "units_resumed": stats.resumed,
             "new_tokens": stats.new_tokens, "generate_s": round(stats.seconds, 3),
             "tokens_per_s": round(stats.new_tokens / stats.seconds, 2) if stats.seconds else None,
             "samples_per_s": round(stats.generated / stats.seconds, 3) if stats.seconds else None,
             "stage_generate_wall_s": round(gen_s, 3)}
    return {"run": cfg.name, "teacher": ask.teacher_id, "methods": cfg.synth.methods, "funnel": funnel.steps,
            "diversity": report.diversity([p["question"] for p in kept], info["rouge_scores"], seed_scores),
            "fidelity": fid, "contamination": info["contamination"],
            "contamination_examples": info["contamination_hits"][:20], "speed": speed, "methods_detail": detail,
            "examples": [{"method": p["method"], "question": p["question"], "answer": p["answer"]}
                         for p in kept[: cfg.synth.examples_in_report]]}
