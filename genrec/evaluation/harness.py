"""The offline evaluation harness: the generative model and every baseline on the same split, the same
test examples, the same metrics, in one run.

One dataset gives one split (``genrec.data.sequences.make_splits``: leave-one-out for Amazon, last basket for
Instacart). Every baseline is fitted on the training examples only and tunes itself on validation; whether
a model's lists skip the shopper's past items is also chosen per model on validation (``exclude_history``
"auto"). Test lists are full rankings over the catalog (a retailer's lists only over what it stocks) and
are scored with ``genrec.evaluation.metrics``. Slices: cold-start targets (never in training), tail categories (the
least-interacted categories holding ``tail_share`` of training interactions), per retailer, and, where the
data has anonymous one-basket shoppers (Instacart, negative user ids), next add-to-cart within held-out
anonymous baskets. ``EvalConfig.cold_start_fraction`` turns on TIGER's cold-start protocol (``held_out``): a
seeded 5% of the test items lose every interaction before the test position.

Held-out anonymous baskets and cold-start items are removed from what every model trains on; the run must
be trained on ``training_events(...)`` of the same seed and settings for its numbers to be leak-free.
"""
from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from genrec.evaluation.baselines import BASELINES, FitContext, make_baseline
from genrec.data.sequences import train_sequences
from genrec.evaluation.baselines.base import PAD_ITEM, tuning_subset
from genrec.data.dataset import Dataset, read_dataset
from genrec.evaluation.metrics import ItemFacets, Targets, candidate_quality, keep_items, rank_metrics, remove_items
from genrec.data.sequences import NO_RETAILER, Examples, Histories, SequenceConfig, build_histories, make_splits, \
    resolve_split
from genrec.run.layout import CONFIG_FILE
from semid.common import DataError, jsonable

GENREC = "genrec"  # the generative model's key in the result
UNCAPPED = 1 << 40  # a history cap no shopper reaches
K_BY_SPLIT = {"leave_one_out": (5, 10), "last_basket": (10, 20, 50)}


POPULARITY_BANDS = ((1, 5), (5, 10), (10, 50), (50, None))  # training purchases of the target: [lo, hi)


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
    cold_share: float | None = None  # genrec's share of K open to never-trained products (TIGER's epsilon); None: the run config's
    device: str = "cpu"  # torch device for the generative model and neural baselines
    baseline_options: dict = field(default_factory=dict)  # name -> constructor overrides, e.g. {"itemknn": {"rounds": 1}}
    fit_options: dict = field(default_factory=dict)  # name -> FitContext.options (e.g. epochs in quick runs)

    def __post_init__(self) -> None:
        if self.exclude_history not in ("auto", "always", "never"):
            raise DataError(f"exclude_history must be auto, always or never, got {self.exclude_history!r}")
        if not 0 < self.tail_share < 1:
            raise DataError(f"tail_share must lie in (0, 1), got {self.tail_share}")
        if self.cold_start_fraction is not None and not 0 < self.cold_start_fraction < 1:
            raise DataError(f"cold_start_fraction must lie in (0, 1), got {self.cold_start_fraction}")


# ---------------------------------------------------------------------------------------------- the data side


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
    ds = read_dataset(data)
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


# -------------------------------------------------------------------------------------------- the model side


