"""What each candidate source and feature group of the rank stage is worth, on one trained run: the learned
ranker retrained without each source and each feature group, beside the weighted product of experts and
the decoder alone, all scored on the harness's test split (the run's seed and cold-start hold-out).

The candidates and features of the ranker's training queries (the run's validation split, as ``genrec
train`` samples them) and of the test queries are computed once (``Retriever.candidate_set``); each row
then filters candidate rows or feature columns and trains its own LightGBM ranker. Lists are the top K of
the candidates, without the cold-start slots and with the history kept, so rows differ only in what the
ranker sees; the harness's own row for the shipped run is ``benchmarks/quality.py``'s.

    .venv/bin/python benchmarks/rank_ablation.py --data data/beauty --run runs/quality/amazon-beauty-seed0/run --seed 0
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from genrec.cli import configure_logging
from genrec.data.sequences import Examples
from genrec.evaluation.metrics import Targets, rank_metrics
from genrec.evaluation.protocol import EvalConfig, build_eval_data
from genrec.rank.candidates import SOURCE_BITS, CandidateSet
from genrec.rank.config import FEATURE_GROUPS
from genrec.rank.features import feature_group
from genrec.rank.memory import fuse
from genrec.rank.rankers import best_first, fit, labels
from genrec.rank.train import candidate_sets, run_splits, validation_queries
from genrec.retriever import Retriever
from genrec.run.config import load_run_config
from genrec.run.layout import CONFIG_FILE
from genrec.run.semids import run_dataset


def variants(cs: CandidateSet) -> dict[str, tuple[int, tuple[str, ...]]]:
    """Row name -> (source bits removed, feature groups removed)."""
    present = sorted({feature_group(n) for n in cs.names}, key=FEATURE_GROUPS.index)
    out = {"learned (all)": (0, ())}
    for name in ("again", "co", "beam"):
        out[f"- {name} source"] = (SOURCE_BITS[name], ())
    out["- decoder (beam and its features)"] = (SOURCE_BITS["beam"], ("decoder",))
    for group in present:
        out[f"- {group} features"] = (0, (group,))
    return out


def restrict(cs: CandidateSet, drop_bits: int, drop_groups: tuple[str, ...]) -> CandidateSet:
    """Candidates some other source proposed too, with the remaining feature columns."""
    keep = (cs.sources & ~np.uint8(drop_bits)) > 0
    names = tuple(n for n in cs.names if feature_group(n) not in drop_groups)
    out = cs.subset(keep)
    return CandidateSet(out.query, out.pos, out.item_ids, out.sources & ~np.uint8(drop_bits), cs.n_queries,
                        out.columns(names), names)


def top_lists(cs: CandidateSet, score: np.ndarray, k: int) -> np.ndarray:
    """[B, k] item ids by score (-1 pads)."""
    order = best_first(cs, score)
    q = cs.query[order]
    rank = np.arange(q.size) - np.searchsorted(q, q)
    keep = rank < k
    out = np.full((cs.n_queries, k), -1, np.int64)
    out[q[keep], rank[keep]] = cs.item_ids[order][keep]
    return out


def metrics(cs: CandidateSet, score: np.ndarray, test: Examples, ks=(5, 10, 20)) -> dict:
    lists = top_lists(cs, score, max(ks))
    return rank_metrics(lists, Targets(test.target_offsets, test.target_items), list(ks))


def weighted_score(cs: CandidateSet, weight: float, floor: float) -> np.ndarray:
    """The product of experts over the beam (the ``weighted`` ranker): -inf off the beam."""
    depth = max(int(n[len("dec_l"):]) for n in cs.names if n.startswith("dec_l"))
    total = cs.columns((f"dec_l{depth}",))[:, 0].astype(np.float64)
    beam = (cs.sources & SOURCE_BITS["beam"]) > 0
    co = cs.columns(("co_score",))[:, 0] if "co_score" in cs.names else 0.0
    return np.where(beam, fuse(total, co, weight, floor), -np.inf)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--data", required=True, help="the full dataset the harness splits (not the training copy)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cold-start", type=float, default=0.05)
    ap.add_argument("--max-test", type=int, default=None)
    ap.add_argument("--out", default=None, help="JSON of every row")
    args = ap.parse_args(argv)
    configure_logging()
    run = Path(args.run)
    cfg = load_run_config(run / CONFIG_FILE)
    t0 = time.perf_counter()
    train_q = validation_queries(run_splits(run_dataset(run), cfg), cfg)
    ecfg = EvalConfig(cold_start_fraction=args.cold_start or None, max_test=args.max_test)
    test = build_eval_data(Path(args.data), cfg.sequence, ecfg, args.seed).test_full
    retriever = Retriever.from_run(run, ranker="none")
    train_cs = candidate_sets(retriever, train_q)
    test_cs = candidate_sets(retriever, test)
    print(f"candidates: train {len(train_cs):,} for {len(train_q):,} queries, test {len(test_cs):,} for "
          f"{len(test):,} ({time.perf_counter() - t0:.0f}s)", file=sys.stderr)
    rows = {"decoder alone": metrics(test_cs, weighted_score(test_cs, 0.0, 1.0), test),
            f"weighted (memory {cfg.memory.weight:g})": metrics(test_cs, weighted_score(test_cs, cfg.memory.weight,
                                                                                          cfg.memory.floor), test)}
    cover = labels(test_cs, test.target_offsets, test.target_items)
    for name, (bits, groups) in variants(train_cs).items():
        start = time.perf_counter()
        tr, te = restrict(train_cs, bits, groups), restrict(test_cs, bits, groups)
        ranker = fit(tr, labels(tr, train_q.target_offsets, train_q.target_items), cfg.rank, cfg.train.threads)
        rows[name] = metrics(te, ranker.score(te), test)
        rows[name]["target_in_candidates"] = float(np.bincount(te.query, weights=labels(te, test.target_offsets,
                                                   test.target_items), minlength=len(test)).clip(max=1).mean())
        rows[name]["fit_s"] = round(time.perf_counter() - start, 1)
        rows[name]["holdout_ndcg@10"] = ranker.meta["holdout_ndcg@10"]  # validation's view (feature rows: same queries)
        print(f"  {name}: recall@10 {rows[name]['recall@10']:.4f} ndcg@10 {rows[name]['ndcg@10']:.4f}", file=sys.stderr)
    print(format_rows(rows, float(np.bincount(test_cs.query, weights=cover, minlength=len(test)).clip(max=1).mean())))
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": rows, "run": str(run), "seed": args.seed,
                                              "test_queries": len(test), "train_queries": len(train_q)}, indent=2))
    return 0


def format_rows(rows: dict, cover: float) -> str:
    """One line per row: R@5/10/20, N@10, N@10 as a share of the full learned row's, and the ranker's own
    early-stopping NDCG@10 on its held-out validation queries (the figure a choice may be made on)."""
    base = rows["learned (all)"]["ndcg@10"]
    lines = [f"{'':36}{'R@5':>8}{'R@10':>8}{'R@20':>8}{'N@10':>8}{'N@10/all':>10}{'holdout':>9}",
             "-" * 87]
    for name, m in rows.items():
        hold = m.get("holdout_ndcg@10")
        lines.append(f"{name:36}{m['recall@5']:>8.4f}{m['recall@10']:>8.4f}{m['recall@20']:>8.4f}"
                     f"{m['ndcg@10']:>8.4f}{m['ndcg@10'] / base:>9.2f}x{'-' if hold is None else f'{hold:.4f}':>9}")
    lines.append(f"test targets among all sources' candidates: {cover:.3f}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
