"""Auto-eval during training: the stopping rule, and the callback on a tiny model."""

import json

import pytest

from domaintune.config import AutoEvalConfig, EvalTaskConfig
from domaintune.training.autoeval import AutoEval, plateau_reason


def test_no_decision_before_patience_evaluations_or_without_threshold():
    history = [(10, 1000, 0.30), (20, 2000, 0.30)]
    assert plateau_reason(history, 3, 1.0, "acc") is None
    assert plateau_reason(history * 3, 3, None, "acc") is None


def test_stops_when_gain_per_million_tokens_is_below_threshold():
    # +1 point over 0.5M tokens = 2 points per M tokens
    history = [(10, 1_000_000, 0.40), (20, 1_250_000, 0.405), (30, 1_500_000, 0.41)]
    assert plateau_reason(history, 3, 1.5, "acc") is None
    reason = plateau_reason(history, 3, 2.5, "acc")
    assert reason and "+1.00 points" in reason and "2.0 points per M tokens" in reason
    assert "min_gain_per_mtokens=2.5" in reason and "steps 10-30" in reason


def test_only_the_last_k_evaluations_count():
    history = [(1, 0, 0.1), (2, 100_000, 0.5), (3, 200_000, 0.5), (4, 300_000, 0.5)]
    assert plateau_reason(history[:3], 3, 10.0, "acc") is None  # +40 points early on
    assert plateau_reason(history, 3, 10.0, "acc") is not None  # flat over the last 3


@pytest.fixture
def domain_task(tmp_path):
    rows = [{"q": f"Fee number {i}?", "options": ["5 dollars", "35 dollars"], "gold": i % 2} for i in range(6)]
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (tmp_path / "qa.yaml").write_text(
        "name: qa\nversion: 1\nkind: multiple_choice\ndata: {path: qa.jsonl}\n"
        "fields: {question: q, choices: options, answer: gold, answer_format: index}\n"
        "prompt: {template: \"{question}\\nAnswer:\", continuation: text}\n", encoding="utf-8")
    return tmp_path / "qa.yaml"


def test_callback_scores_when_due_and_records_why_it_stops(tiny_model_dir, domain_task):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    cfg = AutoEvalConfig(every=2, tasks=[EvalTaskConfig(task=str(domain_task), group="domain")], limit=4,
                         patience=2, min_gain_per_mtokens=1e9)
    auto = AutoEval(cfg, AutoTokenizer.from_pretrained(tiny_model_dir), total_steps=10)
    assert auto(model, {"step": 1, "tokens": 100}) == {}
    first = auto(model, {"step": 2, "tokens": 100})
    assert set(first) == {"autoeval/qa/acc", "autoeval/qa/acc_norm", "autoeval/domain_score"}
    assert auto.stop_reason is None  # one evaluation is not a trend
    auto(model, {"step": 3, "tokens": 100})
    second = auto(model, {"step": 4, "tokens": 100})
    # the weights did not change: zero gain over 200 tokens is below any positive threshold
    assert auto.stop_reason and second["stop_reason"] == auto.stop_reason
    assert auto.history == [(2, 200, first["autoeval/domain_score"]), (4, 400, second["autoeval/domain_score"])]
