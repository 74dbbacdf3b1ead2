"""The evaluation protocol: the one split every model is compared on, cut from a dataset.

One dataset gives one split (``genrec.data.sequences.make_splits``: leave-one-out for Amazon, last basket
for Instacart). Where the data has anonymous one-basket shoppers (Instacart, negative user ids), a share of
their baskets is held out for next add-to-cart within the basket. ``EvalConfig.cold_start_fraction`` turns
on TIGER's cold-start protocol (``held_out``): a seeded share of the test items lose every interaction
before the test position. Tail categories are the least-interacted ones holding ``tail_share`` of training
interactions.

Held-out anonymous baskets and cold-start items are removed from what every model trains on; the run must
be trained on ``training_events(...)`` of the same seed and settings for its numbers to be leak-free.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from genrec.data.dataset import Dataset, read_dataset
from genrec.data.sequences import (Examples, Histories, SequenceConfig, build_histories, make_splits,
                                   resolve_split, train_sequences)
from genrec.evaluation.metrics import ItemFacets
from semid.common import DataError
from semid.config import Checks


UNCAPPED = 1 << 40  # a history cap no shopper reaches


K_BY_SPLIT = {"leave_one_out": (5, 10), "last_basket": (10, 20, 50)}


@dataclass
class EvalConfig:
    """Harness settings; every default is the protocol of the results table."""

    baseline_max_items: int = 50  # history cap of the baselines' training windows and queries
    exclude_history: str = "auto"  # auto: per model, whichever scores better on validation; always; never
    tune_metric: str = "ndcg@10"  # validation metric for every choice (baselines' own settings, exclusion)
    tune_examples: int | None = 5000  # validation examples used for choices (seeded sample; None: all)
    max_test: int | None = None  # evaluate a seeded sample of this many test examples (quick runs); None: all
    tail_share: float = 0.2  # tail categories: the least-interacted ones holding this share of interactions
    within_basket_share: float = 0.1  # share of anonymous baskets held out for within-basket next add-to-cart
    within_basket_max: int = 5000  # most within-basket queries scored (seeded sample)
    cold_start_fraction: float | None = None  # TIGER cold-start protocol: share of test items made unseen; None off
    beam_width: int = 20  # the generative model's beam
    # genrec's share of K open to products never bought in training: an open slot takes one when its SID lies nearer
    # the query's than the listed product's (TIGER's epsilon; None: the run config's cold_start.share, 0.2 unless
    # set; 0 turns it off)
    cold_share: float | None = None
    device: str = "cpu"  # torch device for the generative model and neural baselines
    baseline_options: dict = field(default_factory=dict)  # name -> constructor overrides, e.g. {"itemknn": {"rounds": 1}}
    fit_options: dict = field(default_factory=dict)  # name -> FitContext.options (e.g. epochs in quick runs)

    def __post_init__(self) -> None:
        c = Checks(self, "eval")
        c.one_of("exclude_history", ("auto", "always", "never"))
        c.rule(re.fullmatch(r"(recall|ndcg)@[1-9][0-9]*", str(self.tune_metric)) is not None, "tune_metric",
               f"must look like recall@K or ndcg@K, got {self.tune_metric!r}")
        c.at_least(1, "baseline_max_items", "tune_examples", "max_test", "within_basket_max", "beam_width")
        c.above(0, "tail_share", "cold_start_fraction")
        c.within(0, 1, "tail_share", "cold_start_fraction", "within_basket_share", "cold_share", open_high=True)


@dataclass
class EvalData:
    """Everything the models are compared on, built once from the dataset."""

    split: str  # leave_one_out or last_basket
    catalog: np.ndarray  # ascending item ids: the ranking universe
    items: pa.Table
    train: Examples  # baselines' training windows (cap baseline_max_items)
    validation: Examples  # capped histories
    validation_full: Examples  # same examples, uncapped histories
    test: Examples  # capped histories (possibly a sample)
    test_full: Examples  # same examples, uncapped histories
    sequences: Examples  # each shopper's whole training sequence
    within_basket: Examples | None  # next add-to-cart queries inside held-out anonymous baskets
    cold_items: np.ndarray  # items of the cold-start protocol (empty when off)
    stock: dict[int, np.ndarray] | None  # retailer -> stocked item ids (None: everyone stocks everything)
    protocol: dict  # what was held out, for the record


def build_eval_data(data: Path, seq_cfg: SequenceConfig, cfg: EvalConfig, seed: int) -> EvalData:
    """Read the dataset and cut the one split every model is evaluated on."""
    # what the protocol and the diversity metrics read of the catalog (no model reads titles, texts or vectors)
    ds = read_dataset(data, item_columns=("item_id", "brand", "category_path", "first_seen"))
    histories = build_histories(ds.events)
    split = resolve_split(histories, seq_cfg.split)
    seq_cfg = dataclasses.replace(seq_cfg, split=split)
    keep, baskets, cold = held_out(histories, seq_cfg, seed, cfg.within_basket_share, cfg.cold_start_fraction)
    histories = drop_events(histories, keep)
    capped = make_splits(histories, cfg.baseline_max_items, seq_cfg)
    full = make_splits(histories, UNCAPPED, seq_cfg)
    whole = make_splits(histories, UNCAPPED, dataclasses.replace(seq_cfg, train_first_item=True, train_stride=UNCAPPED))
    test_index = np.arange(len(capped.test))
    if cfg.max_test is not None and cfg.max_test < test_index.size:
        test_index = np.sort(np.random.default_rng(seed).choice(test_index.size, cfg.max_test, replace=False))
    catalog = np.sort(ds.items.column("item_id").to_numpy().astype(np.int64))
    within = within_basket_queries(baskets, cfg.within_basket_max, seed) if baskets is not None else None
    return EvalData(
        split=split, catalog=catalog, items=ds.items, train=capped.train, validation=capped.validation,
        validation_full=full.validation, test=capped.test.subset(test_index), test_full=full.test.subset(test_index),
        sequences=train_sequences(whole.train), within_basket=within, cold_items=cold,
        stock=_stock(ds.assortment),
        protocol={"split": split, "seed": seed, "test_examples": int(test_index.size),
                  "heldout_anonymous_baskets": 0 if baskets is None else len(baskets),
                  "within_basket_queries": 0 if within is None else len(within),
                  "cold_start_items": int(cold.size)},
    )


def _stock(assortment: pa.Table | None) -> dict[int, np.ndarray] | None:
    """retailer -> its stocked item ids, from assortment.parquet."""
    if assortment is None:
        return None
    r = assortment.column("retailer_id").to_numpy().astype(np.int64)
    i = assortment.column("item_id").to_numpy().astype(np.int64)
    return {int(x): np.unique(i[r == x]) for x in np.unique(r)}


def held_out(histories: Histories, seq_cfg: SequenceConfig, seed: int, within_basket_share: float,
             cold_start_fraction: float | None) -> tuple[np.ndarray, Examples | None, np.ndarray]:
    """What the harness takes away from training for this seed: (keep flag per history event, the held-out
    anonymous baskets or None, the cold-start items). Anonymous shoppers (negative user ids, one basket)
    are held out whole for the within-basket evaluation; with ``cold_start_fraction`` (TIGER's protocol)
    a seeded share of the test target items loses every interaction before its shopper's test unit."""
    keep = np.ones(histories.items.size, bool)
    baskets = None
    anonymous = np.flatnonzero(histories.user_ids < 0)
    if anonymous.size and within_basket_share > 0:
        n_out = max(1, int(round(within_basket_share * anonymous.size)))
        out = np.sort(np.random.default_rng(seed).choice(anonymous, n_out, replace=False))
        flagged = np.zeros(histories.user_ids.size, bool)
        flagged[out] = True
        keep &= ~np.repeat(flagged, histories.lengths)
        baskets = _as_baskets(histories, out)
    cold = np.zeros(0, np.int64)
    if cold_start_fraction is not None:
        split = resolve_split(histories, seq_cfg.split)
        # only the test targets matter here: one item of history, one label per window
        test = make_splits(histories, 1, dataclasses.replace(seq_cfg, split=split, train_stride=1)).test
        cold = pick_cold_items(test, cold_start_fraction, seed)
        test_start = histories.offsets[1:].copy()  # shoppers without a test example: all of it precedes
        row = np.searchsorted(histories.user_ids, test.user_ids)
        test_start[row] = histories.offsets[1:][row] - np.diff(test.target_offsets)
        event_user = np.repeat(np.arange(histories.user_ids.size), histories.lengths)
        before = np.arange(histories.items.size) < test_start[event_user]
        keep &= ~(before & np.isin(histories.items, cold))
    return keep, baskets, cold


def _as_baskets(h: Histories, users: np.ndarray) -> Examples:
    """The whole histories of shoppers ``users`` (row indices) as target-only examples."""
    lengths = h.lengths[users]
    t_off = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    idx = np.repeat(h.offsets[users] - t_off[:-1], lengths) + np.arange(t_off[-1])
    return Examples(h.user_ids[users], np.zeros(users.size + 1, np.int64), np.zeros(0, np.int64), t_off, h.items[idx],
                    h.retailer_ids[h.offsets[users]])


def within_basket_queries(baskets: Examples, max_queries: int, seed: int) -> Examples:
    """Every (basket prefix -> next item added) pair of the held-out baskets, a seeded sample of at most
    ``max_queries``, in basket order."""
    lengths = np.diff(baskets.target_offsets)
    n_q = np.maximum(lengths - 1, 0)
    basket = np.repeat(np.arange(len(baskets)), n_q)
    t = np.arange(n_q.sum()) - np.repeat(np.cumsum(n_q) - n_q, n_q) + 1  # position of the target in its basket
    if basket.size > max_queries:
        pick = np.sort(np.random.default_rng(seed).choice(basket.size, max_queries, replace=False))
        basket, t = basket[pick], t[pick]
    start = baskets.target_offsets[basket]
    h_off = np.r_[0, np.cumsum(t)].astype(np.int64)
    h_idx = np.repeat(start - h_off[:-1], t) + np.arange(h_off[-1])
    return Examples(baskets.user_ids[basket], h_off, baskets.target_items[h_idx],
                    np.arange(basket.size + 1, dtype=np.int64), baskets.target_items[start + t],
                    baskets.retailer_ids[basket])


def pick_cold_items(test: Examples, fraction: float, seed: int) -> np.ndarray:
    """A seeded ``fraction`` (at least one) of the distinct test target items, ascending."""
    items = np.unique(test.target_items)
    if items.size == 0:
        raise DataError("cold start: the split has no test targets")
    n = max(1, int(round(fraction * items.size)))
    return np.sort(np.random.default_rng(seed).choice(items, n, replace=False))


def drop_events(h: Histories, keep: np.ndarray) -> Histories:
    """The histories without the events where ``keep`` is False; a session whose first item went still
    starts a session, and shoppers left with nothing disappear."""
    session = np.cumsum(h.session_start)  # global session number of every event
    user = np.repeat(np.arange(h.user_ids.size), h.lengths)
    items, sess, usr, ret = h.items[keep], session[keep], user[keep], h.retailer_ids[keep]
    start = np.r_[True, (sess[1:] != sess[:-1]) | (usr[1:] != usr[:-1])] if items.size else np.zeros(0, bool)
    counts = np.bincount(usr, minlength=h.user_ids.size)
    alive = counts > 0
    return Histories(h.user_ids[alive], np.r_[0, np.cumsum(counts[alive])].astype(np.int64), items, start, ret)


def training_events(events: pa.Table, seq_cfg: SequenceConfig | None = None, seed: int = 0,
                    within_basket_share: float = 0.1, cold_start_fraction: float | None = None) -> pa.Table:
    """``events`` without what the harness holds out for this seed and these settings (``held_out``): what
    a run must be trained on for its numbers to be leak-free. The rows keep their original order."""
    return _training_rows(events, seq_cfg, seed, within_basket_share, cold_start_fraction)[0]


def training_dataset(ds: Dataset, seq_cfg: SequenceConfig | None = None, seed: int = 0,
                     within_basket_share: float = 0.1, cold_start_fraction: float | None = None) -> Dataset:
    """The dataset a run must be trained on (``training_events``), its catalog dated as the cold-start
    protocol has it: the cold-start items launch after the log ends; every other product whose
    ``first_seen`` is unknown was listed from its start, as in production, where the catalog a model trains
    beside is established and only what is added later is new. The index then pools only launches as new
    (``pipeline.established_items``), never products that merely went unbought in training, whether bought
    later or never: knowing which would leak the test period."""
    events, cold = _training_rows(ds.events, seq_cfg, seed, within_basket_share, cold_start_fraction)
    ts, ids = ds.events.column("ts"), ds.items.column("item_id").to_numpy()
    dated = pc.fill_null(ds.items.column("first_seen"), pa.scalar(pc.min(ts).as_py(), pa.int64()))
    dated = pc.if_else(pa.array(np.isin(ids, cold)), pa.scalar(pc.max(ts).as_py() + 1, pa.int64()), dated)
    items = ds.items.set_column(ds.items.column_names.index("first_seen"), "first_seen", dated)
    return Dataset(items, events, ds.assortment, {**ds.meta, "heldout_for_seed": seed})


def _training_rows(events: pa.Table, seq_cfg: SequenceConfig | None, seed: int, within_basket_share: float,
                   cold_start_fraction: float | None) -> tuple[pa.Table, np.ndarray]:
    """``training_events`` and the cold-start items of the protocol (empty when off)."""
    seq_cfg = seq_cfg or SequenceConfig()
    histories = build_histories(events)
    seq_cfg = dataclasses.replace(seq_cfg, split=resolve_split(histories, seq_cfg.split))
    keep, _, cold = held_out(histories, seq_cfg, seed, within_basket_share, cold_start_fraction)
    cols = {n: events.column(n).to_numpy() for n in ("user_id", "session_id", "ts", "position")}
    order = np.lexsort((cols["position"], cols["session_id"], cols["ts"], cols["user_id"]))  # build_histories' order
    row_keep = np.zeros(events.num_rows, bool)
    row_keep[order] = keep
    return events.filter(pa.array(row_keep)), cold


def tail_items(items: pa.Table, sequences: Examples, share: float) -> np.ndarray:
    """Items of the tail categories: leaf categories ordered by training interactions (fewest first), taken
    while together they hold at most ``share`` of all interactions (at least the least-interacted one)."""
    facets = ItemFacets.from_items(items)
    if (facets.leaf < 0).all():
        return np.zeros(0, np.int64)
    cols = np.searchsorted(facets.item_ids, sequences.history_items)
    cols_c = np.minimum(cols, facets.item_ids.size - 1)
    ok = facets.item_ids[cols_c] == sequences.history_items
    leaf = facets.leaf[cols_c[ok]]
    n_leaves = int(facets.leaf.max()) + 1
    per_leaf = np.bincount(leaf[leaf >= 0], minlength=n_leaves).astype(np.float64)
    order = np.argsort(per_leaf, kind="stable")
    cum = np.cumsum(per_leaf[order]) / max(per_leaf.sum(), 1.0)
    n_tail = max(1, int(np.searchsorted(cum, share, side="right")))
    return facets.item_ids[np.isin(facets.leaf, order[:n_tail])]
