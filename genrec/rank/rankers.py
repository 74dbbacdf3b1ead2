"""Rankers: what orders a query's candidates.

``weighted`` is the product of experts runs had before the rank stage (the decoder's beam re-scored by the
co-purchase memory and the item head, ``genrec.retriever``), kept by name so old runs keep their lists.
``learned`` is a LightGBM lambdarank model (a small, fast CPU learner whose model is a text file of trees)
over every feature column (``genrec.rank.features``), trained by ``fit`` on queries the test never sees
(``genrec.rank.train``)."""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from genrec.rank.candidates import SOURCE_BITS, CandidateSet, pair_index
from genrec.rank.config import RankConfig
from index.candidates import cold_slots
from semid.common import DataError, atomic_write

TOP_K = 10  # the cut early stopping's NDCG reads


class LearnedRanker:
    """A trained lambdarank booster and the feature columns it reads, in order."""

    def __init__(self, booster, names: tuple[str, ...], meta: dict | None = None) -> None:
        self.booster, self.names, self.meta = booster, tuple(names), dict(meta or {})

    def score(self, cs: CandidateSet) -> np.ndarray:
        """One score per candidate (higher first); an empty set gives an empty array."""
        if not len(cs):
            return np.zeros(0)
        return self.booster.predict(cs.columns(self.names), num_threads=1)

    def save(self, model_path: Path, meta_path: Path) -> Path:
        """The trees as LightGBM's text format and what they were trained on as JSON, each written whole."""
        text = self.booster.model_to_string()
        atomic_write(model_path, lambda tmp: tmp.write_text(text))
        meta = json.dumps({**self.meta, "features": list(self.names)}, indent=2)
        atomic_write(meta_path, lambda tmp: tmp.write_text(meta))
        return model_path

    @classmethod
    def load(cls, model_path: Path, meta_path: Path) -> "LearnedRanker":
        import lightgbm

        if not model_path.is_file() or not meta_path.is_file():
            raise DataError(f"{model_path.parent}: no learned ranker (genrec train builds it for rank.ranker: learned)")
        meta = json.loads(meta_path.read_text())
        return cls(lightgbm.Booster(model_str=model_path.read_text()), tuple(meta["features"]), meta)


def labels(cs: CandidateSet, target_offsets: np.ndarray, target_items: np.ndarray) -> np.ndarray:
    """1 where the candidate is one of its query's targets, else 0."""
    owner = np.repeat(np.arange(target_offsets.size - 1), np.diff(target_offsets))
    return (pair_index(owner, target_items, cs.query, cs.item_ids) >= 0).astype(np.float64)