class GenerativeModel:
    """The run behind the ``Recommender`` interface: the trained decoder's constrained beam search via
    ``genrec.retriever.Retriever``; nothing to fit."""

    name = GENREC
    uses_full_history = True  # the retriever caps histories to the decoder's max_items itself

    def __init__(self, run: Path, beam_width: int, device: str, cold_share: float | None) -> None:
        from genrec.retriever import Retriever

        self.retriever = Retriever.from_run(run, beam_width=beam_width, device=device, cold_share=cold_share)
        self.choices = {"beam_width": beam_width, "max_items": self.retriever.max_items,
                        "cold_share": self.retriever.cold_share}

    def fit(self, train: Examples, validation: Examples, ctx: FitContext) -> "GenerativeModel":
        """Already trained (``genrec train``): nothing to do."""
        return self

    def recommend(self, queries: Examples, k: int, exclude: Sequence[np.ndarray] | None = None,
                  exclude_history: bool = False) -> np.ndarray:
        """Top ``k`` per query; the retailer index removes unstocked products and, if asked, history items."""
        return self.recommend_lists(queries, [k], exclude_history)[k]

    def recommend_lists(self, queries: Examples, ks: Sequence[int], exclude_history: bool = False) -> dict[int, np.ndarray]:
        """Top K per query for each K of ``ks`` from one beam search (each list has its own cold-start slots)."""
        histories = [queries.history(i) for i in range(len(queries))]
        retailers = [None if r == NO_RETAILER else int(r) for r in queries.retailer_ids]
        out = self.retriever.retrieve_lists(histories, retailers, ks, exclude_history=exclude_history)
        return {k: c.item_ids.astype(np.int64) for k, c in out.items()}


@dataclass
class ModelRun:
    """One model's test lists and the record of how it got them."""

    ranked: dict[int, np.ndarray]  # K -> [n_test, K] item ids; one list of the largest K whose prefixes serve all
    within: dict[int, np.ndarray] | None  # the same for the within-basket queries
    exclude_history: bool
    choices: dict
    timings: dict


def _recommend(model, queries: Examples, full: Examples, k: int, exclude_history: bool, data: EvalData) -> np.ndarray:
    """A model's top-k lists for ``queries`` (see ``_lists``)."""
    return _lists(model, queries, full, [k], exclude_history, data)[k]


def _lists(model, queries: Examples, full: Examples, ks: Sequence[int], exclude_history: bool, data: EvalData,
           chunk: int = 2048) -> dict[int, np.ndarray]:
    """A model's top-K lists for ``queries`` (``full``: the same examples with uncapped histories), with,
    if asked, everything the shopper bought before excluded, and only what its retailer stocks; computed
    in chunks of rows sharing a retailer. Our model gives one list per K (its cold-start slots depend on
    K); a baseline's top K is the first K of its list for the largest K."""
    generative = isinstance(model, GenerativeModel)
    ks = sorted(set(ks)) if generative else [max(ks)]
    out = {k: np.full((len(queries), k), PAD_ITEM, np.int64) for k in ks}
    reads = full if getattr(model, "uses_full_history", False) else queries
    for r in np.unique(queries.retailer_ids):
        rows = np.flatnonzero(queries.retailer_ids == r)
        unstocked = None
        if data.stock is not None and r != NO_RETAILER and not generative:  # the retriever's trie knows stock
            unstocked = np.setdiff1d(data.catalog, data.stock.get(int(r), np.zeros(0, np.int64)), assume_unique=True)
        for start in range(0, rows.size, chunk):
            sel = rows[start:start + chunk]
            if generative:
                for k, lists in model.recommend_lists(reads.subset(sel), ks, exclude_history).items():
                    out[k][sel] = lists
            else:
                exclude = _exclusions(full.subset(sel), exclude_history, unstocked)
                out[ks[-1]][sel] = model.recommend(reads.subset(sel), ks[-1], exclude)
    return out


def _exclusions(full: Examples, exclude_history: bool, unstocked: np.ndarray | None) -> list | None:
    """Per query the items it must not get: its whole history (if asked) and its retailer's unstocked items."""
    if not exclude_history and unstocked is None:
        return None
    if not exclude_history:
        return [unstocked] * len(full)
    if unstocked is None:
        return [full.history(i) for i in range(len(full))]
    return [np.concatenate([full.history(i), unstocked]) for i in range(len(full))]


def _score(ranked: np.ndarray, targets: Examples, metric: str) -> float:
    """One validation metric (``recall@K`` / ``ndcg@K``) of ranked lists."""
    k = int(metric.split("@")[1])
    value = rank_metrics(ranked[:, :k], Targets(targets.target_offsets, targets.target_items), [k])[metric]
    return float(value) if value == value else 0.0


