"""Shopper histories from ``events.parquet`` and the train / validation / test examples cut from them.

A history is a shopper's items in order (sessions by ``ts`` then ``session_id``, items within a session by
``position``). An example is (history item ids, target item ids): for validation and test the targets are
the held-out item (``leave_one_out``) or basket (``last_basket``); for training the targets are every item
whose prediction the causal loss covers, the history only the context before them. Everything is ragged
numpy arrays (offsets + flat values), built without per-event Python loops.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa

from semid.common import DataError
from semid.config import Checks

Split = Literal["leave_one_out", "last_basket", "auto"]
CountsEngine = Literal["auto", "memory", "duckdb"]
NO_RETAILER = -1  # retailer_id of an example whose events carry none


@dataclass
class SequenceConfig:
    """How histories become examples; the history cap itself is the decoder's ``max_items``."""

    split: Split = "auto"  # leave_one_out (Amazon), last_basket (Instacart); auto: last_basket if a basket has >1 item
    train_stride: int | None = None  # labelled items per training window of a long history; None: max_items // 2
    train_first_item: bool = False  # also train to predict a shopper's very first item from no history
    retailer_token: bool = True  # precede each sequence with its retailer's token (when the events have one)
    # how the SID stage's co-purchase counts (embedding.collab_*) read events.parquet: memory (the whole table),
    # duckdb (SQL out of core, spilling past counts_memory_limit; genrec.data.outofcore), auto (duckdb from
    # 20M events on); the counts are identical either way
    counts_engine: CountsEngine = "auto"
    counts_memory_limit: str = "2GB"  # DuckDB's memory_limit for counts_engine duckdb

    def __post_init__(self) -> None:
        Checks(self, "sequence").literals().at_least(1, "train_stride")


@dataclass
class Histories:
    """Every shopper's items in order: ``items[offsets[u]:offsets[u+1]]`` belong to ``user_ids[u]``."""

    user_ids: np.ndarray  # (n_users,) int64, ascending
    offsets: np.ndarray  # (n_users + 1,) int64
    items: np.ndarray  # (n_events,) int64 item ids in history order
    session_start: np.ndarray  # (n_events,) bool: the item opens a new session (basket)
    retailer_ids: np.ndarray  # (n_events,) int64 retailer of the item's event, NO_RETAILER where null

    @property
    def lengths(self) -> np.ndarray:
        """Number of items per shopper."""
        return np.diff(self.offsets)


@dataclass
class Examples:
    """(history, targets) pairs as ragged arrays, with the shopper and the retailer each belongs to."""

    user_ids: np.ndarray  # (n,) int64
    history_offsets: np.ndarray  # (n + 1,) int64
    history_items: np.ndarray  # flat int64 item ids
    target_offsets: np.ndarray  # (n + 1,) int64
    target_items: np.ndarray  # flat int64 item ids
    retailer_ids: np.ndarray  # (n,) int64, NO_RETAILER where none

    def __len__(self) -> int:
        return int(self.user_ids.size)

    def history(self, i: int) -> np.ndarray:
        """History item ids of example ``i`` (oldest first)."""
        return self.history_items[self.history_offsets[i] : self.history_offsets[i + 1]]

    def targets(self, i: int) -> np.ndarray:
        """Target item ids of example ``i`` (in order)."""
        return self.target_items[self.target_offsets[i] : self.target_offsets[i + 1]]

    def subset(self, index: np.ndarray) -> "Examples":
        """The examples at ``index`` (an int array), in that order."""
        index = np.asarray(index, dtype=np.int64)
        h_off, h = _take_ragged(self.history_offsets, self.history_items, index)
        t_off, t = _take_ragged(self.target_offsets, self.target_items, index)
        return Examples(self.user_ids[index], h_off, h, t_off, t, self.retailer_ids[index])


@dataclass
class Splits:
    """The three example sets of one dataset."""

    train: Examples
    validation: Examples
    test: Examples


