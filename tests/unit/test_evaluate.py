"""The evaluation harness: one split for every model, no test item leaking into training, popularity from
training only, held-out anonymous baskets and the cold-start protocol, slices, the result JSON and table,
and the generative run evaluated beside the baselines."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from genrec.data.dataset import Dataset
from genrec.data.sequences import SequenceConfig, build_histories, make_splits
from genrec.evaluation.baselines import FitContext, make_baseline
from genrec.evaluation.harness import evaluate, format_table
from genrec.evaluation.protocol import (EvalConfig, build_eval_data, drop_events, held_out, tail_items, training_events,
                                        within_basket_queries)
from semid.common import DataError


def _items(n: int) -> pa.Table:
    """n items; item i has brand b{i%3} and leaf category c{i%4} (c0 rare by construction in tests)."""
    return pa.table({
        "item_id": pa.array(np.arange(n), pa.int64()),
        "title": [f"item {i}" for i in range(n)],
        "text": [f"item {i}" for i in range(n)],
        "brand": [f"b{i % 3}" for i in range(n)],
        "category_path": [["root", f"c{i % 4}"] for i in range(n)],
    })


def _sequences_dataset(seqs: dict[int, list[int]], n_items: int) -> Dataset:
    """One item per session (Amazon-like): user -> items in order."""
    rows = [(u, t, t, item, 0) for u, items in seqs.items() for t, item in enumerate(items)]
    u, s, ts, i, p = (list(c) for c in zip(*rows))
    events = pa.table({"user_id": pa.array(u, pa.int64()), "session_id": pa.array(s, pa.int64()),
                       "ts": pa.array(ts, pa.int64()), "item_id": pa.array(i, pa.int64()),
                       "position": pa.array(p, pa.int32())})
    return Dataset(items=_items(n_items), events=events)


def _basket_dataset() -> Dataset:
    """Grocery-like: 4 known shoppers with 3 baskets each, and 10 anonymous one-basket shoppers."""
    rng = np.random.default_rng(0)
    rows = []
    for u in range(1, 5):
        for order in range(3):
            for pos, item in enumerate(rng.choice(30, 4, replace=False)):
                rows.append((u, u * 100 + order, order, int(item), pos))
    for a in range(1, 11):
        for pos, item in enumerate(rng.choice(30, 5, replace=False)):
            rows.append((-a, 10_000 + a, 0, int(item), pos))
    u, s, ts, i, p = (list(c) for c in zip(*rows))
    events = pa.table({"user_id": pa.array(u, pa.int64()), "session_id": pa.array(s, pa.int64()),
                       "ts": pa.array(ts, pa.int64()), "item_id": pa.array(i, pa.int64()),
                       "position": pa.array(p, pa.int32())})
    return Dataset(items=_items(30), events=events)


@pytest.fixture
def seq_data(tmp_path):
    rng = np.random.default_rng(1)
    seqs = {u: rng.choice(40, 6 + u % 4, replace=False).tolist() for u in range(60)}
    seqs[0] = [1, 2, 3, 4, 39]  # item 39 is only ever a test target: never popular in training
    seqs[1] = [5, 6, 7, 8, 39]
    seqs[2] = [9, 10, 11, 12, 39]
    for u in range(3, 60):
        seqs[u] = [x for x in seqs[u] if x != 39]
    _sequences_dataset(seqs, 40).write(tmp_path / "ds")
    return tmp_path / "ds", seqs


def test_no_test_or_validation_target_enters_training(seq_data):
    path, seqs = seq_data
    data = build_eval_data(path, SequenceConfig(split="leave_one_out"), EvalConfig(), seed=0)
    for i, user in enumerate(data.sequences.user_ids):
        assert data.sequences.history(i).tolist() == seqs[int(user)][:-2]  # all but validation and test
    for e in (data.train,):
        for i in range(len(e)):
            user = int(e.user_ids[i])
            assert np.isin(e.targets(i), seqs[user][:-2]).all()
            assert np.isin(e.history(i), seqs[user][:-2]).all()
    test_users = data.test.user_ids.tolist()
    assert [int(t) for t in data.test.target_items] == [seqs[u][-1] for u in test_users]
    assert [int(t) for t in data.validation.target_items] == [seqs[u][-2] for u in data.validation.user_ids.tolist()]


def test_popularity_comes_from_training_only(seq_data):
    path, _ = seq_data
    data = build_eval_data(path, SequenceConfig(split="leave_one_out"), EvalConfig(), seed=0)
    ctx = FitContext(item_ids=data.catalog, sequences=data.sequences)
    model = make_baseline("popular").fit(data.train, data.validation, ctx)
    assert model.counts[39] == 0  # three test targets, no training interaction
    assert 39 not in model.recommend(data.test, 10)


def test_evaluate_json_and_table(seq_data):
    path, _ = seq_data
    result = evaluate(path, None, ["popular", "itemknn"], seed=0,
                      config=EvalConfig(baseline_options={"itemknn": {"rounds": 1}}))
    json.dumps(result)  # plain JSON
    assert set(result["models"]) == {"popular", "itemknn"}
    for name in ("popular", "itemknn"):
        m = result["models"][name]
        for key in ("recall@5", "recall@10", "ndcg@5", "ndcg@10", "brands@10", "categories@10", "coverage@10",
                    "invalid_rate"):
            assert key in m and 0.0 <= m[key] <= 10, (name, key)
        assert m["invalid_rate"] == 0.0
        assert "exclude_history" in result["choices"][name]
    assert {"cold_start", "tail"} <= set(result["slices"])
    assert result["slices"]["cold_start"]["popular"]["count"] == 3  # the three users whose target is item 39
    assert result["slices"]["cold_start"]["popular"]["recall@10"] == 0.0
    table = format_table(result)
    assert "itemknn" in table and "recall@10" in table and "slice: cold_start" in table


def test_evaluate_rejects_unknown_baseline(seq_data):
    with pytest.raises(DataError, match="unknown baselines"):
        evaluate(seq_data[0], None, ["nope"])


def test_max_test_samples_the_same_examples_for_every_model(seq_data):
    path, _ = seq_data
    a = build_eval_data(path, SequenceConfig(), EvalConfig(max_test=10), seed=4)
    b = build_eval_data(path, SequenceConfig(), EvalConfig(max_test=10), seed=4)
    assert len(a.test) == 10 and a.test.user_ids.tolist() == b.test.user_ids.tolist()
    assert a.test_full.user_ids.tolist() == a.test.user_ids.tolist()


def test_anonymous_baskets_held_out_and_within_basket_queries(tmp_path):
    ds = _basket_dataset()
    ds.write(tmp_path / "ds")
    cfg = EvalConfig(within_basket_share=0.3)
    data = build_eval_data(tmp_path / "ds", SequenceConfig(), cfg, seed=0)
    assert data.split == "last_basket"
    held = data.protocol["heldout_anonymous_baskets"]
    assert held == 3
    w = data.within_basket
    assert len(w) == held * 4  # 5-item baskets: 4 (prefix -> next) queries each
    held_users = set(w.user_ids.tolist())
    assert not held_users & set(data.sequences.user_ids.tolist())  # never trained on
    users, pos, items = (ds.events.column(c).to_numpy() for c in ("user_id", "position", "item_id"))
    for i in range(len(w)):
        mine = users == w.user_ids[i]
        basket = items[mine][np.argsort(pos[mine])].tolist()
        h = w.history(i).tolist()
        assert basket[: len(h)] == h and w.targets(i).tolist() == [basket[len(h)]]
    new = evaluate(tmp_path / "ds", None, ["popular", "own_popular"], config=cfg)
    assert "new_recall@20" in new["models"]["own_popular"] and "within_basket" in new["slices"]


def test_within_basket_queries_sample():
    ds = _basket_dataset()
    h = build_histories(ds.events)
    _, baskets, _ = held_out(h, SequenceConfig(split="last_basket"), 0, 1.0, None)
    q = within_basket_queries(baskets, 7, seed=0)
    assert len(q) == 7 and (np.diff(q.history_offsets) >= 1).all()


def test_cold_start_protocol_removes_items_before_test_only(seq_data):
    path, seqs = seq_data
    cfg = EvalConfig(cold_start_fraction=0.2)
    data = build_eval_data(path, SequenceConfig(split="leave_one_out"), cfg, seed=3)
    cold = data.cold_items
    assert cold.size == max(1, round(0.2 * np.unique(data.test.target_items).size))
    assert not np.isin(data.sequences.history_items, cold).any()
    assert not np.isin(data.train.target_items, cold).any() and not np.isin(data.train.history_items, cold).any()
    assert not np.isin(data.validation.target_items, cold).any()
    assert not np.isin(data.test.history_items, cold).any()
    n_cold_test = int(np.isin(data.test.target_items, cold).sum())
    plain = build_eval_data(path, SequenceConfig(split="leave_one_out"), EvalConfig(), seed=3)
    assert n_cold_test == int(np.isin(plain.test.target_items, cold).sum())  # test targets kept
    again = build_eval_data(path, SequenceConfig(split="leave_one_out"), cfg, seed=3)
    assert again.cold_items.tolist() == cold.tolist()


def test_training_events_match_the_harness_split(seq_data, tmp_path):
    path, _ = seq_data
    from genrec.data.dataset import read_dataset

    ds = read_dataset(path)
    seq_cfg = SequenceConfig(split="leave_one_out")
    events = training_events(ds.events, seq_cfg, seed=3, cold_start_fraction=0.2)
    h = build_histories(ds.events)
    keep, _, cold = held_out(h, seq_cfg, 3, 0.1, 0.2)
    expect = drop_events(h, keep)
    got = build_histories(events)
    assert got.user_ids.tolist() == expect.user_ids.tolist()
    assert got.items.tolist() == expect.items.tolist()
    assert events.num_rows == ds.events.num_rows - int((~keep).sum()) and (~keep).sum() > 0
    train = make_splits(got, 50, seq_cfg).train
    assert not np.isin(train.target_items, cold).any()


def test_drop_events_keeps_session_starts(tmp_path):
    ds = _basket_dataset()
    h = build_histories(ds.events)
    keep = np.ones(h.items.size, bool)
    keep[h.offsets[0]] = False  # the first item of the first shopper's first basket
    d = drop_events(h, keep)
    assert d.session_start[d.offsets[0]] and d.lengths[0] == h.lengths[0] - 1
    assert int(d.session_start.sum()) == int(h.session_start.sum())


def test_tail_items_take_least_interacted_categories(seq_data):
    path, _ = seq_data
    data = build_eval_data(path, SequenceConfig(split="leave_one_out"), EvalConfig(), seed=0)
    tail = tail_items(data.items, data.sequences, 0.2)
    leaf = np.arange(40) % 4
    counts = np.bincount(leaf[data.sequences.history_items], minlength=4)
    rarest = int(np.argmin(counts))
    assert set(tail.tolist()) >= set(np.flatnonzero(leaf == rarest).tolist())
    share = counts[np.unique(leaf[tail])].sum() / counts.sum()
    assert share <= 0.2 or np.unique(leaf[tail]).size == 1


def test_generative_run_beside_baselines(tiny_run):
    root, _ = tiny_run
    result = evaluate(root / "data", root / "run", ["popular", "semantic_knn"], k_values=[5, 10], seed=0,
                      config=EvalConfig(max_test=40, tune_examples=40, beam_width=10))
    assert set(result["models"]) == {"genrec", "popular", "semantic_knn"}
    assert result["models"]["genrec"]["invalid_rate"] == 0.0
    assert 0.0 <= result["models"]["genrec"]["recall@10"] <= 1.0
    retailer_slices = [s for s in result["slices"] if s.startswith("retailer_")]
    assert retailer_slices  # the synthetic world has retailers
    for s in retailer_slices:
        for name in result["models"]:
            assert result["slices"][s][name]["invalid_rate"] == 0.0  # every list holds only stocked items
    assert "genrec" in format_table(result)


def test_cold_start_hold_out_accepts_a_config_train_stride():
    """A run config's train_stride (Instacart: 25) must not break the one-item test split of the hold-out."""
    h = build_histories(_basket_dataset().events)
    seq_cfg = SequenceConfig(split="last_basket", train_stride=25)
    keep, _, cold = held_out(h, seq_cfg, 0, 0.0, 0.5)
    assert cold.size >= 1 and keep.dtype == bool
    plain_keep, _, plain_cold = held_out(h, SequenceConfig(split="last_basket"), 0, 0.0, 0.5)
    assert cold.tolist() == plain_cold.tolist() and keep.tolist() == plain_keep.tolist()