def run_model(model, data: EvalData, cfg: EvalConfig, ctx: FitContext) -> ModelRun:
    """Fit (baselines), choose history exclusion on validation, then produce test (and within-basket) lists."""
    full = getattr(model, "uses_full_history", False)
    t0 = time.perf_counter()
    model.fit(data.train, data.validation_full if full else data.validation, ctx)
    fit_s = time.perf_counter() - t0
    exclude = cfg.exclude_history == "always"
    val_scores = {}
    if cfg.exclude_history == "auto":
        # both views of the same seeded validation sample (tuning_subset picks by count and seed)
        tune, tune_full = tuning_subset(data.validation, ctx), tuning_subset(data.validation_full, ctx)
        tune_k = int(cfg.tune_metric.split("@")[1])
        for flag in (False, True):
            lists = _recommend(model, tune, tune_full, tune_k, flag, data)
            val_scores[flag] = _score(lists, tune_full, cfg.tune_metric)
        exclude = val_scores[True] > val_scores[False]
    t1 = time.perf_counter()
    ranked = _lists(model, data.test, data.test_full, ctx.k_values, exclude, data)
    rec_s = time.perf_counter() - t1
    within = None
    if data.within_basket is not None:
        w = data.within_basket  # an item already in the cart is never the next one added: always excluded
        within = _lists(model, w, w, ctx.k_values, True, data)
    choices = dict(getattr(model, "choices", {}) or {})
    choices["exclude_history"] = bool(exclude)
    if val_scores:
        choices[f"validation_{cfg.tune_metric}"] = {"keep_history": val_scores[False],
                                                    "exclude_history": val_scores[True]}
    return ModelRun(ranked, within, bool(exclude), jsonable(choices),
                    {"fit_s": round(fit_s, 3), "test_recommend_s": round(rec_s, 3),
                     "per_1k_queries_s": round(1000 * rec_s / max(len(data.test), 1), 4)})


# ---------------------------------------------------------------------------------------------- scoring


def score_model(run: ModelRun, data: EvalData, k_values: Sequence[int], facets: ItemFacets,
                train_items: np.ndarray, tail: np.ndarray, train_counts: np.ndarray | None = None
                ) -> tuple[dict, dict]:
    """(headline metrics incl. candidate quality, {slice name: metrics}) of one model's lists;
    ``train_counts`` (training purchases of each of ``train_items``) adds one slice per popularity band."""
    test = data.test_full
    targets = Targets(test.target_offsets, test.target_items)
    metrics = _by_k(rank_metrics, run.ranked, targets, k_values)
    if data.split == "last_basket":
        history = Targets(test.history_offsets, test.history_items)
        metrics.update(_by_k(rank_metrics, run.ranked, remove_items(targets, history), k_values, prefix="new_"))
    metrics.update(_by_k(candidate_quality, run.ranked, facets, k_values))
    slices = {"cold_start": _by_k(rank_metrics, run.ranked, _unseen(targets, train_items), k_values)}
    if tail.size:
        slices["tail"] = _by_k(rank_metrics, run.ranked, keep_items(targets, tail), k_values)
    if train_counts is not None:
        for name, band in popularity_bands(train_items, train_counts).items():
            slices[name] = _by_k(rank_metrics, run.ranked, keep_items(targets, band), k_values)
    retailers = np.unique(test.retailer_ids)
    if retailers.size > 1 or (retailers.size == 1 and retailers[0] != NO_RETAILER):
        for r in retailers:
            name = "retailer_none" if r == NO_RETAILER else f"retailer_{int(r)}"
            slices[name] = _by_k(rank_metrics, run.ranked, targets, k_values, mask=test.retailer_ids == r)
            if data.stock is not None and r != NO_RETAILER:
                first = run.ranked.get(k_values[0], run.ranked[max(run.ranked)])
                quality = candidate_quality(first[test.retailer_ids == r], facets, [k_values[0]],
                                            allowed=data.stock.get(int(r)))
                slices[name]["invalid_rate"] = quality["invalid_rate"]
    if run.within is not None:
        w = data.within_basket
        slices["within_basket"] = _by_k(rank_metrics, run.within, Targets(w.target_offsets, w.target_items), k_values)
    return metrics, slices


