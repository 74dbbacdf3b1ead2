"""Semantic-ID codebook quality on the real Instacart catalog: RQ-KMeans vs RQ-VAE (lambda = 0) vs RQ-VAE
with the taxonomy contrastive term (lambda = 0.01), same codebook sizes, same embeddings, same pair sample.
Prints the intrinsic metrics side by side, the training times, and whether each bar of issue 3 is met.

    PYTHONPATH=. .venv/bin/python benchmarks/semid_quality.py [--embeddings FILE] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from genrec.data.importers.instacart import read_catalog
from semid.embeddings import EmbeddingConfig, embed_items, read_embeddings
from semid.intrinsic import compare_intrinsic, intrinsic_metrics, sample_pairs
from semid.sids import assign_sids
from semid.train import SemIDConfig, train_codebook

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "instacart"


def load_catalog(data: str, embeddings: str | None) -> tuple[np.ndarray, np.ndarray, list]:
    """The Instacart catalog in ``data`` as (embeddings, item ids, category paths), rows aligned."""
    items, _, _ = read_catalog(Path(data))
    return (load_embeddings(items, embeddings), items.column("item_id").to_numpy(),
            items.column("category_path").to_pylist())


def load_embeddings(items, path: str | None) -> np.ndarray:
    """Embeddings in the items' row order: from FILE (parquet item_id + embedding, or .npy in product_id
    order), else the default text model through semid.embeddings (cached on disk)."""
    ids = items.column("item_id").to_numpy()
    if path is None:
        return embed_items(items, EmbeddingConfig())
    if path.endswith(".npy"):
        vectors = np.load(path)
        if len(vectors) != len(ids):
            raise SystemExit(f"{path}: {len(vectors)} rows for {len(ids)} products")
        return vectors.astype(np.float32)
    file_ids, vectors = read_embeddings(Path(path))
    pos = {int(i): k for k, i in enumerate(file_ids)}
    missing = [int(i) for i in ids if int(i) not in pos]
    if missing:
        raise SystemExit(f"{path}: no embedding for {len(missing)} products, e.g. {missing[:5]}")
    return vectors[[pos[int(i)] for i in ids]]


def run(name: str, cfg: SemIDConfig, x: np.ndarray, paths, item_ids, pairs) -> dict:
    """Train one codebook, assign SIDs, measure it."""
    start = time.perf_counter()
    model, history = train_codebook(x, paths, cfg)
    seconds = time.perf_counter() - start
    codes = model.encode(x)
    sids = assign_sids(item_ids, codes, model.codebook_version)
    order = np.argsort(item_ids)  # sids rows are in item_id order; bring dedup back to x's row order
    dedup = np.empty(len(item_ids), np.int64)
    dedup[order] = sids.column("dedup").to_numpy()
    metrics = intrinsic_metrics(x, codes, dedup, paths, cfg.codebook_sizes,
                                reconstruction_error=model.reconstruction_error(x), pairs=pairs)
    metrics["train_seconds"] = round(seconds, 1)
    metrics["codebook_version"] = model.codebook_version
    metrics["revived_total"] = [int(sum(h.get("revived", [0] * len(codes[0]))[l] for h in history))
                                for l in range(codes.shape[1])]
    print(f"{name}: trained in {seconds:.1f}s, spearman {metrics['spearman_similarity_depth']:.4f}", flush=True)
    return metrics


def bars(results: dict) -> list[tuple[str, bool, str]]:
    """The issue's done-when bars, each (description, met, measured)."""
    km, v0, v1 = results.get("rqkmeans"), results.get("rqvae_l0"), results.get("rqvae_l001")
    out = []
    for name, m in (("lambda=0", v0), ("lambda=0.01", v1)):
        if m is None:
            continue
        out.append((f"{name}: every level uses >= 95% of its codewords", min(m["utilization"]) >= 0.95,
                    " / ".join(f"{u:.3f}" for u in m["utilization"])))
        out.append((f"{name}: every full SID unique", bool(m["full_sid_unique"]), f"max group before dedup {m['max_group']}"))
        out.append((f"{name}: spearman >= 0.84", m["spearman_similarity_depth"] >= 0.84, f"{m['spearman_similarity_depth']:.4f}"))
        if km is not None:
            out.append((f"{name}: spearman > RQ-KMeans", m["spearman_similarity_depth"] > km["spearman_similarity_depth"],
                        f"{m['spearman_similarity_depth']:.4f} vs {km['spearman_similarity_depth']:.4f}"))
        out.append((f"{name}: >= 98% of cos>=0.9 pairs share level 1", m["share_level_at_cos90"][0] >= 0.98,
                    f"{m['share_level_at_cos90'][0]:.4f}"))
        out.append((f"{name}: trains in < 5 min", m["train_seconds"] < 300, f"{m['train_seconds']:.0f}s"))
    if v0 is not None and v1 is not None:
        out.append(("lambda=0.01 taxonomy alignment l1 > lambda=0",
                    v1["taxonomy_alignment_l1"] > v0["taxonomy_alignment_l1"],
                    f"{v1['taxonomy_alignment_l1']:.4f} vs {v0['taxonomy_alignment_l1']:.4f}"))
        ratio = v1["reconstruction_error"] / v0["reconstruction_error"]
        out.append(("lambda=0.01 reconstruction error <= 1.10 x lambda=0", ratio <= 1.10, f"ratio {ratio:.3f}"))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DATA), help="folder with products/aisles/departments.csv(.gz)")
    ap.add_argument("--embeddings", help="parquet (item_id, embedding) or .npy in product_id order")
    ap.add_argument("--sizes", default=None, help="codebook sizes, e.g. 128,256,512,1024 (default: SemIDConfig)")
    ap.add_argument("--epochs", type=int, default=None, help="RQ-VAE epochs (default: SemIDConfig)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--contrastive-every", type=int, default=None,
                    help="taxonomy term on every n-th step, weighted n x lambda (default: SemIDConfig)")
    ap.add_argument("--only", default="rqkmeans,rqvae_l0,rqvae_l001", help="which of the three to run")
    ap.add_argument("--out", help="write all metrics as JSON here")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    x, item_ids, paths = load_catalog(args.data, args.embeddings)
    base = SemIDConfig(seed=args.seed, threads=args.threads, progress=False)
    if args.sizes:
        base = replace(base, codebook_sizes=[int(s) for s in args.sizes.split(",")])
    if args.epochs:
        base = replace(base, epochs=args.epochs)
    if args.contrastive_every:
        base = replace(base, contrastive_every=args.contrastive_every)
    print(f"{len(x)} products, embeddings {x.shape[1]}-d, codebook sizes {base.codebook_sizes}, "
          f"{args.threads} torch threads", flush=True)
    pairs = sample_pairs(x, seed=0)
    configs = {
        "rqkmeans": replace(base, method="rqkmeans"),
        "rqvae_l0": replace(base, contrastive_lambda=0.0),
        "rqvae_l001": replace(base, contrastive_lambda=0.01),
    }
    results = {name: run(name, cfg, x, paths, item_ids, pairs)
               for name, cfg in configs.items() if name in args.only.split(",")}
    print()
    print(compare_intrinsic(results))
    extra = [("train seconds", "train_seconds"), ("dead codes revived", "revived_total"), ("codebook version", "codebook_version")]
    for label, key in extra:
        print(f"{label:<27}" + "  ".join(str(results[n][key]) for n in results))
    print()
    for text, ok, measured in bars(results):
        print(f"[{'PASS' if ok else 'FAIL'}] {text}: {measured}")
    if args.out:
        Path(args.out).write_text(json.dumps({"config": base.__dict__, "results": results}, indent=2, default=str))


if __name__ == "__main__":
    main()
