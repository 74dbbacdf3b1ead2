"""Non-neural baselines and the shared top-K helpers: exact agreement of the dense, sparse and fixed-order
top-K paths (ties, exclusions, padding), training sequences rebuilt from windows, and each baseline on
small planted data (the real Beauty split: ``tests/integration/test_beauty.py``)."""
from __future__ import annotations


import numpy as np
import pytest
import scipy.sparse as sp

from genrec.data.sequences import Examples, Histories, SequenceConfig, make_splits, query_examples, train_sequences
from genrec.evaluation.baselines import BASELINES, FitContext, make_baseline
from genrec.evaluation.baselines.base import (excluded_mask, first_k_allowed, fixed_order_top_k, popularity_ranking,
                                              sparse_top_k, top_k)
from semid.catalog import catalog_rows
from semid.common import DataError
from semid.embeddings import write_embeddings


def _examples(histories: list[list[int]], targets: list[list[int]] | None = None) -> Examples:
    q = query_examples(histories, 1000)
    if targets is None:
        return q
    t_off = np.r_[0, np.cumsum([len(t) for t in targets])].astype(np.int64)
    flat = np.array([x for t in targets for x in t], np.int64)
    return Examples(q.user_ids, q.history_offsets, q.history_items, t_off, flat, q.retailer_ids)


def test_top_k_orders_ties_excludes_and_pads():
    cat = np.array([10, 20, 30, 40, 50])
    s = np.array([[1, 2, 2, 2, 0], [5, 5, 5, 5, 5], [1, -np.inf, -np.inf, -np.inf, -np.inf]], float)
    assert top_k(s, cat, 3).tolist() == [[20, 30, 40], [10, 20, 30], [10, -1, -1]]
    excl = [np.array([20]), np.array([], np.int64), np.array([10])]
    assert top_k(s, cat, 3, excl).tolist() == [[30, 40, 10], [10, 20, 30], [-1, -1, -1]]
    assert top_k(s, cat, 7)[0].tolist() == [20, 30, 40, 10, 50, -1, -1]
    assert top_k(s, cat, 2, tiebreak=np.array([0, 0, 0, 1, 0.0])).tolist() == [[40, 20], [40, 10], [10, -1]]


def test_sparse_and_fixed_order_paths_equal_dense_top_k():
    rng = np.random.default_rng(0)
    cat = np.arange(60) * 3 + 5
    counts = rng.integers(0, 5, 60).astype(float)
    fallback = popularity_ranking(cat, counts)
    tiebreak = np.empty(60)
    tiebreak[np.searchsorted(cat, fallback)] = -np.arange(60)  # the fallback order as a dense tiebreak
    for trial in range(60):
        dense = rng.integers(0, 4, (12, 60)).astype(float) * (rng.random((12, 60)) < rng.random())
        excl = [rng.choice(cat, rng.integers(0, 15)) for _ in range(12)]
        k = int(rng.integers(1, 25))
        expect = top_k(dense, cat, k, excl, tiebreak=tiebreak)
        assert (sparse_top_k(sp.csr_matrix(dense), cat, k, excl, fallback) == expect).all(), trial
        same_rows = np.tile(counts, (12, 1))
        assert (fixed_order_top_k(fallback, 12, k, excl) == top_k(same_rows, cat, k, excl)).all(), trial


def test_sparse_top_k_rejects_negative_scores():
    with pytest.raises(DataError):
        sparse_top_k(sp.csr_matrix(np.array([[-1.0, 0.0]])), np.array([1, 2]), 1, None, np.array([1, 2]))


def test_first_k_allowed_and_excluded_mask():
    cand = np.array([[5, 6, 7, 8], [1, -1, 2, 3]])
    mask = excluded_mask(cand, [np.array([6]), np.array([2, 9])])
    assert mask.tolist() == [[False, True, False, False], [False, False, True, False]]
    assert first_k_allowed(cand, ~mask, 2).tolist() == [[5, 7], [1, 3]]


