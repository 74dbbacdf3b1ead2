"""Train the item head (``genrec.rank.item_head``) on a trained run's frozen decoder, then choose the weights of
the hybrid's experts on validation: ``log p(SID) + w_head * log p_head(item) + w_mem * log(floor + sim)``
(the co-purchase memory, ``genrec.rank.memory``), and report the test lists of the chosen weights beside the
decoder alone, the head alone (full catalog) and item-kNN's figure from the same split.

The decoder's beam is decoded once per example; every weight pair re-ranks those same products. Figures are
the decoder's own lists (no cold-start slots), recall@10 and NDCG@10 over ``--examples`` users.

    .venv/bin/python benchmarks/hybrid.py --data data/beauty --run runs/tok0/run --seed 0 --examples 3000
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from memory_weight import decode, metrics  # noqa: E402 (benchmarks/ is on the path when run as a script)
from genrec.cli import configure_logging
from genrec.data.sequences import SequenceConfig
from genrec.evaluation.protocol import EvalConfig, build_eval_data
from genrec.rank.item_head import ItemHead, ItemHeadConfig, fit_item_head, query_states, save_head
from genrec.rank.memory import CoPurchaseMemory, MemoryConfig
from genrec.retriever import Retriever
from genrec.run.layout import HEAD_FILE
from semid.catalog import item_columns


@torch.inference_mode()
def head_scores(head: ItemHead, retriever: Retriever, catalog: np.ndarray, histories, items, max_items: int):
    """log p_head of each decoded product [n, beam] (-inf for dead slots), and the head's full NDCG@10."""
    logp = head(query_states(retriever.model, retriever.item_tokens, histories, max_items)).numpy()
    cols = item_columns(catalog, items)
    return np.where(cols >= 0, np.take_along_axis(logp, np.maximum(cols, 0), 1), -np.inf), logp


def full_metrics(logp: np.ndarray, catalog: np.ndarray, histories, targets: np.ndarray) -> dict[str, float]:
    """The head alone, ranking the whole catalog with the history excluded."""
    logp = logp.copy()
    for i, h in enumerate(histories):
        logp[i, item_columns(catalog, h)[item_columns(catalog, h) >= 0]] = -np.inf
    top = np.argsort(-logp, axis=1)[:, :10]
    return metrics(catalog[top], -np.arange(10, dtype=np.float64)[None].repeat(len(top), 0), targets)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="the full dataset (the harness holds out from it)")
    ap.add_argument("--run", required=True, help="a trained run (token-level decoder) of that seed's training copy")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--head-weights", default="0,0.25,0.5,1,2")
    ap.add_argument("--memory-weights", default="0,1,2,4")
    ap.add_argument("--beam", type=int, default=50)
    ap.add_argument("--examples", type=int, default=3000, help="validation and test users (seeded samples)")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--dropout", type=float, default=0.3)
    ap.add_argument("--save", action="store_true", help=f"write the head to RUN/{HEAD_FILE}")
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    args = ap.parse_args(argv)
    configure_logging()
    torch.set_num_threads(1)
    cfg = ItemHeadConfig(weight=1.0, dim=args.dim, dropout=args.dropout, seed=args.seed)
    ecfg = EvalConfig(cold_start_fraction=0.05, max_test=args.examples)
    data = build_eval_data(Path(args.data), SequenceConfig(split="leave_one_out"), ecfg, args.seed)
    rng = np.random.default_rng(args.seed)
    validation = data.validation.subset(np.sort(rng.permutation(len(data.validation))[: args.examples]))
    retriever = Retriever.from_run(args.run, beam_width=args.beam, cold_share=0.0, memory_weight=0)
    log = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
    head, info = fit_item_head(retriever.model, retriever.item_tokens, data.sequences, validation, data.catalog, cfg,
                               log=log)
    if args.save:
        save_head(head, data.catalog, cfg, Path(args.run) / HEAD_FILE)
    memory = CoPurchaseMemory.build(data.train, data.catalog, MemoryConfig(weight=1.0))
    hw = [float(w) for w in args.head_weights.split(",")]
    mw = [float(w) for w in args.memory_weights.split(",")]
    result = {"head": info}
    for name, examples in (("validation", validation), ("test", data.test)):
        start = time.perf_counter()
        histories, items, scores = decode(retriever, examples, args.beam)
        targets = np.array([examples.targets(i)[0] for i in range(len(examples))])
        head_lp, full = head_scores(head, retriever, data.catalog, histories, items, cfg.max_items)
        mem_lp = np.log(memory.cfg.floor + memory.scores(histories, items))
        grid = {}
        for a, b in itertools.product(hw, mw):
            new = np.where(items >= 0, scores + a * np.nan_to_num(head_lp, neginf=-50.0) + b * mem_lp, -np.inf)
            grid[f"{a:g},{b:g}"] = metrics(items, new, targets)
        result[name] = {"grid": grid, "head_alone": full_metrics(full, data.catalog, histories, targets),
                        "beam_recall": float((items == targets[:, None]).any(1).mean())}
        print(f"{name}: {len(examples)} users in {time.perf_counter() - start:.0f}s", file=sys.stderr)
    best = max(result["validation"]["grid"], key=lambda key: result["validation"]["grid"][key]["ndcg@10"])
    result["best"] = best
    print(f"{'head,mem':>10}{'val R@10':>10}{'val N@10':>10}{'test R@10':>11}{'test N@10':>11}")
    for key in result["validation"]["grid"]:
        v, t = result["validation"]["grid"][key], result["test"]["grid"][key]
        mark = "  <- validation's pick" if key == best else ""
        print(f"{key:>10}{v['recall@10']:>10.4f}{v['ndcg@10']:>10.4f}{t['recall@10']:>11.4f}{t['ndcg@10']:>11.4f}{mark}")
    for name in ("validation", "test"):
        r = result[name]
        print(f"{name}: head alone R@10 {r['head_alone']['recall@10']:.4f} N@10 {r['head_alone']['ndcg@10']:.4f};"
              f" beam@{args.beam} recall {r['beam_recall']:.4f}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
