"""The synthesis methods. Each turns sources into units (prompts), asks the teacher through the
journal (`Ctx.ask`), and returns candidate pairs {"id", "method", "question", "answer", "lang", ...}.

- doc_qa (Self-QA): chunks of the data stage's *train* split -> questions -> answers from the chunk;
- self_instruct: new tasks from seed + pool examples (novelty is the ROUGE-L filter's job);
- evol: Evol-Instruct in-depth (4 operations) / in-breadth rewriting with its elimination rules;
- magpie: queries continued from the chat template's own pre-query prefix, then answered;
- augment: glossary synonym swaps + teacher paraphrases that keep protected terms verbatim;
- judge: the teacher rates each pair 1-5; low ones dropped, optional preference pairs.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from domaintune.artifacts import stable_hash
from domaintune.synth import prompts
from domaintune.synth.journal import Unit, unit_id
from domaintune.synth.teachers import sampling_dict
from domaintune.synth.text import language, rouge_l, tokens

Pair = dict[str, Any]
_SENTENCE = re.compile(r"(?<=[.!?。！？；])\s*")
_LEAD = re.compile(r"^\s*(?:(?:\d+[.)]|[-*•]|(?:Question|Q|问题|Task|任务|Prompt|提示)\s*[:：])\s*)*", re.I)


@dataclass
class Ctx:
    """What methods share: the teacher's id, the language setting, and `ask(phase, units, sampling)`."""

    teacher_id: str
    lang: str  # "en" | "zh" | "auto"
    ask: Callable[[str, list[Unit], Any], list[dict[str, Any]]]
    journal_batch: int = 64  # doc_qa asks about this many questions, then answers them (see doc_qa)

    def lang_of(self, text: str) -> str:
        return language(text) if self.lang == "auto" else self.lang

    def unit(self, method: str, source: str, template: str, lang: str, sampling, k: int, prompt: Any,
             raw: bool = False, context: str = "", **payload: Any) -> Unit:
        uid = unit_id(method, source, prompts.template_hash(template, lang), self.teacher_id,
                      sampling_dict(sampling), k)
        return Unit(uid, prompt, raw, context=context, payload={"source": source, "lang": lang, **payload})


def first_line(text: str) -> str:
    """The first non-empty line, without list numbering or a 'Question:' label."""
    for line in text.splitlines():
        line = _LEAD.sub("", line).strip().strip('"“”')
        if line:
            return line
    return ""


