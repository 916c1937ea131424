"""The synthesis methods over a scripted fake teacher (through the real journal), and the local
teacher's batched generation agreeing with one-at-a-time greedy generation on a tiny model."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from domaintune.synth import methods
from domaintune.synth.journal import Journal, run_phase

S = SimpleNamespace(temperature=0.0, top_p=1.0, max_new_tokens=16)


def _ctx(tmp_path, reply, lang="auto"):
    asked: list[tuple[str, list]] = []

    def ask(phase, units, sampling):
        asked.append((phase, units))
        return run_phase(units, Journal(tmp_path / phase), lambda b, seed: [{"text": reply(phase, u)} for u in b], 4)

    return methods.Ctx("fake", lang, ask), asked


def test_doc_qa_asks_each_chunk_then_answers_from_it(tmp_path):
    docs = [{"id": "d1", "text": "Domestic wires cost $15. " * 3 + "International wires cost $35."},
            {"id": "d2", "text": "境内电汇手续费为15美元。境外汇款手续费为35美元。"}]

    def reply(phase, unit):
        return "Question: How much is a wire?\n" if phase == "doc_qa_question" else "$15."

    ctx, asked = _ctx(tmp_path, reply)
    cfg = SimpleNamespace(chunk_chars=60, questions_per_chunk=2, max_chunks=None, question=S, answer=S)
    pairs = methods.doc_qa(ctx, docs, cfg)
    questions = asked[0][1]
    assert {u.payload["lang"] for u in questions} == {"en", "zh"}
    assert all(u.payload["chunk"] in u.prompt[0]["content"] for u in questions)
    assert len(pairs) == len(questions) and pairs[0]["question"] == "How much is a wire?"
    assert all(p["chunk"] in (docs[0]["text"] + docs[1]["text"]) for p in pairs)
    assert "文字" in questions[-1].prompt[0]["content"]  # the Chinese template for a Chinese chunk


def test_self_instruct_evol_magpie_augment_judge(tmp_path):
    def reply(phase, unit):
        if phase == "evol":
            op = unit.payload["operation"]
            return "#Rewritten Prompt#" if op == "constraints" else unit.payload["parent_question"] + " " + op * 3
        if phase == "augment":
            return "What is the 保理融资 rate at Harborview Bank?" if "0" in unit.id[:3] else "A rate question?"
        if phase == "judge":
            return "Rating: 4"
        return f"New task {unit.id[:6]}?"

    ctx, _ = _ctx(tmp_path, reply)
    seeds = ["How do I open an account?", "What is the wire fee?", "List the card types."]
    si = methods.self_instruct(ctx, seeds, SimpleNamespace(num_instructions=5, examples_per_prompt=2,
                                                           sampling=S, answer=S))
    assert len(si) == 5 and len({p["question"] for p in si}) == 5
    evolved, eliminated = methods.evol(ctx, si, SimpleNamespace(
        operations=["constraints", "deepen", "breadth"], max_parent_rouge=0.9, sampling=S, answer=S))
    assert sum(eliminated.values()) + len(evolved) == 5 and eliminated["template_copy"] >= 0
    assert all(p["parent_question"] != p["question"] for p in evolved)
    mp = methods.magpie(ctx, "<|im_start|>user\n", SimpleNamespace(num=3, sampling=S, answer=S), "en")
    assert len(mp) == 3
    base = [{"id": "p1", "method": "doc_qa", "question": "What is the 保理融资 rate at Harborview Bank?",
             "answer": "3%", "lang": "en"}]
    aug, damaged = methods.augment(ctx, base, SimpleNamespace(paraphrases=2, sampling=S),
                                   ["Harborview Bank"], [["保理融资", "应收账款保理业务"]])
    assert aug[0]["question"] == "What is the 应收账款保理业务 rate at Harborview Bank?"
    assert all("Harborview Bank" in p["question"] for p in aug) and damaged == 2 - (len(aug) - 1)
    scored = methods.judge(ctx, si, S)
    assert {p["score"] for p in scored} == {4}


@pytest.mark.slow
def test_local_teacher_batch_matches_one_at_a_time(tiny_model_dir):
    import torch

    from domaintune.synth.journal import Unit
    from domaintune.synth.teachers import LocalTeacher

    teacher = LocalTeacher.load(str(tiny_model_dir), threads=1)
    units = [Unit(str(i), [{"role": "user", "content": "fee " * (i + 1)}]) for i in range(3)]
    batched = teacher.generate(units, 0, S)
    single = [teacher.generate([u], 0, S)[0] for u in units]
    assert [b["text"] for b in batched] == [s["text"] for s in single]
    assert all(b["new_tokens"] > 0 for b in batched)
    assert torch.get_num_threads() == 1
