from __future__ import annotations

from collections import Counter

import pytest

from domaintune.config import SplitConfig
from domaintune.data.split import assign_splits, split_sizes

DEFAULT = SplitConfig()


@pytest.mark.parametrize("n, expected", [
    (0, (0, 0, 0)), (1, (1, 0, 0)), (2, (2, 0, 0)), (3, (1, 1, 1)), (10, (8, 1, 1)),
    (100, (80, 10, 10)), (25, (19, 3, 3)),
])
def test_sizes_follow_ratios_with_min_one_eval_doc(n, expected):
    sizes = split_sizes(n, DEFAULT)
    assert (sizes["train"], sizes["val"], sizes["test"]) == expected


def test_sizes_respect_zero_ratios_and_keep_a_train_doc():
    assert split_sizes(10, SplitConfig(train=0.9, val=0.1, test=0.0)) == {
        "train": 9, "val": 1, "test": 0}
    assert split_sizes(4, SplitConfig(train=0.2, val=0.4, test=0.4))["train"] == 1
    assert split_sizes(3, SplitConfig(train=0.0, val=0.5, test=0.5))["train"] == 0


def test_assignment_is_deterministic_and_seeded():
    ids = [f"doc-{i}" for i in range(50)]
    a = assign_splits(ids, DEFAULT, seed=1)
    assert a == assign_splits(ids, DEFAULT, seed=1)
    assert a != assign_splits(ids, DEFAULT, seed=2)
    assert Counter(a) == {"train": 40, "val": 5, "test": 5}


def test_assignment_does_not_depend_on_input_order():
    ids = [f"doc-{i}" for i in range(30)]
    forward = dict(zip(ids, assign_splits(ids, DEFAULT, seed=0)))
    backward = dict(zip(ids[::-1], assign_splits(ids[::-1], DEFAULT, seed=0)))
    assert forward == backward