def _by_k(fn, lists: dict[int, np.ndarray], against, k_values: Sequence[int], **kw) -> dict:
    """``fn(list, against, ks)`` (``rank_metrics``, ``candidate_quality``) at each K on the list made for
    that K, or at every K on the one list whose prefixes serve all."""
    if len(lists) == 1:
        return fn(next(iter(lists.values())), against, k_values, **kw)
    out: dict = {}
    for k in k_values:
        out.update(fn(lists[k], against, [k], **kw))
    return out


def popularity_bands(train_items: np.ndarray, counts: np.ndarray) -> dict[str, np.ndarray]:
    """Training items by how often they were bought in training (``POPULARITY_BANDS``): where a generative
    model over shared SID prefixes is expected to lose to one that memorises items (the rare bands)."""
    return {f"bought_{lo}_{hi - 1}" if hi else f"bought_{lo}+": train_items[(counts >= lo) & ((counts < hi) if hi else True)]
            for lo, hi in POPULARITY_BANDS}


def _unseen(targets: Targets, train_items: np.ndarray) -> Targets:
    """Targets restricted to items absent from training."""
    items = np.unique(targets.items)
    return keep_items(targets, items[~np.isin(items, train_items)])


# ---------------------------------------------------------------------------------------------- entry point


# Where shoppers re-buy (baskets), a re-buy is a right answer: the trained baselines must not mask the history
# in their own early stopping and lists; the harness chooses on validation whether lists skip it (run_model).
_KEEP_HISTORY = {"mask_history": False}
SPLIT_FIT_OPTIONS = {"last_basket": {"sasrec_ce": _KEEP_HISTORY, "sasrec_bce": _KEEP_HISTORY,
                                     "two_tower": _KEEP_HISTORY}}


def _fit_options(cfg: EvalConfig, split: str, name: str) -> dict:
    """Baseline ``name``'s fit options: the split's defaults, then the config's."""
    return {**SPLIT_FIT_OPTIONS.get(split, {}).get(name, {}), **cfg.fit_options.get(name, {})}


def make_model(name: str, run: Path | None, cfg: EvalConfig):
    """Our run (``genrec``) behind the harness's interface, or a fresh baseline with the config's options."""
    if name == GENREC:
        return GenerativeModel(Path(run), cfg.beam_width, cfg.device, cfg.cold_share)
    return make_baseline(name, **cfg.baseline_options.get(name, {}))


def fit_context(data: EvalData, run: Path | None, cfg: EvalConfig, seed: int, ks: Sequence[int], name: str) -> FitContext:
    """What model ``name`` may know besides the examples: the catalog, the run, the seed, how to tune."""
    return FitContext(item_ids=data.catalog, items=data.items, run=None if run is None else Path(run), seed=seed,
                      device=cfg.device, k_values=tuple(ks), max_items=cfg.baseline_max_items,
                      tune_metric=cfg.tune_metric, tune_examples=cfg.tune_examples,
                      options=_fit_options(cfg, data.split, name), sequences=data.sequences)


