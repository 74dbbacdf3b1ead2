"""Where our model wins and where it loses against one baseline, on the harness's own split and lists
(``genrec.evaluation.harness``: same test users, same history exclusion chosen on validation):

1. hits that both, only ours or only theirs find in the top K;
2. recall by how often the target was bought in training (rare targets are where a generative model over
   shared SID prefixes is expected to struggle and a co-occurrence table is not);
3. recall by the shopper's history length;
4. how often each top K reaches the target's SID prefix of 1, 2, ... tokens: a miss that reached the
   right prefix lost on the last codewords, one that did not lost on the first.

    .venv/bin/python benchmarks/gap.py --data data/beauty --run runs/quality/amazon-beauty-seed0/run \\
        --seed 0 --baseline itemknn --max-test 6000
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from genrec.cli import configure_logging
from genrec.evaluation.harness import GENREC, fit_context, make_model, run_model
from genrec.evaluation.protocol import K_BY_SPLIT, EvalConfig, build_eval_data
from genrec.run.config import load_run_config

POPULARITY_EDGES = (0, 1, 5, 10, 20, 50)  # training purchases of the target: [0,1), [1,5), ..., [50, inf)
LENGTH_EDGES = (0, 4, 6, 10, 20)  # history items before the target


def pair_hits(ranked: np.ndarray, offsets: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per (query, target item) pair, in target order: whether the query's list holds that target."""
    owner = np.repeat(np.arange(offsets.size - 1), np.diff(offsets))
    return (ranked[owner] == targets[:, None]).any(1)


def reaches_prefix(list_rows: np.ndarray, target_rows: np.ndarray, depth: int) -> np.ndarray:
    """Per pair: whether some listed item's SID shares the target's first ``depth`` tokens ([P, K, D] vs [P, D];
    -1 rows for empty slots never match)."""
    same = list_rows[:, :, :depth] == target_rows[:, None, :depth]
    return (same.all(-1) & (list_rows[:, :, 0] >= 0)).any(1)


def by_bucket(values: np.ndarray, edges: tuple[int, ...], hits: dict[str, np.ndarray]) -> list[str]:
    """Markdown rows: per bucket of ``values``, its size and each model's hit rate, and ours / theirs."""
    names = list(hits)
    lines = ["| bucket | pairs | " + " | ".join(names) + " | ours/theirs |", "|---" * (len(names) + 3) + "|"]
    bounds = list(edges) + [None]
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        mask = (values >= lo) & (values < hi) if hi is not None else values >= lo
        if not mask.any():
            continue
        rates = [float(hits[n][mask].mean()) for n in names]
        ratio = f"{rates[0] / rates[1]:.2f}x" if rates[1] else "-"
        label = f"[{lo}, {hi})" if hi is not None else f"{lo}+"
        lines.append(f"| {label} | {int(mask.sum())} | " + " | ".join(f"{r:.4f}" for r in rates) + f" | {ratio} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="the dataset the run's harness copy was cut from")
    ap.add_argument("--run", required=True, help="a trained run (genrec train / benchmarks/quality.py)")
    ap.add_argument("--seed", type=int, default=0, help="the seed of the run's hold-outs")
    ap.add_argument("--baseline", default="itemknn", help="the baseline to compare against")
    ap.add_argument("--cold-start", type=float, default=0.05, help="TIGER cold-start share, as the run was cut")
    ap.add_argument("--max-test", type=int, default=None, help="a seeded sample of test users")
    args = ap.parse_args(argv)
    configure_logging()
    run = Path(args.run)
    run_cfg = load_run_config(run / "config.yaml")
    cfg = EvalConfig(cold_start_fraction=args.cold_start or None, max_test=args.max_test,
                     cold_share=run_cfg.cold_start.share)
    data = build_eval_data(Path(args.data), run_cfg.sequence, cfg, args.seed)
    ks = K_BY_SPLIT[data.split]
    k = ks[-1] if data.split == "leave_one_out" else ks[1]
    lists, retriever = {}, None
    for name in (GENREC, args.baseline):
        print(f"{name}: fitting and ranking", file=sys.stderr, flush=True)
        model = make_model(name, run, cfg)
        lists[name] = run_model(model, data, cfg, fit_context(data, run, cfg, args.seed, ks, name)).ranked
        lists[name] = lists[name][k] if k in lists[name] else lists[name][max(lists[name])][:, :k]
        retriever = getattr(model, "retriever", retriever)
    test = data.test_full
    offsets, targets = test.target_offsets, test.target_items
    hits = {n: pair_hits(lists[n], offsets, targets) for n in lists}
    ours, theirs = hits[GENREC], hits[args.baseline]
    print(f"## {GENREC} vs {args.baseline}, top {k}, {len(test)} test users, {targets.size} target items\n")
    print(f"recall@{k}: ours {ours.mean():.4f}, theirs {theirs.mean():.4f}; both {np.mean(ours & theirs):.4f}, "
          f"only ours {np.mean(ours & ~theirs):.4f}, only theirs {np.mean(~ours & theirs):.4f}\n")
    popularity = np.bincount(np.searchsorted(data.catalog, data.sequences.history_items), minlength=data.catalog.size)
    print("### by the target's training purchases\n")
    print("\n".join(by_bucket(popularity[np.searchsorted(data.catalog, targets)], POPULARITY_EDGES, hits)) + "\n")
    length = np.repeat(np.diff(test.history_offsets), np.diff(offsets))
    print("### by history length\n")
    print("\n".join(by_bucket(length, LENGTH_EDGES, hits)) + "\n")
    item_tokens = retriever.item_tokens
    owner = np.repeat(np.arange(len(test)), np.diff(offsets))
    target_rows = _token_rows(item_tokens, targets)
    list_rows = {n: _token_rows(item_tokens, lists[n])[owner] for n in lists}  # [pairs, K, D], once per model
    lost = ~ours & theirs
    print("### top K reaches the target's SID prefix\n")
    print("| tokens | ours | theirs | ours, on pairs only theirs hit |\n|---|---|---|---|")
    for depth in range(1, item_tokens.tokens_per_item):
        reach = {n: reaches_prefix(list_rows[n], target_rows, depth) for n in lists}
        print(f"| {depth} | {reach[GENREC].mean():.4f} | {reach[args.baseline].mean():.4f} | "
              f"{reach[GENREC][lost].mean() if lost.any() else float('nan'):.4f} |")
    return 0


def _token_rows(item_tokens, ids: np.ndarray) -> np.ndarray:
    """SID token rows of item ids (any shape) -> [..., D]; -1 rows for ids without a SID (or -1)."""
    ids = np.asarray(ids, np.int64)
    out = np.full(ids.shape + (item_tokens.tokens_per_item,), -1, np.int64)
    known = item_tokens.known(ids.reshape(-1)).reshape(ids.shape) & (ids >= 0)
    out[known] = item_tokens.tokens[item_tokens.rows(ids[known])]
    return out


if __name__ == "__main__":
    sys.exit(main())