def build_histories(events: pa.Table) -> Histories:
    """Order every shopper's events (ts, session_id, position) into one item history per shopper."""
    for name in ("user_id", "session_id", "ts", "item_id", "position"):
        if name not in events.column_names:
            raise DataError(f"events.parquet: missing required column {name!r} (has: {events.column_names})")
    if events.num_rows == 0:
        raise DataError("events.parquet: no events")
    cols = {n: events.column(n).to_numpy() for n in ("user_id", "session_id", "ts", "item_id", "position")}
    order = np.lexsort((cols["position"], cols["session_id"], cols["ts"], cols["user_id"]))
    user = cols["user_id"][order]
    ts, session = cols["ts"][order], cols["session_id"][order]
    new_user = np.r_[True, user[1:] != user[:-1]]
    new_session = new_user | np.r_[True, (ts[1:] != ts[:-1]) | (session[1:] != session[:-1])]
    starts = np.flatnonzero(new_user)
    if "retailer_id" in events.column_names:
        retailer = events.column("retailer_id").cast(pa.int64()).fill_null(NO_RETAILER).to_numpy()[order]
    else:
        retailer = np.full(order.size, NO_RETAILER, np.int64)
    return Histories(
        user_ids=user[starts].astype(np.int64),
        offsets=np.r_[starts, order.size].astype(np.int64),
        items=cols["item_id"][order].astype(np.int64),
        session_start=new_session,
        retailer_ids=retailer.astype(np.int64),
    )


def resolve_split(histories: Histories, split: Split) -> Literal["leave_one_out", "last_basket"]:
    """``auto`` becomes last_basket when some session holds several items, else leave_one_out."""
    if split == "auto":
        n_sessions = int(histories.session_start.sum())
        return "last_basket" if n_sessions < histories.items.size else "leave_one_out"
    if split not in ("leave_one_out", "last_basket"):
        raise DataError(f"split must be leave_one_out, last_basket or auto, got {split!r}")
    return split


def split_events(events: pa.Table, max_items: int, cfg: SequenceConfig) -> tuple[Splits, SequenceConfig]:
    """The events' histories cut by ``make_splits``, with the config's split resolved (``auto``)."""
    histories = build_histories(events)
    cfg = dataclasses.replace(cfg, split=resolve_split(histories, cfg.split))
    return make_splits(histories, max_items, cfg), cfg


