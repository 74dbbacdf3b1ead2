"""Choose the learned ranker's settings on validation alone: a seeded set of the run's validation shoppers
is put aside as the judge, the ranker is trained on (parts of) the rest under each setting, and every row is
scored on the judge set. No test figure is read, so a setting may be chosen on this table (then confirmed on
the test table over seeds, ``benchmarks/quality.py``).

Candidates and features are computed once (``Retriever.candidate_set``); each row only refits LightGBM.
Validation figures run above test ones (the decoder early-stopped on validation shoppers), so read the rows
against each other. ``--discover`` adds a table of the run's own ranker under each ``rank.discover_share``:
R@20 and new-to-shopper R@20 (targets outside the history), the trade a grocery run's share is chosen on.
``--pool`` caps the training shoppers (a seeded sample) where the validation split is large (Instacart).

    .venv/bin/python benchmarks/rank_validation.py --run runs/quality/amazon-beauty-seed0/run --judge 4000
    .venv/bin/python benchmarks/rank_validation.py --run runs/quality/instacart-seed0/run --judge 4000 \
        --pool 12000 --settings config --discover 0,0.1,0.2,0.3
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

from genrec.cli import configure_logging
from genrec.data.sequences import Examples
from genrec.evaluation.metrics import Targets, rank_metrics, remove_items
from genrec.rank.candidates import CandidateSet, pair_index
from genrec.rank.rankers import best_first, fit, labels, ranked_slots
from genrec.rank.train import candidate_sets, run_splits
from genrec.retriever import Retriever
from genrec.run.config import load_run_config
from genrec.run.layout import CONFIG_FILE
from genrec.run.semids import run_dataset
from rank_ablation import metrics, top_lists, weighted_score  # noqa: E402 (benchmarks/ is on the path as a script)

# row name -> (training queries, None: all the rest; RankConfig overrides)
ROWS = {
    "6,000 queries": (6000, {}),
    "12,000 queries (the default)": (12000, {}),
    "all the rest": (None, {}),
    "all, learning rate 0.05": (None, {"learning_rate": 0.05}),
    "all, 63 leaves": (None, {"leaves": 63}),
    "all, min_child_samples 200": (None, {"min_child_samples": 200}),
    "all, min_child_samples 200, 400 trees, no early stopping": (None, {"min_child_samples": 200, "patience": 0}),
}


def discovery_metrics(cs: CandidateSet, score: np.ndarray, judge: Examples, share: float, k: int = 20) -> dict:
    """R@K and new-to-shopper R@K of the lists the retriever makes with ``rank.discover_share`` = ``share``
    (``genrec.rank.rankers.ranked_slots``, as the retriever fills them)."""
    sel, at = ranked_slots(cs, best_first(cs, score), k, share)
    lists = np.full((cs.n_queries, k), -1, np.int64)
    lists[cs.query[sel], at] = cs.item_ids[sel]
    targets = Targets(judge.target_offsets, judge.target_items)
    fresh_targets = remove_items(targets, Targets(judge.history_offsets, judge.history_items))
    return (rank_metrics(lists, targets, [k]) | rank_metrics(lists, fresh_targets, [k], prefix="new_"))


def bought(cs: CandidateSet, ex: Examples) -> np.ndarray:
    """Per candidate: whether its query's shopper bought it before (it is in the history)."""
    owner = np.repeat(np.arange(len(ex)), np.diff(ex.history_offsets))
    return pair_index(owner, ex.history_items, cs.query, cs.item_ids) >= 0