def fit(cs: CandidateSet, y: np.ndarray, cfg: RankConfig, threads: int = 1) -> LearnedRanker:
    """Train lambdarank on the queries with a target among their candidates (the others teach no order),
    early-stopping on a seeded ``holdout_share`` of them by NDCG@10; with ``patience`` 0, ``trees`` rounds on
    all of them (validation's pick on Beauty: the holdout stopped after 5-47 trees, docs/ranking.md)."""
    import lightgbm

    counts = cs.counts()
    pos_per_query = np.bincount(cs.query, weights=y, minlength=cs.n_queries)
    useful = np.flatnonzero(pos_per_query > 0)
    if useful.size < 10:
        raise DataError(f"rank: only {useful.size} training queries have a target among their candidates")
    rng = np.random.default_rng(cfg.seed)
    hold = np.zeros(cs.n_queries, bool)
    if cfg.patience:
        hold[rng.choice(useful, max(1, int(round(cfg.holdout_share * useful.size))), replace=False)] = True
    fit_q = np.zeros(cs.n_queries, bool)
    fit_q[useful] = True
    fit_q &= ~hold
    params = {"objective": "lambdarank", "metric": "ndcg", "eval_at": [TOP_K], "num_leaves": cfg.leaves,
              "learning_rate": cfg.learning_rate, "min_child_samples": cfg.min_child_samples, "seed": cfg.seed,
              "deterministic": True, "num_threads": threads, "verbose": -1, "lambdarank_truncation_level": 20}

    def dataset(mask: np.ndarray, ref=None):
        rows = mask[cs.query]  # candidates sorted by query, so groups are contiguous
        return lightgbm.Dataset(cs.features[rows], y[rows], group=counts[mask], feature_name=list(cs.names),
                                reference=ref, free_raw_data=False)

    t0 = time.perf_counter()
    train_set = dataset(fit_q)
    if cfg.patience:
        booster = lightgbm.train(params, train_set, num_boost_round=cfg.trees, valid_sets=[dataset(hold, train_set)],
                                 callbacks=[lightgbm.early_stopping(cfg.patience, verbose=False)])
    else:
        booster = lightgbm.train(params, train_set, num_boost_round=cfg.trees)
    best = booster.best_score.get("valid_0", {}).get(f"ndcg@{TOP_K}")
    rounds = int(booster.best_iteration) or booster.current_iteration()
    meta = {"config": asdict(cfg), "best_iteration": rounds,
            "holdout_ndcg@10": None if best is None else float(best), "fit_s": round(time.perf_counter() - t0, 1),
            "train_queries": int(fit_q.sum()), "holdout_queries": int(hold.sum()),
            "queries_with_target": int(useful.size), "queries": int(cs.n_queries),
            "candidates_per_query": float(counts.mean()) if counts.size else 0.0,
            "target_in_candidates": float(useful.size / max(cs.n_queries, 1))}
    booster = lightgbm.Booster(model_str=booster.model_to_string(num_iteration=rounds))
    return LearnedRanker(booster, cs.names, meta)


def best_first(cs: CandidateSet, score: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:
    """Indices of the candidates (those ``keep`` marks, default all) by query, best ``score`` first, ties
    by item id: the order ``ranked_slots`` fills lists from."""
    at = np.arange(len(cs)) if keep is None else np.flatnonzero(keep)
    return at[np.lexsort((cs.item_ids[at], -score[at], cs.query[at]))]


def ranked_slots(cs: CandidateSet, order: np.ndarray, k: int, discover_share: float) -> tuple[np.ndarray, np.ndarray]:
    """(candidate index, slot) of every candidate in its query's list of ``k``, filled in ``order``
    (``best_first``) with ``discover_share`` of the slots kept for products outside the ``again`` source."""
    fresh = (cs.sources[order] & SOURCE_BITS["again"]) == 0
    picked, at = list_slots(cs.query[order], fresh, k, cold_slots(k, discover_share))
    return order[picked], at


def list_slots(query: np.ndarray, fresh: np.ndarray, k: int, reserve: int) -> tuple[np.ndarray, np.ndarray]:
    """Which candidates fill each query's K slots and where: ``query`` sorted, best first within a query;
    ``fresh``: the shopper never bought it. At least ``reserve`` slots (as many as there are) hold fresh
    products: where the top K holds fewer, its lowest re-buys give way to the best fresh products below it
    (a discovery share, for shoppers whose lists the ranker would fill with re-buys). Returns (index into
    the arrays, slot) of every listed candidate."""
    rank = _cumcount(query, np.ones(query.size, bool))
    top = rank < k
    n = int(query.max(initial=-1)) + 1
    need = np.minimum(reserve, np.bincount(query[fresh], minlength=n)) - np.bincount(query[top & fresh], minlength=n)
    need = np.maximum(need, 0)[query]
    stale = top & ~fresh
    from_end = np.bincount(query[stale], minlength=n)[query] - 1 - _cumcount(query, stale)
    chosen = (top & ~(stale & (from_end < need))) | (~top & fresh & (_cumcount(query, ~top & fresh) < need))
    picked = np.flatnonzero(chosen)
    return picked, _cumcount(query, chosen)[picked]


def _cumcount(query: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per element, how many elements of its query before it have ``mask`` (``query`` sorted)."""
    before = np.cumsum(mask) - mask
    return before - before[np.searchsorted(query, query)]
