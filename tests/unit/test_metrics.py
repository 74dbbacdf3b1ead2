"""Ranking and candidate-quality metrics on hand-computed cases: single targets, baskets, repeats,
padding, empty baskets, score ties (expected values over random tie orders), new-to-shopper filtering."""
from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from genrec.evaluation.metrics import (ItemFacets, Targets, candidate_quality, keep_items, per_example, rank_metrics,
                            remove_items, unique_targets)
from semid.common import DataError

D = [1.0 / math.log2(r + 1) for r in range(1, 12)]  # discount of ranks 1..11


def test_single_target_recall_and_ndcg():
    ranked = np.array([[5, 3, 7], [1, 2, 4]])
    m = rank_metrics(ranked, Targets.from_lists([[3], [9]]), [1, 2, 3])
    assert m["recall@1"] == 0.0
    assert m["recall@2"] == pytest.approx(0.5)  # one of two examples hit at rank 2
    assert m["ndcg@2"] == pytest.approx(D[1] / 2)
    assert m["count"] == 2


def test_basket_recall_is_share_of_basket_and_ndcg_uses_ideal_of_min_k_size():
    ranked = np.array([[3, 1, 7, 9]])
    values = per_example(ranked, Targets.from_lists([[3, 7, 9]]), [2, 3, 4])
    assert values["recall@2"][0] == pytest.approx(1 / 3)
    assert values["recall@3"][0] == pytest.approx(2 / 3)
    assert values["ndcg@2"][0] == pytest.approx(D[0] / (D[0] + D[1]))
    assert values["ndcg@3"][0] == pytest.approx((D[0] + D[2]) / (D[0] + D[1] + D[2]))
    assert values["recall@4"][0] == pytest.approx(1.0)


def test_repeated_list_items_count_once_and_repeated_targets_are_a_set():
    ranked = np.array([[3, 3, 7]])
    values = per_example(ranked, Targets.from_lists([[3, 9]]), [3])
    assert values["recall@3"][0] == pytest.approx(0.5)  # 3 counted once, at rank 1
    assert values["ndcg@3"][0] == pytest.approx(D[0] / (D[0] + D[1]))
    values = per_example(np.array([[3, 1]]), Targets.from_lists([[3, 3]]), [1])
    assert values["recall@1"][0] == 1.0 and values["ndcg@1"][0] == 1.0
    assert unique_targets(Targets.from_lists([[4, 4, 2], [1]])).items.tolist() == [4, 2, 1]


def test_padding_is_never_a_hit():
    ranked = np.array([[-1, -1, 5]])
    values = per_example(ranked, Targets.from_lists([[-1, 5]]), [2, 3])
    assert values["recall@2"][0] == 0.0
    assert values["recall@3"][0] == pytest.approx(0.5)


def test_empty_baskets_are_nan_and_left_out_of_means():
    ranked = np.array([[1, 2], [3, 4], [5, 6]])
    targets = Targets.from_lists([[1], [], [9]])
    values = per_example(ranked, targets, [2])
    assert math.isnan(values["recall@2"][1]) and math.isnan(values["ndcg@2"][1])
    m = rank_metrics(ranked, targets, [2])
    assert m["recall@2"] == pytest.approx(0.5) and m["count"] == 2
    none = rank_metrics(ranked, Targets.from_lists([[], [], []]), [2])
    assert math.isnan(none["recall@2"]) and none["count"] == 0


def test_ties_give_expected_value_over_random_order():
    ranked = np.array([[10, 11, 12]])
    scores = np.array([[1.0, 1.0, 0.0]])
    values = per_example(ranked, Targets.from_lists([[11]]), [1, 2], scores=scores)
    assert values["recall@1"][0] == pytest.approx(0.5)  # 11 is first in half the orders
    assert values["ndcg@1"][0] == pytest.approx(0.5)
    assert values["recall@2"][0] == pytest.approx(1.0)
    assert values["ndcg@2"][0] == pytest.approx((D[0] + D[1]) / 2)
    strict = per_example(ranked, Targets.from_lists([[11]]), [1])
    assert strict["recall@1"][0] == 0.0  # without scores the list order is taken as is


