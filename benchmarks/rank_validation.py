"""Choose the learned ranker's settings on validation alone: a seeded set of the run's validation shoppers
is put aside as the judge, the ranker is trained on (parts of) the rest under each setting, and every row is
scored on the judge set. No test figure is read, so a setting may be chosen on this table (then confirmed on
the test table over seeds, ``benchmarks/quality.py``).

Candidates and features are computed once (``Retriever.candidate_set``); each row only refits LightGBM.
Validation figures run above test ones (the decoder early-stopped on validation shoppers), so read the rows
against each other.

    .venv/bin/python benchmarks/rank_validation.py --run runs/quality/amazon-beauty-seed0/run --judge 4000
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
from genrec.rank.rankers import fit, labels
from genrec.rank.train import candidate_sets, run_splits
from genrec.retriever import Retriever
from genrec.run.config import load_run_config
from genrec.run.layout import CONFIG_FILE
from genrec.run.semids import run_dataset
from rank_ablation import metrics  # noqa: E402 (benchmarks/ is on the path when run as a script)

# row name -> (training queries, None: all the rest; RankConfig overrides)
ROWS = {
    "6,000 queries": (6000, {}),
    "12,000 queries (the default)": (12000, {}),
    "all the rest": (None, {}),
    "all, learning rate 0.05": (None, {"learning_rate": 0.05}),
    "all, 63 leaves": (None, {"leaves": 63}),
    "all, min_child_samples 200": (None, {"min_child_samples": 200}),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--judge", type=int, default=4000, help="validation shoppers put aside to score the rows")
    ap.add_argument("--seed", type=int, default=123, help="seeds the judge set")
    ap.add_argument("--out", default=None, help="JSON of every row")
    args = ap.parse_args(argv)
    configure_logging()
    run = Path(args.run)
    cfg = load_run_config(run / CONFIG_FILE)
    val = run_splits(run_dataset(run), cfg).validation
    order = np.random.default_rng(args.seed).permutation(len(val))
    judge, pool = val.subset(np.sort(order[:args.judge])), val.subset(np.sort(order[args.judge:]))
    retriever = Retriever.from_run(run, ranker="none")
    t0 = time.perf_counter()
    judge_cs, pool_cs = candidate_sets(retriever, judge), candidate_sets(retriever, pool)
    print(f"candidates of {len(judge):,} judge and {len(pool):,} training shoppers "
          f"({time.perf_counter() - t0:.0f}s)", file=sys.stderr)
    y = labels(pool_cs, pool.target_offsets, pool.target_items)
    rows = {}
    for name, (n, overrides) in ROWS.items():
        n = len(pool) if n is None else min(n, len(pool))
        keep = pool_cs.query < n  # the first n training shoppers (ids in no meaningful order)
        part = pool_cs.subset(keep)
        part.n_queries = n
        ranker = fit(part, y[keep], dataclasses.replace(cfg.rank, **overrides), cfg.train.threads)
        m = metrics(judge_cs, ranker.score(judge_cs), judge)
        rows[name] = {"queries": n, "recall@10": m["recall@10"], "ndcg@10": m["ndcg@10"],
                      "trees": ranker.meta["best_iteration"]}
    print(f"{'row':34}{'queries':>9}{'R@10':>9}{'N@10':>9}{'trees':>7}")
    for name, r in rows.items():
        print(f"{name:34}{r['queries']:>9,}{r['recall@10']:>9.4f}{r['ndcg@10']:>9.4f}{r['trees']:>7}")
    if args.out:
        Path(args.out).write_text(json.dumps({"run": str(run), "judge": len(judge), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
