"""Forgetting-gate verdicts on hand-made comparisons."""

from domaintune.config import GateConfig
from domaintune.eval.gate import evaluate_gate


def _stream(base_ppl: float, tuned_ppl: float) -> dict:
    return {"base": {"ppl": base_ppl}, "tuned": {"ppl": tuned_ppl}, "ppl_change_pct": 100 * (tuned_ppl / base_ppl - 1)}


def _task(base: float, tuned: float, group: str = "general") -> dict:
    return {"base": {"metrics": {"acc": base, "acc_norm": base}},
            "tuned": {"metrics": {"acc": tuned, "acc_norm": tuned}},
            "group": group, "metric": "acc", "version": "1"}


def test_passes_within_thresholds():
    verdict = evaluate_gate(GateConfig(), {"english": _stream(10, 10.4), "domain": _stream(10, 6)},
                            {"mmlu": _task(0.40, 0.395)})
    assert verdict["status"] == "passed" and len(verdict["checks"]) == 2  # domain stream has no threshold set


def test_general_perplexity_rise_above_five_percent_fails():
    verdict = evaluate_gate(GateConfig(), {"english": _stream(10, 10.6)}, {})
    assert verdict["status"] == "failed"
    assert "stream english: ppl change % +6.00, needs <= +5.0%" in verdict["reason"]


def test_general_task_drop_of_more_than_one_point_fails():
    verdict = evaluate_gate(GateConfig(), {}, {"mmlu": _task(0.40, 0.388)})
    assert verdict["status"] == "failed" and "task mmlu" in verdict["reason"]
    assert verdict["checks"][0]["value"] == pytest_approx(-1.2)


def test_domain_must_improve_by_the_minimum():
    gate = GateConfig(min_domain_task_gain=5.0, min_domain_ppl_drop_pct=10.0)
    ok = evaluate_gate(gate, {"domain": _stream(10, 8.9)}, {"bank": _task(0.3, 0.36, "domain")})
    assert ok["status"] == "passed"
    bad = evaluate_gate(gate, {"domain": _stream(10, 9.5)}, {"bank": _task(0.3, 0.33, "domain")})
    assert bad["status"] == "failed" and len([c for c in bad["checks"] if not c["passed"]]) == 2


def test_disabled_and_no_base_are_not_silent_passes():
    assert evaluate_gate(GateConfig(enabled=False), {"english": _stream(1, 9)}, {})["status"] == "disabled"
    skipped = evaluate_gate(GateConfig(), {"english": {"tuned": {"ppl": 3}}}, {})
    assert skipped["status"] == "skipped" and "compare_base" in skipped["reason"]


def pytest_approx(x):
    import pytest

    return pytest.approx(x, abs=1e-9)

