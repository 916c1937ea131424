"""The synth stage over a scripted fake teacher: every method, the funnel, decontamination against
held-out splits, oracle scoring, preference pairs, the report, and a re-run served from the journal."""

from __future__ import annotations

import json
import re
from pathlib import Path

from domaintune.artifacts import RunDir, atomic_write_json
from domaintune.config import Config
from domaintune.synth import stage

CHUNK_EN = "Harborview Bank charges $15 for a domestic wire. An outgoing international wire costs $35."
HELDOUT = "Term deposits of 12 months earn 3.10% a year and can be broken early for a fee of one month's interest."


class FakeTeacher:
    calls = 0
    questions = 0

    def pre_query_prefix(self, system_prompt):
        return "<|im_start|>system\n" + (system_prompt or "") + "<|im_end|>\n<|im_start|>user\n"

    def generate(self, units, seed, sampling):
        FakeTeacher.calls += len(units)
        return [{"text": self._reply(u), "new_tokens": 5} for u in units]

    def _reply(self, u):
        text = u.prompt if u.raw else u.prompt[-1]["content"]
        k = int(u.id[:4], 16)
        if u.raw:
            return ["How do I close a joint savings account?", "Can I change my card PIN abroad?"][k % 2]
        if "Rate the answer" in text:
            return "2" if "$99" in text else "4"
        if "write one question" in text:  # in turn (not by unit id, which changes with the templates' text)
            FakeTeacher.questions += 1
            return ["What does a domestic wire cost at Harborview Bank?", "What is the outgoing international "
                    "wire fee?", "What does the text say?"][FakeTeacher.questions % 3]
        if "Answer the question using only the text" in text:
            return "It costs $15." if "domestic" in text.split("Question:")[-1] else "It costs $35."
        if "Come up with a new task" in text:
            return ["Explain cheque clearing times.", "Which documents prove my address?",
                    "Summarise the overdraft buffer rules."][k % 3]
        if "Rewrite the prompt" in text or "brand-new prompt" in text:
            return re.sub(r"^.*Prompt: ", "", text, flags=re.S) + " Include the cut-off time and the weekend rule."
        if "Rewrite this question" in text:
            return "How much is a domestic wire at Harborview Bank?"
        if text.startswith("Explain cheque clearing"):  # a self_instruct answer copying a held-out document
            return HELDOUT
        if text.startswith(("Which documents", "Summarise")):
            return "A utility bill or a bank statement from the last three months."
        if "wire" in text:
            return "It costs $99."  # closed-book answers to doc_qa questions: not grounded
        return "Visit a branch with your ID card."


def _setup(tmp_path: Path, monkeypatch) -> tuple[Config, RunDir]:
    run = RunDir(tmp_path / "runs" / "r")
    data = run.stage_dir("data")
    docs = {"train": [{"id": "d1", "text": CHUNK_EN}], "val": [{"id": "v1", "text": HELDOUT}], "test": []}
    for split, rows in docs.items():
        (data / "domain").mkdir(exist_ok=True)
        (data / "domain" / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    atomic_write_json(data / "streams.json", {"domain": {s: f"domain/{s}.jsonl" for s in docs}})
    atomic_write_json(run.manifest_path("data"), {"fingerprint": "x", "outputs": {"streams": "streams.json"}})
    (tmp_path / "seeds.jsonl").write_text('{"instruction": "How do I open an account?"}\n'
                                          '{"instruction": "Term deposits: what do they earn?"}\n')
    (tmp_path / "key.jsonl").write_text('{"question": "What does a domestic wire cost at Harborview Bank?", '
                                        '"choices": ["$35", "$15"], "answer": 1}\n')
    (tmp_path / "rules.yaml").write_text("glossary: [Harborview Bank]\nsynonyms: [[domestic wire, local wire]]\n")
    (tmp_path / "teacher").mkdir()
    (tmp_path / "teacher" / "weights.txt").write_text("fake")
    monkeypatch.setattr(stage, "build_teacher", lambda *a: FakeTeacher())
    cfg = Config.model_validate({
        "name": "r", "runs_dir": str(tmp_path / "runs"), "model": {"base": str(tmp_path / "teacher")},
        "data": {"sources": [{"name": "d", "path": str(tmp_path), "stream": "domain"}],
                 "rules_file": str(tmp_path / "rules.yaml")},
        "synth": {"methods": ["doc_qa", "self_instruct", "evol", "magpie", "augment", "judge"],
                  "doc_qa": {"questions_per_chunk": 3},
                  "self_instruct": {"seeds": str(tmp_path / "seeds.jsonl"), "num_instructions": 3},
                  "magpie": {"num": 2, "system_prompt": "You help Harborview Bank customers."},
                  "judge": {"min_score": 3, "preference_pairs": True},
                  "oracle": str(tmp_path / "key.jsonl"), "teacher": {"batch_size": 4}},
        "sft": {"data": []}})
    return cfg, run


def test_stage_runs_every_method_and_reports(tmp_path, monkeypatch):
    cfg, run = _setup(tmp_path, monkeypatch)
    result = stage.run(cfg, run)
    out = run.root / "synth"
    rep = json.loads((out / "synth_report.json").read_text())
    funnel = {f["step"]: f["dropped"] for f in rep["funnel"]}
    assert funnel["refusal_or_leak"] >= 1  # "What does the text say?"
    assert rep["contamination"]["heldout:domain/val"] >= 1  # a self_instruct answer copies held-out text
    methods_kept = {json.loads(line)["method"] for line in (out / "pairs.jsonl").read_text().splitlines()}
    assert {"doc_qa", "self_instruct", "magpie"} <= methods_kept
    assert rep["methods_detail"]["magpie_prefix"].startswith("<|im_start|>system\nYou help Harborview")
    assert rep["fidelity"]["oracle_correct"] >= 1 and rep["fidelity"]["grounding_precision"] == 1.0
    dpo = [json.loads(line) for line in (out / "dpo.jsonl").read_text().splitlines()]
    assert dpo and all(r["rejected"][0]["content"] == "It costs $99." for r in dpo)
    sft_rows = (out / "sft.jsonl").read_text().splitlines()
    assert len(sft_rows) == result.metrics["kept"] and "<table>" in (out / "synth_report.html").read_text()
    assert rep["speed"]["samples_per_s"] > 0 and rep["diversity"]["distinct_1"] > 0
    # a second run: every unit from the journal, nothing asked of the teacher, same bytes
    before, FakeTeacher.calls = (out / "sft.jsonl").read_bytes(), 0
    stage.run(cfg, run)
    assert FakeTeacher.calls == 0 and (out / "sft.jsonl").read_bytes() == before


def test_eval_items_are_caught_but_a_short_gold_answer_alone_is_not_a_leak():
    from types import SimpleNamespace

    from domaintune.synth import filters

    item = SimpleNamespace(question="What does Harborview Bank charge a Standard customer for a domestic wire "
                                    "transfer?", choices=["$15", "$35"], gold=0)
    mmlu = SimpleNamespace(question="Which is a fixed cost?", choices=["Rent", "None of the above"], gold=1)
    sets = filters.Contamination()
    sets.add_set("eval:t", stage.eval_item_texts(SimpleNamespace(items=[item, mmlu], fewshot_pool=[])), 8)
    assert sets.check("Q: What does Harborview Bank charge a Standard customer for a domestic wire transfer?")
    assert sets.check("which is a fixed cost")  # a short question: normalized containment
    assert not sets.check("How much is an outgoing wire?\nIt costs $15, or none of the above fees apply.")
