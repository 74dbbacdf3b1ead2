"""Histories, splits and token sequences: ordering, caps, no leakage, label masks, padding, batching."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from genrec.data.sequences import NO_RETAILER, SequenceConfig, build_histories, make_splits, query_examples
from genrec.model.tokens import IGNORE, ItemTokens, collate, epoch_batches, tokenize_examples
from semid.common import DataError

def _events(rows):
    """rows: (user, session, ts, item, position[, retailer])."""
    cols = list(zip(*rows))
    table = {"user_id": cols[0], "session_id": cols[1], "ts": cols[2], "item_id": cols[3], "position": cols[4]}
    if len(cols) > 5:
        table["retailer_id"] = pa.array(cols[5], pa.int32())
    return pa.table(table)


def _lists(examples):
    return [(examples.history(i).tolist(), examples.targets(i).tolist()) for i in range(len(examples))]


def test_history_orders_sessions_by_ts_and_items_by_position():
    # user 7: session 20 at ts 1 (positions 1, 0), session 10 at ts 5; user 3 listed later, sorted first
    ev = _events([(7, 10, 5, 105, 0), (7, 20, 1, 102, 1), (7, 20, 1, 101, 0), (3, 30, 0, 9, 0)])
    h = build_histories(ev)
    assert h.user_ids.tolist() == [3, 7]
    assert h.items[h.offsets[1] : h.offsets[2]].tolist() == [101, 102, 105]
    assert h.session_start.tolist() == [True, True, False, True]


def test_ties_in_ts_are_broken_by_session_id():
    ev = _events([(1, 9, 0, 3, 0), (1, 4, 0, 2, 0), (1, 4, 0, 1, 1)])
    h = build_histories(ev)
    assert h.items.tolist() == [2, 1, 3]
    assert h.session_start.tolist() == [True, False, True]


def test_leave_one_out_splits_and_caps():
    ev = _events([(1, 1, t, 100 + t, 0) for t in range(6)] + [(2, 2, t, 200 + t, 0) for t in range(2)])
    s = make_splits(build_histories(ev), max_items=3, cfg=SequenceConfig(split="leave_one_out"))
    assert _lists(s.test) == [([102, 103, 104], [105]), ([200], [201])]
    assert _lists(s.validation) == [([101, 102, 103], [104])]  # user 2 has no history before its validation item
    # training: items 100..103, first item context only, windows of stride 1 (= max_items // 2) labelled once
    train = _lists(s.train)
    assert [t for _, t in train] == [[101], [102], [103]]
    assert train[-1] == ([100, 101, 102], [103])
    assert all(len(hist) <= 3 for hist, _ in train)


def test_train_windows_label_every_item_once_with_bounded_context():
    n = 23
    ev = _events([(1, 1, t, t, 0) for t in range(n)])
    cfg = SequenceConfig(split="leave_one_out", train_stride=4, train_first_item=True)
    s = make_splits(build_histories(ev), max_items=6, cfg=cfg)
    labelled = np.concatenate([s.train.targets(i) for i in range(len(s.train))])
    assert sorted(labelled.tolist()) == list(range(n - 2))  # each train item once, none of the held-out two
    for hist, tgt in _lists(s.train):
        assert len(hist) + len(tgt) <= 7  # max_items of context for the last target
        assert hist + tgt == list(range(hist[0] if hist else tgt[0], tgt[-1] + 1))  # contiguous, in order
    assert _lists(s.train)[0][0] == []  # the earliest window starts the history


def test_last_basket_split_holds_out_whole_orders_without_leakage():
    rows = []
    for order in range(4):  # orders 0..3 of user 5, three items each, retailer = order number
        rows += [(5, 50 + order, order, 10 * order + p, p, order) for p in range(3)]
    s = make_splits(build_histories(_events(rows)), max_items=4, cfg=SequenceConfig(split="auto"))
    assert _lists(s.test) == [([11, 12, 20, 21, 22][-4:], [30, 31, 32])]
    assert _lists(s.validation) == [([2, 10, 11, 12], [20, 21, 22])]
    assert s.test.retailer_ids.tolist() == [3] and s.validation.retailer_ids.tolist() == [2]
    train_items = set(np.concatenate([s.train.history_items, s.train.target_items]).tolist())
    assert train_items == {0, 1, 2, 10, 11, 12}  # nothing from the validation or test basket
    assert s.train.retailer_ids.tolist()[-1] == 1


def test_shoppers_too_short_to_hold_out_train_on_what_they_have():
    rows = [(9, 90, 0, 1, 0), (9, 90, 0, 2, 1), (9, 90, 0, 3, 2)]  # one basket: nothing to hold out
    rows += [(8, 80, 0, 4, 0), (8, 80, 0, 5, 1), (8, 81, 1, 6, 0)]  # two baskets: the last is the test
    s = make_splits(build_histories(_events(rows)), max_items=5, cfg=SequenceConfig(split="last_basket"))
    assert _lists(s.test) == [([4, 5], [6])] and len(s.validation) == 0
    assert _lists(s.train) == [([4], [5]), ([1], [2, 3])]


def test_no_test_or_validation_item_leaks_into_training_on_random_events():
    rng = np.random.default_rng(0)
    n = 3000
    users = rng.integers(0, 200, n)
    ev = _events(list(zip(users, rng.integers(0, 10, n), rng.integers(0, 8, n), np.arange(n), rng.integers(0, 5, n))))
    h = build_histories(ev)
    for split in ("leave_one_out", "last_basket"):
        s = make_splits(h, max_items=5, cfg=SequenceConfig(split=split, train_stride=2))
        held = set(s.test.target_items.tolist()) | set(s.validation.target_items.tolist())
        train = set(s.train.history_items.tolist()) | set(s.train.target_items.tolist())
        assert not held & train  # item ids are unique per event, so any overlap would be a leak
        assert np.diff(s.test.history_offsets).max() <= 5


def test_missing_column_and_empty_events_are_data_errors():
    with pytest.raises(DataError, match="missing required column 'position'"):
        build_histories(pa.table({"user_id": [1], "session_id": [1], "ts": [0], "item_id": [1]}))
    with pytest.raises(DataError, match="no events"):
        build_histories(_events([(1, 1, 0, 1, 0)]).slice(0, 0))


def test_query_examples_keep_the_most_recent_items():
    q = query_examples([[1, 2, 3, 4], [5], []], max_items=2, retailer_ids=np.array([7, -1, 3]))
    assert _lists(q) == [([3, 4], []), ([5], []), ([], [])]
    assert q.retailer_ids.tolist() == [7, -1, 3]
    assert query_examples([[1]], max_items=2).retailer_ids.tolist() == [NO_RETAILER]
    with pytest.raises(DataError, match="2 histories but 1 retailer"):
        query_examples([[1], [2]], max_items=2, retailer_ids=np.array([1]))


def _item_tokens():
    ids = np.array([100, 101, 102, 103, 104, 105])
    tokens = np.stack([10 + ids % 3, 20 + ids % 2, np.full(6, 30)], axis=1)  # 3 tokens per item
    return ItemTokens(ids, tokens)


def test_tokenize_with_retailer_and_labels_mask_prefix_history_and_padding():
    rows = [(1, 1, t, 100 + t, 0, 7) for t in range(5)] + [(2, 2, t, 102 + t, 0, 8) for t in range(4)]
    s = make_splits(build_histories(_events(rows)), max_items=10, cfg=SequenceConfig(split="leave_one_out"))
    toks = _item_tokens()
    seqs = tokenize_examples(s.train, toks, bos_id=1, retailer_token=lambda r: r + 50)
    assert seqs.tokens[seqs.offsets[0] : seqs.offsets[1]].tolist() == [1, 57, *toks.tokens[:3].ravel()]
    assert seqs.n_context.tolist() == [2 + 3, 2 + 3]  # bos + retailer + first item
    batch = collate(seqs, np.array([0, 1]), pad_id=0)
    labels, ids = batch["labels"].numpy(), batch["input_ids"].numpy()
    assert labels[0].tolist() == [IGNORE] * 5 + ids[0, 5:11].tolist()
    assert labels[1].tolist() == [IGNORE] * 5 + ids[1, 5:8].tolist() + [IGNORE] * 3
    assert ids[1, 8:].tolist() == [0, 0, 0] and batch["attention_mask"][1].tolist() == [1] * 8 + [0] * 3


def test_left_padding_positions_and_query_prefixes():
    ev = _events([(1, 1, t, 100 + t, 0) for t in range(4)] + [(2, 2, t, 100 + t, 0) for t in range(3)])
    s = make_splits(build_histories(ev), max_items=10, cfg=SequenceConfig(split="leave_one_out"))
    q = tokenize_examples(s.test, _item_tokens(), bos_id=1, with_targets=False)
    assert q.lengths.tolist() == [1 + 3 * 3, 1 + 2 * 3] and q.n_context.tolist() == q.lengths.tolist()
    batch = collate(q, np.array([0, 1]), pad_id=0, padding_side="left")
    assert batch["attention_mask"][1].tolist() == [0, 0, 0] + [1] * 7
    assert batch["position_ids"][1].tolist() == [0, 0, 0] + list(range(7))
    assert (batch["labels"] == IGNORE).all()
    assert NO_RETAILER == -1 and s.test.retailer_ids.tolist() == [-1, -1]


def test_unknown_item_is_named():
    ev = _events([(1, 1, t, 100 + t, 0) for t in range(3)] + [(1, 1, 9, 999, 0)])
    s = make_splits(build_histories(ev), max_items=10, cfg=SequenceConfig(split="leave_one_out"))
    with pytest.raises(DataError, match=r"no SID .* \[999\]"):
        tokenize_examples(s.test, _item_tokens(), bos_id=1)


def test_epoch_batches_are_a_function_of_seed_and_epoch_and_cover_everything():
    lengths = np.random.default_rng(0).integers(5, 100, 1000)
    a, b = epoch_batches(lengths, 32, seed=1, epoch=3), epoch_batches(lengths, 32, seed=1, epoch=3)
    assert all((x == y).all() for x, y in zip(a, b))
    c = epoch_batches(lengths, 32, seed=1, epoch=4)
    assert any(len(x) != len(y) or (x != y).any() for x, y in zip(a, c))
    assert np.sort(np.concatenate(a)).tolist() == list(range(1000))
    padded = sum(len(x) * lengths[x].max() for x in a)
    assert padded < 1.1 * lengths.sum()  # bucketing keeps padding small