def test_tie_group_straddling_the_cutoff():
    ranked = np.array([[1, 2, 3, 4]])
    scores = np.array([[2.0, 1.0, 1.0, 1.0]])
    values = per_example(ranked, Targets.from_lists([[4]]), [2], scores=scores)
    assert values["recall@2"][0] == pytest.approx(1 / 3)  # group ranks 2..4, one of them inside the top 2
    assert values["ndcg@2"][0] == pytest.approx(D[1] / 3)
    # averaging over ties never changes a metric whose hits and misses all tie together
    both = per_example(ranked, Targets.from_lists([[2, 3, 4]]), [4], scores=scores)
    assert both["recall@4"][0] == pytest.approx(1.0)


def test_padding_does_not_join_a_tie_group():
    ranked = np.array([[7, -1, -1]])
    scores = np.array([[-np.inf, -np.inf, -np.inf]])
    values = per_example(ranked, Targets.from_lists([[7]]), [1], scores=scores)
    assert values["recall@1"][0] == pytest.approx(1.0)


def test_new_to_shopper_and_slice_filters():
    targets = Targets.from_lists([[1, 2, 3], [4]])
    history = Targets.from_lists([[2, 9], [4]])
    new = remove_items(targets, history)
    assert new.offsets.tolist() == [0, 2, 2] and new.items.tolist() == [1, 3]
    ranked = np.array([[2, 1, 3], [4, 5, 6]])
    m = rank_metrics(ranked, new, [1, 2], prefix="new_")
    assert m["new_recall@1"] == 0.0 and m["new_recall@2"] == pytest.approx(0.5) and m["new_count"] == 1
    kept = keep_items(targets, np.array([3, 4]))
    assert kept.offsets.tolist() == [0, 1, 2] and kept.items.tolist() == [3, 4]


def test_bad_inputs_raise():
    with pytest.raises(DataError):
        rank_metrics(np.array([1, 2]), Targets.from_lists([[1]]), [1])
    with pytest.raises(DataError):
        rank_metrics(np.array([[1, 2]]), Targets.from_lists([[1], [2]]), [1])
    with pytest.raises(DataError):
        rank_metrics(np.array([[1, 2]]), Targets.from_lists([[1]]), [0])
    with pytest.raises(DataError):
        Targets(np.array([0, 3]), np.array([1, 2]))


def test_candidate_quality():
    items = pa.table({
        "item_id": pa.array([10, 11, 12, 13], pa.int64()),
        "brand": pa.array(["a", "a", None, "b"]),
        "category_path": pa.array([["x", "y"], ["x", "z"], ["x", "y"], []], pa.list_(pa.string())),
    })
    facets = ItemFacets.from_items(items)
    ranked = np.array([[10, 11, 12], [13, 99, -1]])
    q = candidate_quality(ranked, facets, [2, 3])
    assert q["brands@2"] == pytest.approx(1.0)  # row 0: {a}; row 1: {b} (99 unknown)
    assert q["categories@3"] == pytest.approx((2 + 0) / 2)  # row 0: y, z; row 1: 13 has no category
    assert q["coverage@2"] == pytest.approx(3 / 4)  # 10, 11, 13 (99 is no catalog item)
    assert q["coverage@3"] == pytest.approx(1.0)
    assert q["invalid_rate"] == pytest.approx(1 / 5)  # 99 is not in the catalog; padding is not counted
    assert q["pad_rate"] == pytest.approx(1 / 6)
    stocked = candidate_quality(ranked, facets, [3], allowed=np.array([10, 11]))
    assert stocked["invalid_rate"] == pytest.approx(3 / 5)