def test_each_k_is_scored_on_the_list_made_for_it():
    """Our model's top K has its own cold-start slots, so recall@K reads the K-list, not a longer list's
    prefix; one list serves every K by its prefixes."""
    from genrec.evaluation.harness import _by_k
    from genrec.evaluation.metrics import Targets, rank_metrics

    targets = Targets(np.array([0, 1]), np.array([7]))
    per_k = _by_k(rank_metrics, {1: np.array([[7]]), 2: np.array([[3, 5]])}, targets, [1, 2])
    assert per_k["recall@1"] == 1.0 and per_k["recall@2"] == 0.0
    one = _by_k(rank_metrics, {2: np.array([[5, 7]])}, targets, [1, 2])
    assert one["recall@1"] == 0.0 and one["recall@2"] == 1.0


def test_training_dataset_dates_the_cold_start_items_as_launched_after_the_log(seq_data):
    """Only what the cold-start protocol launches (and what the catalog itself dates later) is new to the
    index built on the training copy: every other product, bought in training, later or never, is listed
    from the start, so one without training interactions is established and stays out of the pool."""
    from genrec.data.dataset import read_dataset
    from genrec.evaluation.protocol import training_dataset
    from genrec.run.build import established_items

    path, _ = seq_data
    ds = read_dataset(path)
    items = _items(41).append_column("first_seen", pa.array([None] * 39 + [7, None], pa.int64()))
    ds = Dataset(items, ds.events)  # 39: a launch the catalog dates; 40: never bought
    seq_cfg = SequenceConfig(split="leave_one_out")
    train = training_dataset(ds, seq_cfg, seed=3, cold_start_fraction=0.2)
    assert train.events.equals(training_events(ds.events, seq_cfg, seed=3, cold_start_fraction=0.2))
    cold = held_out(build_histories(ds.events), seq_cfg, 3, 0.1, 0.2)[2]
    dated = train.items.column("first_seen").to_numpy()
    end = int(pa.compute.max(ds.events.column("ts")).as_py())
    others = ~np.isin(np.arange(41), cold) & (np.arange(41) != 39)
    assert (dated[cold] == end + 1).all() and (dated[others] == 0).all() and (39 in cold or dated[39] == 7)
    established = established_items(train, np.arange(41))
    assert not established[cold].any() and established[others].all() and not established[39]
    assert not established_items(read_dataset(path), np.arange(40)).any()  # no dates known: nothing is established