def discovery_ranker_rows(pool_cs: CandidateSet, y: np.ndarray, pool: Examples, judge_cs: CandidateSet,
                          judge: Examples, main_score: np.ndarray, cfg, shares: list[float], k: int = 20) -> dict:
    """A second ranker trained on never-bought candidates alone (labels: the never-bought targets), against
    the run's ranker and the weighted order on the judge's never-bought candidates (a discovery list); then
    one list of ``k`` whose reserved share of slots takes the discovery ranker's best never-bought products."""
    fresh_pool, fresh = ~bought(pool_cs, pool), ~bought(judge_cs, judge)
    disc = fit(pool_cs.subset(fresh_pool), y[fresh_pool], cfg.rank, cfg.train.threads)
    targets = Targets(judge.target_offsets, judge.target_items)
    new_targets = remove_items(targets, Targets(judge.history_offsets, judge.history_items))
    d_score = np.where(fresh, disc.score(judge_cs), -np.inf)
    orders = {"run's ranker": np.where(fresh, main_score, -np.inf), "discovery ranker": d_score,
              "weighted": np.where(fresh, weighted_score(judge_cs, cfg.memory.weight, cfg.memory.floor), -np.inf)}
    rows = {}
    for name, score in orders.items():
        listed = np.isfinite(score)  # never-bought candidates (the weighted order: those in the beam)
        lists = top_lists(judge_cs.subset(listed), score[listed], k)
        rows[f"discovery list, {name}"] = rank_metrics(lists, new_targets, [k], prefix="new_")
    order = best_first(judge_cs, d_score)
    q = judge_cs.query[order]
    d_rank = np.full(len(judge_cs), np.iinfo(np.int64).max)
    d_rank[order] = np.arange(q.size) - np.searchsorted(q, q)
    for share in shares:
        reserve = int(np.ceil(share * k))
        forced = fresh & np.isfinite(d_score) & (d_rank < reserve)
        lists = top_lists(judge_cs, np.where(forced, 1e9 - d_rank, main_score), k)
        rows[f"one list, {share:g} for the discovery ranker"] = (rank_metrics(lists, targets, [k])
                                                                | rank_metrics(lists, new_targets, [k], prefix="new_"))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--judge", type=int, default=4000, help="validation shoppers put aside to score the rows")
    ap.add_argument("--seed", type=int, default=123, help="seeds the judge set")
    ap.add_argument("--pool", type=int, default=None, help="training shoppers at most (default: all the rest)")
    ap.add_argument("--settings", choices=("sweep", "config"), default="sweep",
                    help="sweep: the rows above; config: the run's own rank section alone")
    ap.add_argument("--discover", default="", help="comma-separated rank.discover_share values to list at K=20")
    ap.add_argument("--discover-ranker", default="",
                    help="comma-separated list shares for a second ranker trained on never-bought targets")
    ap.add_argument("--dtype", choices=("float32", "bfloat16", "auto"), default=None,
                    help="the decoder's weights while decoding candidates (default: the run's rank.dtype)")
    ap.add_argument("--out", default=None, help="JSON of every row")
    args = ap.parse_args(argv)
    configure_logging()
    run = Path(args.run)
    cfg = load_run_config(run / CONFIG_FILE)
    val = run_splits(run_dataset(run), cfg).validation
    order = np.random.default_rng(args.seed).permutation(len(val))
    rest = order[args.judge:][: args.pool]
    judge, pool = val.subset(np.sort(order[:args.judge])), val.subset(np.sort(rest))
    retriever = Retriever.from_run(run, ranker="none", dtype=args.dtype)
    t0 = time.perf_counter()
    judge_cs, pool_cs = candidate_sets(retriever, judge), candidate_sets(retriever, pool)
    print(f"candidates of {len(judge):,} judge and {len(pool):,} training shoppers "
          f"({time.perf_counter() - t0:.0f}s)", file=sys.stderr)
    y = labels(pool_cs, pool.target_offsets, pool.target_items)
    rows, discover = {}, {}
    settings = ROWS if args.settings == "sweep" else {"the run's rank section": (None, {})}
    for name, (n, overrides) in settings.items():
        n = len(pool) if n is None else min(n, len(pool))
        keep = pool_cs.query < n  # the first n training shoppers (ids in no meaningful order)
        part = pool_cs.subset(keep)
        part.n_queries = n
        ranker = fit(part, y[keep], dataclasses.replace(cfg.rank, **overrides), cfg.train.threads)
        m = metrics(judge_cs, ranker.score(judge_cs), judge)
        rows[name] = {"queries": n, "recall@10": m["recall@10"], "ndcg@10": m["ndcg@10"],
                      "trees": ranker.meta["best_iteration"]}
    print(f"{'row':58}{'queries':>9}{'R@10':>9}{'N@10':>9}{'trees':>7}")
    for name, r in rows.items():
        print(f"{name:58}{r['queries']:>9,}{r['recall@10']:>9.4f}{r['ndcg@10']:>9.4f}{r['trees']:>7}")
    if args.discover:
        ranker = fit(pool_cs, y, cfg.rank, cfg.train.threads)
        score = ranker.score(judge_cs)
        discover = {share: discovery_metrics(judge_cs, score, judge, share) for share in
                    (float(v) for v in args.discover.split(","))}
        print(f"{'discover_share':>14}{'R@20':>9}{'new R@20':>10}")
        for share, m in discover.items():
            print(f"{share:>14.2f}{m['recall@20']:>9.4f}{m['new_recall@20']:>10.4f}")
    discovery = {}
    if args.discover_ranker:
        main_score = fit(pool_cs, y, cfg.rank, cfg.train.threads).score(judge_cs)
        discovery = discovery_ranker_rows(pool_cs, y, pool, judge_cs, judge, main_score, cfg,
                                          [float(v) for v in args.discover_ranker.split(",")])
        print(f"{'row':52}{'R@20':>9}{'new R@20':>10}")
        for name, m in discovery.items():
            print(f"{name:52}{m.get('recall@20', float('nan')):>9.4f}{m['new_recall@20']:>10.4f}")
    if args.out:
        Path(args.out).write_text(json.dumps({"run": str(run), "judge": len(judge), "pool": len(pool), "rows": rows,
                                              "discover": discover, "discovery_ranker": discovery}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