def make_splits(histories: Histories, max_items: int, cfg: SequenceConfig | None = None) -> Splits:
    """Cut every history into train / validation / test examples; no held-out item enters training.

    The last unit (an item for leave_one_out, a session for last_basket) is the test target, the one
    before it the validation target, the rest is training. A shopper too short for a validation (or test)
    example trains on what is not held out (e.g. anonymous one-basket shoppers: their basket). Histories
    keep the most recent ``max_items``.
    """
    cfg = cfg or SequenceConfig()
    if max_items < 1:
        raise DataError(f"max_items must be >= 1, got {max_items}")
    split = resolve_split(histories, cfg.split)
    unit_start = histories.session_start if split == "last_basket" else np.ones(histories.items.size, bool)
    test_start, valid_start = _last_two_units(histories.offsets, unit_start)
    begin, end = histories.offsets[:-1], histories.offsets[1:]
    test = _held_out(histories, begin, test_start, end, max_items)
    validation = _held_out(histories, begin, valid_start, test_start, max_items)
    stride = cfg.train_stride if cfg.train_stride is not None else max(1, max_items // 2)
    if not 1 <= stride <= max_items:
        raise DataError(f"train_stride must lie in 1..max_items ({max_items}), got {stride}")
    has_valid = (valid_start > begin) & (test_start > valid_start)
    has_test = (test_start > begin) & (end > test_start)
    train_end = np.where(has_valid, valid_start, np.where(has_test, test_start, end))
    train = _train_windows(histories, begin, train_end, max_items, stride, cfg.train_first_item)
    return Splits(train=train, validation=validation, test=test)


def query_examples(
    histories: list[np.ndarray] | list[list[int]], max_items: int, retailer_ids: np.ndarray | None = None
) -> Examples:
    """Inference queries: each history capped to its most recent ``max_items`` items, no targets."""
    arrays = [np.asarray(h, dtype=np.int64).reshape(-1) for h in histories]
    lengths = np.array([a.size for a in arrays], dtype=np.int64)
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    flat = np.concatenate(arrays) if arrays else np.zeros(0, np.int64)
    h_off, h_items = _gather(flat, np.maximum(offsets[:-1], offsets[1:] - max_items), offsets[1:])
    n = lengths.size
    retailer = np.full(n, NO_RETAILER, np.int64) if retailer_ids is None else np.asarray(retailer_ids, np.int64)
    if retailer.shape != (n,):
        raise DataError(f"queries: {n} histories but {retailer.size} retailer ids")
    return Examples(np.arange(n, dtype=np.int64), h_off, h_items, np.zeros(n + 1, np.int64), np.zeros(0, np.int64),
                    retailer)


def _last_two_units(offsets: np.ndarray, unit_start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per shopper, the flat index where its last and second-to-last units begin (clipped at its start)."""
    starts = np.flatnonzero(unit_start)  # ascending; each shopper's first item is a unit start
    last = np.searchsorted(starts, offsets[1:], side="left") - 1  # index into starts of the last unit
    test_start = starts[last]
    prev = np.maximum(last - 1, 0)
    valid_start = np.where(starts[prev] >= offsets[:-1], starts[prev], offsets[:-1])
    return test_start.astype(np.int64), valid_start.astype(np.int64)


def _held_out(h: Histories, begin: np.ndarray, target_start: np.ndarray, target_end: np.ndarray,
              max_items: int) -> Examples:
    """Examples predicting [target_start, target_end) from the capped items before it (skipping shoppers
    with no history or no target)."""
    keep = (target_start > begin) & (target_end > target_start)
    b, ts, te = begin[keep], target_start[keep], target_end[keep]
    h_off, h_items = _gather(h.items, np.maximum(b, ts - max_items), ts)
    t_off, t_items = _gather(h.items, ts, te)
    return Examples(h.user_ids[keep], h_off, h_items, t_off, t_items, h.retailer_ids[ts])


def _train_windows(h: Histories, begin: np.ndarray, train_end: np.ndarray, max_items: int, stride: int,
                   first_item: bool) -> Examples:
    """Windows over each shopper's training items: each labels ``stride`` items (the earliest window the
    rest) with up to ``max_items`` items of context before each label, so every item is labelled once."""
    first_label = begin + (0 if first_item else 1)
    n_labels = np.maximum(train_end - first_label, 0)
    n_windows = -(-n_labels // stride)
    user = np.repeat(np.arange(begin.size), n_windows)
    k = np.arange(user.size) - np.repeat(np.cumsum(n_windows) - n_windows, n_windows)
    label_end = train_end[user] - k * stride
    label_start = np.maximum(first_label[user], label_end - stride)
    context_start = np.maximum(begin[user], label_end - (max_items + 1))
    order = np.lexsort((label_start, user))  # windows of a shopper oldest first
    label_start, label_end, context_start, user = (a[order] for a in (label_start, label_end, context_start, user))
    h_off, h_items = _gather(h.items, context_start, label_start)
    t_off, t_items = _gather(h.items, label_start, label_end)
    return Examples(h.user_ids[user], h_off, h_items, t_off, t_items, h.retailer_ids[label_end - 1])


def _gather(values: np.ndarray, start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate ``values[start[i]:end[i]]`` for all i -> (offsets, flat), vectorised."""
    lengths = np.maximum(np.asarray(end, np.int64) - np.asarray(start, np.int64), 0)
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    index = np.repeat(np.asarray(start, np.int64) - offsets[:-1], lengths) + np.arange(offsets[-1])
    return offsets, values[index]


def _take_ragged(offsets: np.ndarray, values: np.ndarray, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``index`` of a ragged array."""
    return _gather(values, offsets[:-1][index], offsets[1:][index])


def train_sequences(train: Examples) -> Examples:
    """Each shopper's whole training sequence rebuilt from its training windows (history = the sequence,
    no targets): the first window's context followed by every window's targets, windows oldest first."""
    n = len(train)
    if n == 0:
        return train
    new_user = np.r_[True, train.user_ids[1:] != train.user_ids[:-1]]
    if np.unique(train.user_ids[new_user]).size != int(new_user.sum()):
        raise DataError("training examples: a shopper's windows are not contiguous")
    h_len = np.diff(train.history_offsets) * new_user  # only the first window's context is kept
    t_len = np.diff(train.target_offsets)
    pieces_start = np.stack([train.history_offsets[:-1], train.target_offsets[:-1]], 1).reshape(-1)
    pieces_len = np.stack([h_len, t_len], 1).reshape(-1)
    pieces_src = np.tile([0, 1], n)  # 0: history array, 1: target array
    flat = np.concatenate([train.history_items, train.target_items])
    shift = np.where(pieces_src == 1, train.history_items.size, 0)
    index = np.repeat(pieces_start + shift - np.r_[0, np.cumsum(pieces_len)[:-1]], pieces_len) + np.arange(
        pieces_len.sum())
    items = flat[index]
    user_rows = np.cumsum(new_user) - 1
    per_user = np.bincount(user_rows, weights=h_len + t_len).astype(np.int64)
    offsets = np.r_[0, np.cumsum(per_user)].astype(np.int64)
    starts = np.flatnonzero(new_user)
    n_users = starts.size
    return Examples(train.user_ids[starts], offsets, items, np.zeros(n_users + 1, np.int64),
                    np.zeros(0, np.int64), train.retailer_ids[starts])
