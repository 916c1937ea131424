"""Deterministic A/B assignment: stable per user, within ±3 % of the declared weights over 10k users."""

from __future__ import annotations

from collections import Counter

import pytest

from domaintune.config.serve_experiments import ExperimentConfig
from domaintune.serve.experiments import Experiment
from domaintune.serve.hooks import Principal


def _experiment(name: str, weights: list[float], unit: str = "user") -> Experiment:
    arms = [{"name": chr(65 + i), "weight": w, "template": "summarize"} for i, w in enumerate(weights)]
    return Experiment(ExperimentConfig(name=name, unit=unit, variants=arms), "tiny")


@pytest.mark.parametrize("weights", [[50, 50], [70, 30], [1, 1, 2], [0.9, 0.1]])
def test_split_stays_within_three_points_of_the_declared_ratio(weights):
    exp = _experiment("split", weights)
    counts = Counter(exp.variant_for(f"user:{i}").name for i in range(10_000))
    for i, weight in enumerate(weights):
        share = counts[chr(65 + i)] / 10_000
        assert abs(share - weight / sum(weights)) <= 0.03, (counts, weights)


def test_assignment_is_a_pure_function_of_experiment_and_user():
    a, b = _experiment("tone", [1, 1]), _experiment("tone", [1, 1])
    assert [a.variant_for(f"user:{i}").name for i in range(500)] == [b.variant_for(f"user:{i}").name
                                                                      for i in range(500)]
    other = _experiment("length", [1, 1])  # another experiment splits the same users independently
    same = sum(a.variant_for(f"user:{i}").name == other.variant_for(f"user:{i}").name for i in range(10_000))
    assert 0.47 < same / 10_000 < 0.53


def test_the_unit_is_the_keys_user_then_the_request_user_then_the_key():
    exp, by_key = _experiment("u", [1, 1]), _experiment("u", [1, 1], unit="key")
    governed = Principal(id="k1", key_id="k1", user="alice")
    assert exp.unit_of(governed, "mallory") == "user:alice"  # a key's user cannot be overridden by the body
    assert exp.unit_of(Principal(id="local"), "bob") == "user:bob"
    assert exp.unit_of(Principal(id="local"), None) == "key:local"
    assert by_key.unit_of(governed, None) == "key:k1"