def test_catalog_rows_in_any_order_with_absent_ids():
    catalog = np.array([30, 10, 20])
    assert catalog_rows(catalog, np.array([20, 30, 99, 10, 20])).tolist() == [2, 0, -1, 1, 2]
    assert catalog_rows(np.array([], np.int64), np.array([1, 2])).tolist() == [-1, -1]


def test_train_sequences_rebuild_each_shoppers_training_items():
    items = np.arange(100)
    offs = np.array([0, 10, 13, 40, 100])
    h = Histories(np.array([1, 2, 3, 4]), offs, items, np.ones(100, bool), np.full(100, -1))
    splits = make_splits(h, 5, SequenceConfig(split="leave_one_out"))
    seqs = train_sequences(splits.train)
    got = {int(u): seqs.history(i).tolist() for i, u in enumerate(seqs.user_ids)}
    assert got == {1: list(range(0, 8)), 3: list(range(13, 38)), 4: list(range(40, 98))}  # user 2: 1 item, no label


def test_registry():
    names = {"popular", "own_popular", "tifuknn", "itemknn", "semantic_knn", "sasrec_ce", "sasrec_bce", "two_tower"}
    assert names <= set(BASELINES)
    with pytest.raises(DataError, match="unknown baseline"):
        make_baseline("nope")
    assert make_baseline("popular").name == "popular"


def test_most_popular_counts_training_and_skips_excluded():
    train = _examples([[1], [1], [2]], [[2, 3], [2], [3]])  # sequences: 1 2 3 / 1 2 / 2 3
    ctx = FitContext(item_ids=np.arange(6))
    m = make_baseline("popular").fit(train, _examples([[1]], [[4]]), ctx)
    assert m.recommend(_examples([[0], [2]]), 3, [np.array([], np.int64), np.array([2])]).tolist() == [
        [2, 1, 3], [1, 3, 0]]


def test_own_most_bought_ranks_own_items_then_popular():
    train = _examples([[1], [4]], [[1, 1, 2], [5, 5]])
    validation = _examples([[1, 1, 2, 1], [4, 5, 5]], [[1], [5]])
    ctx = FitContext(item_ids=np.arange(8), tune_examples=None)
    m = make_baseline("own_popular").fit(train, validation, ctx)
    assert m.uses_full_history
    out = m.recommend(_examples([[3, 3, 6], [7]]), 4)
    assert out[0, :2].tolist() == [3, 6]  # bought twice, then once
    assert out[1, :2].tolist() == [7, 1]  # own item, then the most popular training item (1: 3 times)
    m.decay = 0.1  # a strong decay: the latest purchase wins over the repeated older one
    assert m.recommend(_examples([[3, 3, 6]]), 1).tolist() == [[6]]


def _planted_chains(n_users: int = 300, seed: int = 0) -> tuple[Examples, Examples, Examples]:
    """Shoppers walk chains 0->1->2->3->4 or 10->11->12->13->14 (a random start), noise items 20..39 rare."""
    rng = np.random.default_rng(seed)
    seqs = []
    for u in range(n_users):
        base = 0 if u % 2 else 10
        start = int(rng.integers(0, 2))
        seq = [base + start + j for j in range(4)]
        seq.insert(int(rng.integers(0, 4)), int(rng.integers(20, 40)))
        seqs.append(seq)
    lengths = np.array([len(s) for s in seqs])
    h = Histories(np.arange(n_users), np.r_[0, np.cumsum(lengths)], np.concatenate(seqs),
                  np.ones(lengths.sum(), bool), np.full(lengths.sum(), -1))
    s = make_splits(h, 20, SequenceConfig(split="leave_one_out"))
    return s.train, s.validation, s.test


