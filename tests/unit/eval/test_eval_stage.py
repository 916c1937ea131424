"""The eval stage scores the tuned model with the tokenizer saved with it: a chat-formatted task's
prompts for a fine-tuned model use the chat template training saved (e.g. sft.template), the
base model's prompts the base's own template."""

from __future__ import annotations

import json
import shutil

import yaml

import domaintune.benchmarks.scoring as scoring
from domaintune.artifacts import RunDir
from domaintune.config import Config
from domaintune.eval import stage as eval_stage

TUNED_TEMPLATE = ("{% for m in messages %}### {{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                  "{% if add_generation_prompt %}### assistant:{% endif %}")
QUESTIONS = [{"question": "What is the wire fee?", "choices": ["$35", "$12"], "answer": 0},
             {"question": "When is interest paid?", "choices": ["monthly", "never"], "answer": 0}]


def _chat_task(tmp_path) -> str:
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS), encoding="utf-8")
    spec = {"name": "chatqa", "version": "1", "kind": "multiple_choice", "chat_template": True,
            "data": {"path": str(data)},
            "fields": {"question": "question", "choices": "choices", "answer": "answer", "answer_format": "index"},
            "prompt": {"template": "{question}\nAnswer:", "target_delimiter": " ", "continuation": "text"},
            "fewshot": {"shots": 0}}
    path = tmp_path / "chatqa.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return str(path)


def _fine_tuned_run(tmp_path, tiny_model_dir) -> tuple[Config, RunDir]:
    """A finished sft stage whose model folder saved a chat template other than the base's."""
    from transformers import AutoTokenizer

    cfg = Config.model_validate({
        "name": "t", "runs_dir": str(tmp_path / "runs"), "model": {"base": str(tiny_model_dir)},
        "sft": {"data": [{"path": str(tmp_path / "conversations.jsonl")}]},
        "runtime": {"device": "cpu"},
        "eval": {"tasks": [{"task": _chat_task(tmp_path), "group": "domain"}], "report": False,
                 "gate": {"enabled": False}}})
    run_dir = RunDir(cfg.run_path)
    model_dir = run_dir.stage_dir("sft") / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    assert tok.chat_template != TUNED_TEMPLATE
    tok.chat_template = TUNED_TEMPLATE
    tok.save_pretrained(model_dir)
    run_dir.write_manifest("sft", {"stage": "sft", "fingerprint": "x", "outputs": {"model": "model"},
                                   "config": {"sft": {"method": "full"}}})
    return cfg, run_dir


def test_chat_tasks_of_the_tuned_model_use_the_template_saved_with_it(tmp_path, tiny_model_dir, monkeypatch):
    cfg, run_dir = _fine_tuned_run(tmp_path, tiny_model_dir)
    scored: list[list[str]] = []
    real = scoring.loglikelihoods

    def spy(model, tokenizer, pairs, *args, **kwargs):
        scored.append([context for context, _ in pairs])
        return real(model, tokenizer, pairs, *args, **kwargs)

    monkeypatch.setattr(scoring, "loglikelihoods", spy)
    eval_stage.run(cfg, run_dir)

    base_prompts, tuned_prompts = scored  # the base model first (compare_base), then the tuned one
    assert all(p.startswith("<|im_start|>user\nWhat is") or p.startswith("<|im_start|>user\nWhen is")
               for p in base_prompts)
    assert tuned_prompts == [f"### user: {q['question']}\nAnswer:\n### assistant:" for q in QUESTIONS
                             for _ in q["choices"]]
    results = json.loads((run_dir.root / "eval" / "eval.json").read_text())
    assert results["tuned_model"] == {"kind": "full", "stage": "sft", "method": "full", "tokenizer_from": "saved",
                                      "template_from": "saved"}


def test_without_base_comparison_only_the_tuned_model_is_scored(tmp_path, tiny_model_dir, monkeypatch):
    cfg, run_dir = _fine_tuned_run(tmp_path, tiny_model_dir)
    cfg = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"compare_base": False})})
    seen = []

    def fake(model, tokenizer, pairs, *args, **kwargs):
        seen.append(tokenizer.chat_template)
        return [(0.0, False)] * len(pairs)

    monkeypatch.setattr(scoring, "loglikelihoods", fake)
    eval_stage.run(cfg, run_dir)
    assert seen == [TUNED_TEMPLATE]
