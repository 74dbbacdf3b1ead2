"""Two-tower retriever: in-batch softmax with logQ, text item tower, faiss search equal to brute force."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from genrec.data.sequences import SequenceConfig, build_histories, make_splits
from genrec.evaluation.baselines.base import FitContext
from genrec.evaluation.baselines.two_tower import (TwoTower, TwoTowerConfig, TwoTowerModel, build_index,
                                                   label_log_frequency, search_excluding)
from semid.common import DataError
from helpers.cycles import CATALOG, N_ITEMS, cycle_events, expected_next
from semid.embeddings import write_embeddings


@pytest.fixture(scope="module")
def cycle_splits():
    return make_splits(build_histories(cycle_events(300, seed=1)), 50, SequenceConfig(split="leave_one_out"))


def tiny(**kw) -> TwoTower:
    cfg = dict(dim=32, layers=1, dropout=0.1, max_len=12, batch_size=32, lr=5e-3, max_epochs=30, patience=30,
               eval_every=5, temperature=0.1)
    return TwoTower(**{**cfg, **kw})


def ctx(seed: int = 0, run=None, **options) -> FitContext:
    return FitContext(item_ids=CATALOG, seed=seed, k_values=(5,), run=run, options=options)


def brute_force(model: TwoTower, queries, k: int) -> np.ndarray:
    """Exact top-k catalog ids by numpy inner products, history masked (the reference faiss must equal)."""
    scores = model.query_matrix(queries) @ model.item_matrix().T
    for i in range(len(queries)):
        scores[i, np.searchsorted(CATALOG, queries.history(i))] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.where(np.take_along_axis(scores, order, 1) > -np.inf, CATALOG[order], -1)


@pytest.fixture(scope="module")
def fitted(cycle_splits):
    return tiny().fit(cycle_splits.train, cycle_splits.validation, ctx())


def test_learns_a_planted_cycle(fitted, cycle_splits):
    top = fitted.recommend(cycle_splits.test, 3)
    assert top.shape == (len(cycle_splits.test), 3) and top.dtype == np.int64
    assert (top[:, 0] == expected_next(cycle_splits.test)).mean() > 0.9
    assert fitted.history[-1]["loss"] < fitted.history[0]["loss"]


def test_flat_faiss_equals_brute_force(fitted, cycle_splits):
    k = 8
    np.testing.assert_array_equal(fitted.recommend(cycle_splits.test, k), brute_force(fitted, cycle_splits.test, k))
    full = fitted.recommend(cycle_splits.test, N_ITEMS)  # deeper than the allowed items: -1 padded
    for i in range(len(cycle_splits.test)):
        allowed = N_ITEMS - np.unique(cycle_splits.test.history(i)).size
        assert (full[i, :allowed] >= 0).all() and (full[i, allowed:] == -1).all()


def test_hnsw_agrees_with_brute_force(fitted, cycle_splits):
    vectors = fitted.item_matrix()
    queries = fitted.query_matrix(cycle_splits.test)
    hnsw = build_index(vectors, TwoTowerConfig(index="hnsw", hnsw_m=8, hnsw_ef_search=64))
    none = np.zeros(0, np.int64)
    approx = search_excluding(hnsw, queries, 5, none, none)
    exact = np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :5]
    overlap = np.mean([np.intersect1d(a, e).size / 5 for a, e in zip(approx, exact)])
    assert overlap > 0.95


def test_search_excluding_skips_banned_pairs_and_pads():
    vectors = np.eye(4, dtype=np.float32)
    index = build_index(vectors, TwoTowerConfig())
    queries = np.array([[4, 3, 2, 1], [1, 2, 3, 4]], np.float32)
    out = search_excluding(index, queries, 3, np.array([0, 0, 1]), np.array([0, 2, 3]))
    assert out.tolist() == [[1, 3, -1], [2, 1, 0]]


def test_exclusions_and_history_never_returned(fitted, cycle_splits):
    test = cycle_splits.test
    expected = expected_next(test)
    top = fitted.recommend(test, 6, exclude=[np.array([e]) for e in expected])
    for i in range(len(test)):
        assert expected[i] not in top[i]
        assert not set(test.history(i).tolist()) & set(top[i].tolist())


def test_logq_is_the_log_label_share():
    labels = np.array([[0, 1, 1], [0, 2, 1]])
    log_q = label_log_frequency(labels, 3).numpy()
    # counts +1: item 1 -> 4, item 2 -> 2, item 3 -> 1 (of 7)
    np.testing.assert_allclose(np.exp(log_q[1:]), [4 / 7, 2 / 7, 1 / 7], rtol=1e-6)


def test_repeated_positives_are_not_negatives():
    torch.manual_seed(0)
    model = TwoTowerModel(N_ITEMS, TwoTowerConfig(dim=8, layers=1, dropout=0.0, max_len=4), None).eval()
    x = torch.tensor([[0, 1, 2], [0, 3, 4]])
    y_same = torch.tensor([[0, 0, 5], [0, 0, 5]])  # both rows' positive is item 5: a batch of one candidate
    with torch.no_grad():
        assert float(model.loss(x, y_same, None)) == pytest.approx(0.0, abs=1e-6)
        assert float(model.loss(x, torch.tensor([[0, 0, 5], [0, 0, 6]]), None)) > 0


def test_text_embeddings_enter_the_item_tower(cycle_splits, tmp_path):
    rng = np.random.default_rng(0)
    write_embeddings(CATALOG[:-2], rng.normal(size=(N_ITEMS - 2, 12)), tmp_path / "embeddings.parquet")
    model = tiny(max_epochs=3).fit(cycle_splits.train, cycle_splits.validation, ctx(run=tmp_path))
    assert model.model.text_proj is not None and model.model.text.shape == (N_ITEMS + 1, 12)
    assert model.model.text[-2:].abs().sum() == 0  # items without a text vector get zeros
    assert model.recommend(cycle_splits.test, 5).shape == (len(cycle_splits.test), 5)
    no_text = tiny(max_epochs=3, text=False).fit(cycle_splits.train, cycle_splits.validation, ctx(run=tmp_path))
    assert no_text.model.text_proj is None


def test_same_seed_same_model(cycle_splits):
    runs = [tiny(max_epochs=3).fit(cycle_splits.train, cycle_splits.validation, ctx(seed=s)) for s in (3, 3, 4)]
    losses = [[r["loss"] for r in m.history] for m in runs]
    assert losses[0] == losses[1] and losses[0] != losses[2]
    np.testing.assert_array_equal(runs[0].item_matrix(), runs[1].item_matrix())


def test_bad_config_and_unfitted_use_fail(cycle_splits):
    with pytest.raises(DataError, match="index"):
        TwoTower(index="ivf")
    with pytest.raises(DataError, match="temperature"):
        TwoTowerConfig(temperature=0)
    with pytest.raises(DataError, match="fit"):
        TwoTower().recommend(cycle_splits.test, 5)
