"""Stable retraining on the real Instacart catalog: how many products keep their Semantic ID when the
codebook is retrained. A base codebook is trained on the catalog with a share of products held out; the
catalog then grows back to full size and is retrained with a new seed, (a) fresh and (b) starting from
the base codebook (``init``, what ``genrec semid train --init-from`` does), its SIDs assigned afresh or
carried over from the base table (``semid.churn.carry_over_sids``: unchanged codes keep their
disambiguation index). Prints the churn per level against the base, and the codebook quality of each run.

    PYTHONPATH=. .venv/bin/python benchmarks/semid_churn.py [--threads 1] [--seed 0] [--held-out 0.1] [--full-schedule]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from semid_quality import DATA, load_catalog  # noqa: E402

from semid.churn import carry_over_sids, migration_table, sid_churn  # noqa: E402
from semid.sids import assign_sids, collision_summary  # noqa: E402
from semid.train import SemIDConfig, SemIDModel, train_codebook  # noqa: E402


def train(name: str, cfg: SemIDConfig, x: np.ndarray, paths: list, ids: np.ndarray,
          init: SemIDModel | None = None) -> tuple[SemIDModel, object, dict]:
    """Train one codebook on (x, paths), assign SIDs; returns model, SID table and quality numbers."""
    start = time.perf_counter()
    model, history = train_codebook(x, paths, cfg, init=init)
    seconds = time.perf_counter() - start
    sids = assign_sids(ids, model.encode(x), model.codebook_version)
    quality = {
        "products": len(ids),
        "epochs": len(history),
        "train_seconds": round(seconds, 1),
        "reconstruction_error": round(model.reconstruction_error(x), 4),
        "utilization": history[-1].get("utilization"),
        "unique_before_dedup": round(collision_summary(sids)["unique_fraction"], 4),
    }
    print(f"{name}: {len(ids):,} products, {len(history)} epochs in {seconds:.0f}s, "
          f"reconstruction error {quality['reconstruction_error']}", flush=True)
    return model, sids, quality


def churn_table(reports: dict[str, dict]) -> str:
    """Churn reports side by side, one column per retrain."""
    names = list(reports)
    first = reports[names[0]]
    rows = [("products in both", [f"{r['common']:,}" for r in reports.values()]),
            ("only in the new catalog", [f"{r['only_new']:,}" for r in reports.values()])]
    for level in range(first["levels"]):
        shares = [f"{r['prefix_changed'][level]:.2%}" for r in reports.values()]
        rows.append((f"level {level + 1} prefix changed", shares))
    rows.append(("full SID changed", [f"{r['full_sid_changed']:.2%}" for r in reports.values()]))
    rows.append(("SID string unchanged", [f"{r['sid_unchanged']:.2%}" for r in reports.values()]))
    width = max(14, *(len(n) + 2 for n in names))
    lines = [f"{'':<28}" + "".join(f"{n:>{width}}" for n in names)]
    lines += [f"{label:<28}" + "".join(f"{v:>{width}}" for v in values) for label, values in rows]
    return "\n".join(lines)


def quality_table(quality: dict[str, dict]) -> str:
    """Codebook quality of each run: size, time, reconstruction, utilisation, collisions."""
    keys = ["products", "epochs", "train_seconds", "reconstruction_error", "utilization", "unique_before_dedup"]
    width = max(len(str(q[k])) for q in quality.values() for k in keys) + 2
    width = max(width, *(len(n) + 2 for n in quality))
    lines = [f"{'':<22}" + "".join(f"{n:>{width}}" for n in quality)]
    lines += [f"{k:<22}" + "".join(f"{str(q[k]):>{width}}" for q in quality.values()) for k in keys]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DATA), help="folder with products/aisles/departments.csv(.gz)")
    ap.add_argument("--embeddings", help="parquet (item_id, embedding) or .npy in product_id order")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--seed", type=int, default=0, help="seed of the base codebook; retrains use seed + 1")
    ap.add_argument("--held-out", type=float, default=0.1, help="share of products added only at retraining")
    ap.add_argument("--epochs", type=int, default=None, help="RQ-VAE epochs (default: SemIDConfig)")
    ap.add_argument("--full-schedule", action="store_true",
                    help="also retrain from init with the full epochs and lr (init_epochs = epochs, init_lr_ratio = 1)")
    ap.add_argument("--json", help="write reports and quality as JSON here")
    ap.add_argument("--migration", help="write the base -> init+carry_over migration table (parquet) here")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    x, ids, paths = load_catalog(args.data, args.embeddings)
    base_cfg = SemIDConfig(seed=args.seed, threads=args.threads, progress=False)
    if args.epochs:
        base_cfg = replace(base_cfg, epochs=args.epochs)
    retrain_cfg = replace(base_cfg, seed=args.seed + 1)
    rng = np.random.default_rng(args.seed)
    first = np.sort(rng.permutation(len(ids))[: round(len(ids) * (1 - args.held_out))])
    print(f"{len(ids):,} products ({len(first):,} in the base training), embeddings {x.shape[1]}-d, "
          f"codebook sizes {base_cfg.codebook_sizes}, {args.threads} torch threads", flush=True)

    base, base_sids, q_base = train("base", base_cfg, x[first], [paths[i] for i in first], ids[first])
    _, fresh_sids, q_fresh = train("fresh", retrain_cfg, x, paths, ids)
    warm, init_sids, q_init = train("from_init", retrain_cfg, x, paths, ids, init=base)
    carried = carry_over_sids(base_sids, ids, warm.encode(x), warm.codebook_version)
    reports = {"fresh": sid_churn(base_sids, fresh_sids), "from_init": sid_churn(base_sids, init_sids),
               "init+carry_over": sid_churn(base_sids, carried)}
    quality = {"base": q_base, "fresh": q_fresh, "from_init": q_init}
    if args.full_schedule:  # what starting from init costs with the fresh training's schedule instead
        full_cfg = replace(retrain_cfg, init_epochs=retrain_cfg.epochs, init_lr_ratio=1.0)
        _, full_sids, quality["init_full_schedule"] = train("init_full_schedule", full_cfg, x, paths, ids, init=base)
        reports["init_full_schedule"] = sid_churn(base_sids, full_sids)
    print()
    print(f"churn against the base codebook (seed {args.seed}, {1 - args.held_out:.0%} of the catalog); "
          f"retrains with seed {args.seed + 1} on the full catalog")
    print(churn_table(reports))
    print()
    print(quality_table(quality))
    if args.migration:
        import pyarrow.parquet as pq

        pq.write_table(migration_table(base_sids, carried), args.migration)
    if args.json:
        Path(args.json).write_text(json.dumps({"reports": reports, "quality": quality}, indent=2))


if __name__ == "__main__":
    main()
