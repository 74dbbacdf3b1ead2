"""benchmarks/gap.py: per-pair hits and SID-prefix reach on hand-made lists, and one run end to end."""
from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def gap(load_script):
    return load_script("benchmarks/gap.py")


def test_pair_hits_count_each_target_of_a_basket(gap):
    ranked = np.array([[1, 2, 3], [4, 5, -1]])
    offsets = np.array([0, 2, 3])  # query 0 wants 3 and 9, query 1 wants 5
    assert gap.pair_hits(ranked, offsets, np.array([3, 9, 5])).tolist() == [True, False, True]


def test_prefix_reach_needs_every_leading_token_and_ignores_empty_slots(gap):
    lists = np.array([[[1, 2, 3], [-1, -1, -1]], [[1, 5, 6], [7, 2, 3]]])
    target = np.array([[1, 2, 9], [1, 2, 3]])
    assert gap.reaches_prefix(lists, target, 1).tolist() == [True, True]
    assert gap.reaches_prefix(lists, target, 2).tolist() == [True, False]
    assert gap.reaches_prefix(lists, target, 3).tolist() == [False, False]
    empty = np.full((1, 1, 3), -1)
    assert gap.reaches_prefix(empty, np.array([[-1, -1, -1]]), 1).tolist() == [False]


def test_buckets_report_each_models_rate_and_the_ratio(gap):
    values = np.array([0, 3, 3, 60])
    hits = {"genrec": np.array([True, True, False, True]), "itemknn": np.array([False, True, True, False])}
    rows = gap.by_bucket(values, (0, 1, 5, 50), hits)
    assert rows[2] == "| [0, 1) | 1 | 1.0000 | 0.0000 | - |"
    assert rows[3] == "| [1, 5) | 2 | 0.5000 | 1.0000 | 0.50x |"
    assert rows[4] == "| 50+ | 1 | 1.0000 | 0.0000 | - |"


def test_a_trained_run_against_item_knn(gap, tiny_run, capsys):
    root, _ = tiny_run
    assert gap.main(["--data", str(root / "data"), "--run", str(root / "run"), "--cold-start", "0"]) == 0
    out = capsys.readouterr().out
    for heading in ("genrec vs itemknn", "by the target's training purchases", "by history length",
                    "reaches the target's SID prefix"):
        assert heading in out
