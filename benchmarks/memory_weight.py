"""Choose the co-purchase memory's weight (``genrec.rank.memory``) on validation, then report the test lists of
the chosen weight beside the decoder alone, on the harness's split (cold-start hold-out, history masked).

The decoder's beam is decoded once per example (``--beam`` products, the memory off); every weight then
re-ranks those same products, so the sweep costs one decode. The figures are the decoder's own lists
(no cold-start slots), recall@10 and NDCG@10 over ``--examples`` validation and test users.

    .venv/bin/python benchmarks/memory_weight.py --data data/beauty --run runs/quality/amazon-beauty-seed0/run \\
        --seed 0 --weights 0,0.5,1,2,4 --examples 5000

``--settings`` compares co-occurrence settings of the memory on the same decoded beams: each is a JSON object
of ``MemoryConfig`` fields (``{}``: the defaults), separated by ``;``; the pick is over settings and weights.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from genrec.cli import configure_logging
from genrec.data.sequences import Examples, SequenceConfig
from genrec.evaluation.protocol import EvalConfig, build_eval_data
from genrec.rank.memory import CoPurchaseMemory, MemoryConfig
from genrec.retriever import Retriever


def decode(retriever: Retriever, examples: Examples, beam: int) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """(histories, products [n, beam], decoder log-probs [n, beam]) with the history excluded."""
    histories = [examples.history(i) for i in range(len(examples))]
    out = retriever.retrieve_arrays(histories, k=beam, exclude_history=True)
    return histories, out.item_ids, out.scores.astype(np.float64)


def metrics(items: np.ndarray, scores: np.ndarray, targets: np.ndarray, k: int = 10) -> dict[str, float]:
    """recall@k and NDCG@k of the lists ``items`` re-ranked by ``scores`` (one target per example)."""
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    top = np.take_along_axis(items, order, 1)
    hit = top == targets[:, None]
    rank = hit.argmax(1)
    gain = np.where(hit.any(1), 1.0 / np.log2(rank + 2.0), 0.0)
    return {f"recall@{k}": float(hit.any(1).mean()), f"ndcg@{k}": float(gain.mean())}


def sweep(memory: CoPurchaseMemory, histories, items, scores, targets, weights) -> dict[float, dict]:
    """Every weight's metrics on one decoded set (dead slots stay last)."""
    sim = memory.scores(histories, items)
    out = {}
    for w in weights:
        new = np.where(items >= 0, scores + w * np.log(memory.cfg.floor + sim), -np.inf)
        out[w] = metrics(items, new, targets)
    return out


def parse_settings(text: str, ap: argparse.ArgumentParser) -> list[dict]:
    """``--settings``: ';'-separated JSON objects of ``MemoryConfig`` fields, each checked as the config is."""
    try:
        variants = [json.loads(v) for v in text.split(";")]
        for v in variants:
            MemoryConfig(**{**v, "weight": 1.0})
    except (json.JSONDecodeError, TypeError, ValueError) as e:
        ap.error(f"--settings: {e}")
    return variants


def format_sweep(result: dict[str, dict], best: tuple[int, float]) -> str:
    """One line per (settings, weight): validation and test recall@10 / NDCG@10, validation's pick marked."""
    lines = [f"{'settings':>9}{'weight':>8}{'val R@10':>10}{'val N@10':>10}{'test R@10':>11}{'test N@10':>11}"]
    for key, v in result["validation"].items():
        t = result["test"][key]
        mark = "  <- validation's pick" if key == best else ""
        lines.append(f"{key[0]:>9}{key[1]:>8g}{v['recall@10']:>10.4f}{v['ndcg@10']:>10.4f}{t['recall@10']:>11.4f}"
                     f"{t['ndcg@10']:>11.4f}{mark}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="the full dataset (the harness holds out from it)")
    ap.add_argument("--run", required=True, help="a trained run of that seed's training copy")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--weights", default="0,0.25,0.5,1,2,4")
    ap.add_argument("--beam", type=int, default=50)
    ap.add_argument("--examples", type=int, default=5000, help="validation and test users (seeded samples)")
    ap.add_argument("--settings", default="{}", help="';'-separated JSON objects of MemoryConfig fields to compare")
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    args = ap.parse_args(argv)
    configure_logging()
    weights = [float(w) for w in args.weights.split(",")]
    variants = parse_settings(args.settings, ap)  # before any work: a bad setting fails at once
    ecfg = EvalConfig(cold_start_fraction=0.05, max_test=args.examples)
    data = build_eval_data(Path(args.data), SequenceConfig(split="leave_one_out"), ecfg, args.seed)
    rng = np.random.default_rng(args.seed)
    validation = data.validation.subset(np.sort(rng.permutation(len(data.validation))[: args.examples]))
    retriever = Retriever.from_run(args.run, beam_width=args.beam, cold_share=0.0, memory_weight=0)
    memories = [CoPurchaseMemory.build(data.train, data.catalog, MemoryConfig(**{**v, "weight": 1.0})) for v in variants]
    result: dict[str, dict] = {}
    for name, examples in (("validation", validation), ("test", data.test)):
        start = time.perf_counter()
        histories, items, scores = decode(retriever, examples, args.beam)
        targets = np.array([examples.targets(i)[0] for i in range(len(examples))])
        result[name] = {(i, w): m for i, memory in enumerate(memories)
                        for w, m in sweep(memory, histories, items, scores, targets, weights).items()}
        print(f"{name}: {len(examples)} users, decoded in {time.perf_counter() - start:.0f}s", file=sys.stderr)
    best = max(result["validation"], key=lambda key: result["validation"][key]["ndcg@10"])
    print(format_sweep(result, best))
    if args.out:
        rows = [{"settings": variants[i], "weight": w, **{f"{split}_{metric}": value for split in result
                                                          for metric, value in result[split][(i, w)].items()}}
                for i, w in result["validation"]]
        best_row = {"settings": variants[best[0]], "weight": best[1]}
        Path(args.out).write_text(json.dumps({"best": best_row, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