def test_trained_baselines_may_list_re_buys_on_baskets(tmp_path):
    """On baskets a re-buy is a right answer: SASRec keeps history items in its lists (every one of the 30
    items fits a 50-list, so recall@50 is 1) unless the harness chooses to exclude them."""
    _basket_dataset().write(tmp_path / "ds")
    quick = {"sasrec_ce": {"max_epochs": 1, "dim": 8}}
    kept = evaluate(tmp_path / "ds", None, ["sasrec_ce"], config=EvalConfig(fit_options=quick, exclude_history="never"))
    assert kept["models"]["sasrec_ce"]["recall@50"] == 1.0
    cut = evaluate(tmp_path / "ds", None, ["sasrec_ce"], config=EvalConfig(fit_options=quick, exclude_history="always"))
    assert cut["models"]["sasrec_ce"]["recall@50"] < 1.0


def test_the_generative_model_decodes_a_bounded_batch_at_a_time():
    """Eval's memory is one beam search's: the harness hands the retriever DECODE_BATCH queries at a time and
    stitches the lists back in query order."""
    from types import SimpleNamespace

    from genrec.evaluation import harness

    calls = []

    class Retriever:
        def retrieve_lists(self, histories, retailers, ks, exclude_history=False):
            calls.append(len(histories))
            first = np.array([h[0] for h in histories])
            return {k: SimpleNamespace(item_ids=first[:, None] + np.arange(k)) for k in ks}

    n = 2 * harness.DECODE_BATCH + 7
    queries = type("Q", (), {"__len__": lambda self: n, "history": lambda self, i: np.array([100 + i, 5]),
                             "retailer_ids": np.full(n, -1)})()
    model = harness.GenerativeModel.__new__(harness.GenerativeModel)
    model.retriever = Retriever()
    lists = model.recommend_lists(queries, [3, 1])
    assert calls == [harness.DECODE_BATCH, harness.DECODE_BATCH, 7]
    assert lists[3].shape == (n, 3) and lists[3][:, 0].tolist() == [100 + i for i in range(n)]
    assert lists[1].tolist() == lists[3][:, :1].tolist()
