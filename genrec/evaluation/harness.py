"""The offline evaluation harness: the generative model and every baseline on the same split
(``genrec.evaluation.protocol``), the same test examples, the same metrics, in one run.

Every baseline is fitted on the training examples only and tunes itself on validation; whether a model's
lists skip the shopper's past items is also chosen per model on validation (``exclude_history`` "auto").
Test lists are full rankings over the catalog (a retailer's lists only over what it stocks) and are scored
with ``genrec.evaluation.metrics``. Slices: cold-start targets (never in training), tail categories, the
target's training popularity, per retailer, and next add-to-cart within held-out anonymous baskets.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from genrec.data.sequences import NO_RETAILER, Examples, SequenceConfig
from genrec.evaluation.baselines import BASELINES, FitContext, make_baseline
from genrec.evaluation.baselines.base import PAD_ITEM, tuning_subset
from genrec.evaluation.metrics import ItemFacets, Targets, candidate_quality, keep_items, rank_metrics, remove_items
from genrec.evaluation.protocol import K_BY_SPLIT, EvalConfig, EvalData, build_eval_data, tail_items
from genrec.run.layout import CONFIG_FILE
from semid.common import DataError, jsonable
from semid.text_table import column_blocks

GENREC = "genrec"  # the generative model's key in the result
GENREC_WEIGHTED = "genrec_weighted"  # a learned-ranker run's lists under the weighted ranker, beside them


POPULARITY_BANDS = ((1, 5), (5, 10), (10, 50), (50, None))  # training purchases of the target: [lo, hi)


# -------------------------------------------------------------------------------------------- the model side


DECODE_BATCH = 256  # queries per beam search (as genrec.rank.train decodes the ranker's examples)


class GenerativeModel:
    """The run behind the ``Recommender`` interface: the trained decoder's constrained beam search via
    ``genrec.retriever.Retriever``; nothing to fit."""

    name = GENREC
    uses_full_history = True  # the retriever caps histories to the decoder's max_items itself

    def __init__(self, run: Path, beam_width: int, device: str, cold_share: float | None,
                 ranker: str | None = None, name: str = GENREC) -> None:
        from genrec.retriever import Retriever

        self.name = name
        self.retriever = Retriever.from_run(run, beam_width=beam_width, device=device, cold_share=cold_share,
                                            ranker=ranker)
        self.choices = {"beam_width": beam_width, "max_items": self.retriever.max_items,
                        "cold_share": self.retriever.cold_share,
                        "ranker": "learned" if self.retriever.ranker is not None else "weighted"}

    def fit(self, train: Examples, validation: Examples, ctx: FitContext) -> "GenerativeModel":
        """Already trained (``genrec train``): nothing to do."""
        return self

    def recommend(self, queries: Examples, k: int, exclude: Sequence[np.ndarray] | None = None,
                  exclude_history: bool = False) -> np.ndarray:
        """Top ``k`` per query; the retailer index removes unstocked products and, if asked, history items."""
        return self.recommend_lists(queries, [k], exclude_history)[k]

    def recommend_lists(self, queries: Examples, ks: Sequence[int], exclude_history: bool = False) -> dict[int, np.ndarray]:
        """Top K per query for each K of ``ks`` from one beam search (each list has its own cold-start slots),
        ``DECODE_BATCH`` queries at a time: a beam search holds its queries' beams and caches at once, so the
        batch bounds eval's memory (docs/scaling.md, "Memory")."""
        parts = []
        for start in range(0, len(queries), DECODE_BATCH):
            rows = range(start, min(start + DECODE_BATCH, len(queries)))
            histories = [queries.history(i) for i in rows]
            retailers = [None if queries.retailer_ids[i] == NO_RETAILER else int(queries.retailer_ids[i]) for i in rows]
            parts.append(self.retriever.retrieve_lists(histories, retailers, ks, exclude_history=exclude_history))
        if not parts:
            return {k: np.zeros((0, k), np.int64) for k in ks}
        return {k: np.concatenate([p[k].item_ids for p in parts]).astype(np.int64) for k in ks}


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
    if name == GENREC_WEIGHTED:
        return GenerativeModel(Path(run), cfg.beam_width, cfg.device, cfg.cold_share, "weighted", GENREC_WEIGHTED)
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
    ours = [GENREC] + ([GENREC_WEIGHTED] if run is not None and _learned(Path(run)) else [])
    names = (ours if run is not None and score_run else []) + list(baselines)
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


def _learned(run: Path) -> bool:
    """Whether the run's config ranks with the learned ranker (then the weighted ranker gets a row too)."""
    from genrec.run.config import load_run_config

    path = run / CONFIG_FILE
    return path.is_file() and load_run_config(path).rank.ranker == "learned"


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
    """One fixed-width table: a model per row, a metric per column; split into blocks of columns (each
    repeating the model names) where it would be wider than ``text_table.WIDTH``."""
    width = max([len(title), *(len(n) for n in rows)]) + 2
    widths = [max(7, len(c)) + 2 for c in cols]  # 7: "12.3456"
    blocks = []
    for block in column_blocks(width, widths):
        head = title.ljust(width) + "".join(cols[i].rjust(widths[i]) for i in block)
        body = [name.ljust(width) + "".join(_cell(values.get(cols[i]), cols[i]).rjust(widths[i]) for i in block)
                for name, values in rows.items()]
        blocks.append("\n".join([head, "-" * len(head), *body]))
    return "\n\n".join(blocks)


def _cell(value, col: str) -> str:
    """A metric as the tables print it: counts whole, the rest to 4 decimals, '-' where missing."""
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    return str(int(value)) if col == "count" else f"{value:.4f}"
