"""Feedback parsing, the Wilson/Newcombe statistics and the report's verdicts on synthetic feedback."""

from __future__ import annotations

import random

import pytest

from domaintune.config.serve_experiments import ExperimentsConfig
from domaintune.serve import experiment_stats as stats
from domaintune.serve.errors import ApiError
from domaintune.serve.experiment_store import ExperimentStore
from domaintune.serve.experiments import Experiments, parse_feedback
from domaintune.serve.hooks import AuditRecord, Principal
from domaintune.serve.templates import TemplateRegistry


def test_wilson_matches_published_values_and_handles_the_edges():
    low, high = stats.wilson(81, 263)  # Wilson (1927) / Newcombe (1998) example: 0.2553 to 0.3662
    assert low == pytest.approx(0.2553, abs=1e-4) and high == pytest.approx(0.3662, abs=1e-4)
    assert stats.wilson(0, 10)[0] == 0.0 and stats.wilson(10, 10)[1] == pytest.approx(1.0)
    assert stats.wilson(0, 0) is None


def test_newcombe_difference_interval_matches_the_paper():
    low, high = stats.difference_interval(56, 70, 48, 80)  # Newcombe 1998 table II example: 0.0524 to 0.3339
    assert low == pytest.approx(0.0524, abs=1e-3) and high == pytest.approx(0.3339, abs=1e-3)
    assert stats.verdict((low, high)) == "better" and stats.verdict((-0.3, -0.1)) == "worse"
    assert stats.verdict((-0.1, 0.2)) == "inconclusive" and stats.verdict(None) == "inconclusive"


def test_percentile_is_linear_interpolation():
    assert stats.percentile([1, 2, 3, 4], 50) == 2.5 and stats.percentile([5], 95) == 5
    assert stats.percentile([], 50) is None


@pytest.mark.parametrize(("body", "param"), [
    ({"request_id": "r1"}, "score"), ({"request_id": "r1", "score": 1, "thumbs": "up"}, "score"),
    ({"request_id": "r1", "score": 1.5}, "score"), ({"request_id": "r1", "score": True}, "score"),
    ({"request_id": "r1", "score": float("nan")}, "score"), ({"request_id": "r1", "thumbs": "meh"}, "thumbs"),
    ({"score": 1}, "request_id"), ({"request_id": "x" * 65, "score": 1}, "request_id"),
    ({"request_id": "r1", "score": 1, "comment": "hi"}, "comment"), ([1, 2], None),
])
def test_bad_feedback_is_a_400_naming_the_parameter(body, param):
    with pytest.raises(ApiError) as err:
        parse_feedback(body)
    assert err.value.status == 400 and err.value.param == param


def test_feedback_accepts_thumbs_scores_and_response_ids():
    assert parse_feedback({"request_id": "chatcmpl-abc", "thumbs": "up"}) == ("abc", 1.0)
    assert parse_feedback({"request_id": "abc", "score": 0.25}) == ("abc", 0.25)


def _experiments(tmp_path) -> Experiments:
    cfg = ExperimentsConfig(store=str(tmp_path / "ab.db"), active=[{"name": "tone", "variants": [
        {"name": "A", "weight": 1, "template": "summarize"}, {"name": "B", "weight": 1, "template": "classify"}]}])
    return Experiments(cfg, ExperimentStore(cfg.store), "tiny", TemplateRegistry())


def _simulate(exp: Experiments, rates: dict[str, float], users: int = 600, seed: int = 0) -> None:
    """Each synthetic user makes one request (assigned as the server would) and gives a thumbs up with
    their arm's probability."""
    rng = random.Random(seed)
    experiment = exp.get("tone")
    for i in range(users):
        principal = Principal(id=f"p{i}")
        arm = experiment.variant_for(experiment.unit_of(principal, None)).name
        exp.record(AuditRecord(request_id=f"r{i}", route="/v1/chat/completions", principal=principal.id,
                               tenant="default", status=200, variant=f"tone:{arm}", prompt_tokens=10 + i % 5,
                               completion_tokens=20, latency_ms=100.0 + i % 50))
        exp.feedback(principal, {"request_id": f"chatcmpl-r{i}", "thumbs": "up" if rng.random() < rates[arm]
                                 else "down"})


def test_a_clearly_better_arm_gets_the_verdict(tmp_path):
    exp = _experiments(tmp_path)
    _simulate(exp, {"A": 0.4, "B": 0.7})
    report = exp.report("tone")
    a, b = report["variants"]["A"], report["variants"]["B"]
    assert a["n"] + b["n"] == 600 and a["verdict"] == "control" and b["verdict"] == "better"
    for arm in (a, b):
        low, high = arm["feedback"]["interval"]
        assert low < arm["feedback"]["rate"] < high and arm["feedback"]["n"] == arm["n"]
    assert b["feedback"]["difference_interval"][0] > 0
    assert a["latency_ms"]["p50"] is not None and a["tokens"]["completion_mean"] == 20
    assert "B vs A: feedback better" in report["summary"]
    reversed_exp = _experiments(tmp_path / "rev")
    _simulate(reversed_exp, {"A": 0.7, "B": 0.4})
    assert reversed_exp.report("tone")["variants"]["B"]["verdict"] == "worse"


def test_equal_arms_are_inconclusive(tmp_path):
    exp = _experiments(tmp_path)
    _simulate(exp, {"A": 0.6, "B": 0.6})
    assert exp.report("tone")["variants"]["B"]["verdict"] == "inconclusive"


def test_feedback_on_someone_elses_or_an_unknown_request_is_404(tmp_path):
    exp = _experiments(tmp_path)
    exp.record(AuditRecord(request_id="r1", route="/v1/chat/completions", principal="alice", tenant="default",
                           status=200, variant="tone:A"))
    exp.record(AuditRecord(request_id="r2", route="/v1/chat/completions", principal="alice", tenant="default",
                           status=200))  # not in an experiment: not stored
    for who, rid in (("mallory", "r1"), ("alice", "r2"), ("alice", "nope")):
        with pytest.raises(ApiError) as err:
            exp.feedback(Principal(id=who), {"request_id": rid, "score": 1})
        assert err.value.status == 404
    assert exp.feedback(Principal(id="alice"), {"request_id": "r1", "score": 0.9})["status"] == "recorded"


def test_task_accuracy_gets_its_own_interval_and_verdict(tmp_path):
    from domaintune.serve.experiments import build_report

    exp = _experiments(tmp_path)
    task = {"A": stats.rate_summary(20, 100), "B": stats.rate_summary(60, 100)}
    report = build_report(exp.get("tone"), [], task)
    assert report["variants"]["B"]["task"]["verdict"] == "better"
    assert report["variants"]["B"]["verdict"] == "inconclusive"  # no feedback yet