def evaluate(data: Path, run: Path | None, baselines: Sequence[str], k_values: Sequence[int] | None = None,
             seed: int = 0, config: EvalConfig | None = None,
             progress: Callable[[str], None] | None = None, score_run: bool = True) -> dict:
    """Evaluate the run (if given) and the named baselines on one split of ``data``; the result JSON is
    ``{"models": {name: metrics}, "slices": {slice: {name: metrics}}, "choices", "timings", "protocol"}``.
    With ``score_run=False`` the run only lends its sequence settings and embeddings to the baselines (a
    worker fitting baselines while the run's decoder still trains)."""
    cfg = config or EvalConfig()
    say = progress or (lambda msg: None)
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise DataError(f"unknown baselines {unknown}; known: {sorted(BASELINES)}")
    seq_cfg = SequenceConfig()
    if run is not None:
        from genrec.run.config import load_run_config

        seq_cfg = load_run_config(Path(run) / CONFIG_FILE).sequence
    t0 = time.perf_counter()
    data_ = build_eval_data(Path(data), seq_cfg, cfg, seed)
    ks = tuple(sorted(set(k_values))) if k_values else K_BY_SPLIT[data_.split]
    say(f"split {data_.split}: {len(data_.train)} training windows, {len(data_.validation)} validation, "
        f"{len(data_.test)} test examples ({time.perf_counter() - t0:.1f}s)")
    facets = ItemFacets.from_items(data_.items)
    train_items, train_counts = np.unique(data_.sequences.history_items, return_counts=True)
    tail = tail_items(data_.items, data_.sequences, cfg.tail_share)
    result: dict = {"models": {}, "slices": {}, "choices": {}, "timings": {},
                    "protocol": {**data_.protocol, "k_values": list(ks), "tune_metric": cfg.tune_metric,
                                 "exclude_history": cfg.exclude_history, "tail_items": int(tail.size),
                                 "catalog_items": int(data_.catalog.size)}}
    names = ([GENREC] if run is not None and score_run else []) + list(baselines)
    for name in names:
        say(f"{name}: fitting and ranking")
        out = run_model(make_model(name, run, cfg), data_, cfg, fit_context(data_, run, cfg, seed, ks, name))
        metrics, slices = score_model(out, data_, ks, facets, train_items, tail, train_counts)
        result["models"][name] = metrics
        for slice_name, values in slices.items():
            result["slices"].setdefault(slice_name, {})[name] = values
        result["choices"][name] = out.choices
        result["timings"][name] = out.timings
        say(f"{name}: " + ", ".join(f"{m} {metrics[m]:.4f}" for m in (f"recall@{ks[-1]}", f"ndcg@{ks[-1]}"))
            + f" (fit {out.timings['fit_s']:.1f}s, test {out.timings['test_recommend_s']:.1f}s)")
    result["timings"]["total_s"] = round(time.perf_counter() - t0, 3)
    return jsonable(result)


def evaluate_baseline(data: Path, run: Path, name: str, seed: int, config: EvalConfig) -> dict:
    """One baseline's ``evaluate`` result beside a run it does not score, progress on stderr: the job of a
    worker process (picklable by reference, so ``spawn`` workers can run it)."""
    say = lambda msg: print(f"  [{name} worker] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    return evaluate(data, run, [name], seed=seed, config=config, progress=say, score_run=False)


def format_table(result: dict) -> str:
    """The result as plain-text tables: headline metrics per model, then each slice."""
    ks = result.get("protocol", {}).get("k_values") or sorted(
        {int(m.split("@")[1]) for v in result["models"].values() for m in v if m.startswith("recall@")})
    cols = [f"{m}@{k}" for m in ("recall", "ndcg") for k in ks]
    first = next(iter(result["models"].values()), {})
    cols += [f"new_{c}" for c in cols if f"new_{c}" in first]
    quality = [c for c in (f"brands@{ks[-1]}", f"categories@{ks[-1]}", f"coverage@{ks[-1]}", "invalid_rate")
               if c in first]
    lines = [_table("models", result["models"], cols + quality)]
    for slice_name, per_model in result.get("slices", {}).items():
        slice_cols = [c for c in cols if not c.startswith("new_")] + ["count"]
        lines.append(_table(f"slice: {slice_name}", per_model, slice_cols))
    return "\n\n".join(lines)


def _table(title: str, rows: dict, cols: list[str]) -> str:
    """One fixed-width table: a model per row, a metric per column."""
    width = max([len(title), *(len(n) for n in rows)]) + 2
    head = title.ljust(width) + "".join(c.rjust(max(12, len(c) + 2)) for c in cols)
    body = []
    for name, values in rows.items():
        cells = []
        for c in cols:
            v = values.get(c)
            text = "-" if v is None or (isinstance(v, float) and v != v) else (
                str(int(v)) if c == "count" else f"{v:.4f}")
            cells.append(text.rjust(max(12, len(c) + 2)))
        body.append(name.ljust(width) + "".join(cells))
    return "\n".join([head, "-" * len(head), *body])