def user(content: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": content}]


def answer_pairs(ctx: Ctx, method: str, asked: list[dict[str, Any]], sampling, template: str = "answer",
                 **extra: Callable[[dict[str, Any]], dict[str, str]]) -> list[Pair]:
    """Answer every parsed question (skips empty ones) and return the pairs."""
    units = []
    for row in asked:
        q, p = first_line(row["text"]), row["payload"]
        if not q:
            continue
        values = extra["values"](row) if "values" in extra else {}
        content = prompts.render(template, p["lang"], instruction=q, question=q, **values)
        units.append(ctx.unit(method, row["id"], template, p["lang"], sampling, 0, user(content),
                              context=chunk_context(content, values.get("chunk")),
                              question=q, **{k: v for k, v in p.items() if k not in ("lang", "source")},
                              parent=row["id"], lang_=p["lang"]))
    pairs = []
    for row in ctx.ask(f"{method}_answer", units, sampling):
        p = row["payload"]
        pairs.append({"id": row["id"], "method": method, "question": p["question"], "answer": row["text"],
                      "lang": p["lang_"], **{k: p[k] for k in ("chunk", "doc", "parent_question") if k in p}})
    return pairs


# --------------------------------------------------------------------------- doc_qa
def chunk_context(content: str, chunk: str | None) -> str:
    """The message up to the end of its chunk when the chunk is there (doc_qa's templates start with
    it): the part a chunk's question and answer prompts share."""
    at = content.find(chunk) if chunk else -1
    return content[: at + len(chunk)] if at >= 0 else ""


def chunk_text(text: str, size: int) -> list[str]:
    """Sentence-bounded chunks of about `size` characters."""
    chunks, cur = [], ""
    for sentence in _SENTENCE.split(text):
        if cur and len(cur) + len(sentence) > size:
            chunks.append(cur.strip())
            cur = ""
        cur += sentence + (" " if sentence and sentence[-1].isascii() else "")  # no spaces between CJK sentences
    if cur.strip():
        chunks.append(cur.strip())
    return chunks


def doc_qa(ctx: Ctx, docs: list[dict[str, Any]], cfg) -> list[Pair]:
    chunks = [(f"{d['id']}#{i}", c) for d in docs for i, c in enumerate(chunk_text(d["text"], cfg.chunk_chars))]
    chunks = chunks[: cfg.max_chunks] if cfg.max_chunks else chunks
    # in rounds of one journal batch of questions, each followed by its answers: a local teacher
    # still holds those chunks' KV (its context cache) when the answer prompts come
    per_round = max(1, ctx.journal_batch // cfg.questions_per_chunk)
    pairs = []
    for first in range(0, len(chunks), per_round):
        units = []
        for source, chunk in chunks[first:first + per_round]:
            lang = ctx.lang_of(chunk)
            content = prompts.render("doc_qa_question", lang, chunk=chunk)
            for k in range(cfg.questions_per_chunk):
                units.append(ctx.unit("doc_qa", source, "doc_qa_question", lang, cfg.question, k, user(content),
                                      context=chunk_context(content, chunk), chunk=chunk, doc=source))
        asked = ctx.ask("doc_qa_question", units, cfg.question)
        pairs += answer_pairs(ctx, "doc_qa", asked, cfg.answer, "doc_qa_answer",
                              values=lambda row: {"chunk": row["payload"]["chunk"]})
    return pairs


# --------------------------------------------------------------------------- self_instruct
def self_instruct(ctx: Ctx, seeds: list[str], cfg) -> list[Pair]:
    units = []
    for k in range(cfg.num_instructions):
        rng = random.Random(stable_hash(["self_instruct", k, seeds]))  # same k -> same examples after a resume
        shown = rng.sample(seeds, min(cfg.examples_per_prompt, len(seeds)))
        lang = ctx.lang_of(" ".join(shown))
        examples = "\n".join(f"{i + 1}. {s}" for i, s in enumerate(shown))
        units.append(ctx.unit("self_instruct", stable_hash(shown)[:16], "self_instruct", lang, cfg.sampling, k,
                              user(prompts.render("self_instruct", lang, examples=examples))))
    return answer_pairs(ctx, "self_instruct", ctx.ask("self_instruct", units, cfg.sampling), cfg.answer)


# --------------------------------------------------------------------------- evol
_PUNCT_ONLY = re.compile(r"^[\W_\s]*$")


def evol_eliminated(parent: str, child: str, max_parent_rouge: float) -> str | None:
    """Evol-Instruct's elimination rules that need no judge: the evolution copies the template's
    words, is only punctuation, or adds no information (too similar to its parent). The fourth
    rule (the answer shows the model struggled: 'sorry' and short) is the refusal filter."""
    if re.search(r"given prompt|rewritten prompt|#\s*prompt|改写后的提示|给定的提示", child, re.I):
        return "template_copy"
    if _PUNCT_ONLY.match(child) or not tokens(child):
        return "punctuation_only"
    if rouge_l(parent, child) >= max_parent_rouge:
        return "no_new_information"
    return None


def evol(ctx: Ctx, parents: list[Pair], cfg) -> tuple[list[Pair], dict[str, int]]:
    units = []
    for parent in parents:
        q, lang = parent["question"], parent["lang"]
        op = cfg.operations[int(stable_hash([parent["id"], "op"])[:8], 16) % len(cfg.operations)]
        if op == "breadth":
            content, template = prompts.render("evol_breadth", lang, instruction=q), "evol_breadth"
        else:
            content = prompts.render("evol_depth", lang, instruction=q, operation=prompts.evol_operation(op, lang))
            template = "evol_depth"
        units.append(ctx.unit("evol", parent["id"], template, lang, cfg.sampling, 0, user(content),
                              parent_question=q, operation=op))
    kept, eliminated = [], {"template_copy": 0, "punctuation_only": 0, "no_new_information": 0}
    for row in ctx.ask("evol", units, cfg.sampling):
        reason = evol_eliminated(row["payload"]["parent_question"], first_line(row["text"]), cfg.max_parent_rouge)
        if reason:
            eliminated[reason] += 1
        else:
            kept.append(row)
    return answer_pairs(ctx, "evol", kept, cfg.answer), eliminated


# --------------------------------------------------------------------------- magpie
def magpie(ctx: Ctx, prefix: str, cfg, lang: str) -> list[Pair]:
    units = [ctx.unit("magpie", stable_hash(prefix)[:16], "answer", lang, cfg.sampling, k, prefix, raw=True)
             for k in range(cfg.num)]
    return answer_pairs(ctx, "magpie", ctx.ask("magpie", units, cfg.sampling), cfg.answer)


# --------------------------------------------------------------------------- augment
def swap_synonyms(text: str, groups: list[list[str]], protected: list[str]) -> str | None:
    """Replace the first synonym found (longest first) by the next one in its group; protected
    terms are never touched (a synonym inside a protected term is skipped). None: nothing to swap."""
    spans = [(m.start(), m.end()) for t in protected for m in re.finditer(re.escape(t), text)]
    for group in groups:
        for term in sorted(group, key=len, reverse=True):
            for m in re.finditer(re.escape(term), text):
                if any(s <= m.start() < e or s < m.end() <= e for s, e in spans):
                    continue
                other = group[(group.index(term) + 1) % len(group)]
                return text[: m.start()] + other + text[m.end():]
    return None


def augment(ctx: Ctx, pairs: list[Pair], cfg, protected: list[str], synonyms: list[list[str]]) -> tuple[
        list[Pair], int]:
    """Term swaps (no teacher) and paraphrases; a paraphrase that drops or respells a protected term
    present in the original is rejected (counted)."""
    out = []
    for pair in pairs:
        swapped = swap_synonyms(pair["question"], synonyms, protected)
        if swapped:
            out.append({**pair, "id": stable_hash([pair["id"], "swap"])[:24], "method": "augment",
                        "question": swapped, "parent_question": pair["question"]})
    units = []
    for pair in pairs:
        terms = [t for t in protected if t in pair["question"]]
        for k in range(cfg.paraphrases):
            content = prompts.render("paraphrase", pair["lang"], question=pair["question"],
                                     terms=", ".join(terms) or "-")
            units.append(ctx.unit("augment", pair["id"], "paraphrase", pair["lang"], cfg.sampling, k, user(content),
                                  pair=pair, terms=terms))
    damaged = 0
    for row in ctx.ask("augment", units, cfg.sampling):
        q, p = first_line(row["text"]), row["payload"]
        if not q or any(t not in q for t in p["terms"]):
            damaged += 1
            continue
        out.append({**p["pair"], "id": row["id"], "method": "augment", "question": q,
                    "parent_question": p["pair"]["question"]})
    return out, damaged


# --------------------------------------------------------------------------- judge
def judge(ctx: Ctx, pairs: list[Pair], sampling, phase: str = "judge") -> list[Pair]:
    """Each pair with a 'score' 1-5 from the teacher (None when the reply holds no digit 1-5)."""
    units = [ctx.unit("judge", p["id"], "judge", p["lang"], sampling, 0,
                      user(prompts.render("judge", p["lang"], question=p["question"], answer=p["answer"])))
             for p in pairs]
    scored = []
    for pair, row in zip(pairs, ctx.ask(phase, units, sampling)):
        m = re.search(r"[1-5]", row["text"])
        scored.append({**pair, "score": int(m.group(0)) if m else None})
    return scored