def test_itemknn_learns_planted_successors():
    train, validation, test = _planted_chains()
    ctx = FitContext(item_ids=np.arange(40), k_values=(1, 5), tune_metric="recall@1")
    m = make_baseline("itemknn", rounds=1).fit(train, validation, ctx)
    assert m.recommend(_examples([[0, 1, 2]]), 1, [np.array([0, 1, 2])]).tolist() == [[3]]
    assert m.recommend(_examples([[11, 12]]), 1, [np.array([11, 12])]).tolist() == [[13]]
    assert m.recommend(_examples([[]]), 1).tolist() == [[int(popularity_ranking(np.arange(40), m.counts)[0])]]
    assert set(m.choices) >= {"window", "last_n", "recency"}
    fixed = make_baseline("itemknn", tune=False, window=1, backward=0.0).fit(train, validation, ctx)
    assert fixed.settings.window == 1
    assert fixed.recommend(_examples([[2]]), 2, [np.array([3])])[0, 0] != 3


def _taste_groups(n_users: int, seed: int) -> tuple[Examples, Examples]:
    """Shoppers of two tastes (items 0..19 or 20..39), each with 6 items of its taste bought before; the target
    is another item of that taste it never bought. (training sequences as windows, queries with targets)"""
    rng = np.random.default_rng(seed)
    hist, targets = [], []
    for u in range(n_users):
        pool = rng.permutation(20) + 20 * (u % 2)
        hist.append(pool[:6].tolist())
        targets.append([int(pool[6])])
    return _examples([h[:1] for h in hist], [h[1:] for h in hist]), _examples(hist, targets)


def test_tifuknn_borrows_from_shoppers_of_the_same_taste():
    train, queries = _taste_groups(200, seed=0)
    ctx = FitContext(item_ids=np.arange(40), tune_examples=None, tune_with_exclusion=False)
    validation = _taste_groups(60, seed=1)[1]
    own = make_baseline("own_popular").fit(train, validation, ctx)
    tifu = make_baseline("tifuknn").fit(train, validation, ctx)
    assert tifu.uses_full_history and tifu.settings.alpha < 1
    exclude = [queries.history(i) for i in range(len(queries))]

    def hit(model) -> float:
        lists = model.recommend(queries, 5, exclude)
        return float(np.mean([queries.targets(i)[0] in row for i, row in enumerate(lists)]))

    taste = tifu.recommend(queries, 5, exclude)
    assert (taste // 20 == (np.arange(len(queries)) % 2)[:, None]).all()  # only its own taste's items
    assert hit(tifu) > 0.3 > hit(own) + 0.1


def test_semantic_knn_nearest_by_embedding(tmp_path):
    vecs = np.zeros((6, 3), np.float32)
    vecs[:, 0] = [1, 0.9, 0.1, 0, 0, 0.5]
    vecs[:, 1] = [0, 0.1, 1, 1, 0.2, 0.5]
    vecs[:, 2] = [0, 0, 0, 0.1, 1, 0]
    path = tmp_path / "emb.parquet"
    write_embeddings(np.arange(6), vecs, path)
    train = _examples([[0], [2]], [[1], [3]])
    ctx = FitContext(item_ids=np.arange(7), tune_examples=None)  # item 6 has no embedding
    m = make_baseline("semantic_knn", embeddings=str(path)).fit(train, _examples([[0]], [[1]]), ctx)
    out = m.recommend(_examples([[0], [3], []]), 3, [np.array([0]), np.array([], np.int64), np.array([1])])
    assert out[0].tolist() == [1, 5, 2]
    assert out[1, 0] == 3 and 6 not in out
    assert out[2, 0] != 1 and (out[2] >= 0).all()  # empty history: popular items, excluded one skipped


def test_semantic_knn_needs_embeddings():
    with pytest.raises(DataError, match="embeddings"):
        make_baseline("semantic_knn").fit(_examples([[0]], [[1]]), _examples([[0]], [[1]]),
                                          FitContext(item_ids=np.arange(3)))
