"""Decoder variants and baselines over several seeds at once, one process per (variant or baseline, seed),
for a machine with many cores or a GPU: the sweep behind the ablation table and the three-seed row.

Each seed's training copy and Semantic IDs must exist already (``benchmarks/quality.py`` makes them
under ``WORKDIR/NAME-seedN/{data,run}``); a variant is the run config with dotted overrides
(``item_mem:decoder.arch=item,decoder.id_embeddings=true``) and trains its own decoder on that seed's SIDs.
Every job writes its own JSON as soon as it ends (a killed sweep keeps what finished), then one file per
(variant, seed) holds the variant as ``genrec`` beside every baseline of that seed, so
``quality.py --merge OUT/VARIANT-seed*.json`` prints the table of a variant.

    .venv/bin/python benchmarks/sweep.py --data data/beauty --config configs/amazon-beauty.yaml \\
        --workdir runs/quality --seeds 0 1 2 --baselines sasrec_ce,itemknn --device cuda --out runs/sweep \\
        --variant 'item:decoder.arch=item' --variant 'item_mem:decoder.arch=item,decoder.id_embeddings=true'
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import data_split, seeded  # noqa: E402

from genrec.cli import configure_logging  # noqa: E402
from genrec.evaluation.harness import GENREC, evaluate, evaluate_baseline  # noqa: E402
from genrec.evaluation.protocol import EvalConfig  # noqa: E402
from genrec.run.build import train_run  # noqa: E402
from genrec.run.config import RunConfig, load_run_config  # noqa: E402
from genrec.run.layout import DECODER_DIR  # noqa: E402
from semid.config import from_dict, to_dict  # noqa: E402


def apply_overrides(cfg: RunConfig, overrides: str) -> RunConfig:
    """``section.key=value,...`` (values parsed as YAML) applied to the config, checked like a config file."""
    tree = to_dict(cfg)
    for item in filter(None, overrides.split(",")):
        path, _, value = item.partition("=")
        *parents, leaf = path.strip().split(".")
        node, section = tree, cfg
        for p in parents:
            node, section = node[p], getattr(section, p, None)
        leaf = getattr(type(section), "OLD_KEYS", {}).get(leaf, leaf)  # old spellings (recorded sweeps) still work
        if leaf not in node:
            raise SystemExit(f"override {path!r}: no such setting")
        node[leaf] = yaml.safe_load(value)
    return from_dict(RunConfig, tree)


def variant_job(data: str, config: str, name: str, overrides: str, seed: int, workdir: str, out: str,
                ecfg: EvalConfig) -> str:
    """Train variant ``name`` on seed ``seed``'s SIDs and score it; writes OUT/_genrec-NAME-seedN.json."""
    configure_logging()
    base = seeded(load_run_config(config), seed)
    cfg = apply_overrides(base, overrides)
    seed_root = Path(workdir) / f"{base.name}-seed{seed}"
    run = Path(out) / "runs" / f"{name}-seed{seed}"
    run.mkdir(parents=True, exist_ok=True)
    for f in (seed_root / "run").iterdir():  # the seed's SIDs, shared; the decoder is the variant's own
        if f.name != DECODER_DIR and not (run / f.name).exists():
            (shutil.copytree if f.is_dir() else shutil.copy2)(f, run / f.name)
    start = time.perf_counter()
    result = train_run(seed_root / "data", cfg, run)
    train_s = time.perf_counter() - start
    scored = evaluate(Path(data), run, [], seed=seed, config=ecfg)
    scored["timings"][GENREC]["train_s"] = round(train_s, 1)
    try:
        scored["beam_vs_exact"] = beam_vs_exact(Path(data), run, seed, ecfg)
    except Exception as e:  # noqa: BLE001 - the comparison is extra; the row stands without it
        scored["beam_vs_exact"] = {"error": repr(e)}
    scored["validation"] = {"best": result.best, "best_step": result.best_step, "history": result.history,
                            "epochs": result.epochs_completed}
    scored["config"] = {"name": base.name, "seed": seed, "variant": name, "overrides": overrides,
                        "decoder": to_dict(cfg.decoder), "train": to_dict(cfg.train)}
    path = Path(out) / f"_genrec-{name}-seed{seed}.json"
    path.write_text(json.dumps(scored, indent=1))
    return str(path)


def beam_vs_exact(data: Path, run: Path, seed: int, ecfg: EvalConfig, n: int = 2000, k: int = 10) -> dict:
    """The item decoder's own top ``k`` on ``n`` test examples (no cold-start slots, history not skipped) by
    the beam search it serves with and by exact scoring of every catalog SID: what the beam loses."""
    import numpy as np
    import torch

    from genrec.evaluation.protocol import build_eval_data
    from genrec.model.item_decoder import exact_top
    from genrec.retriever import Retriever
    from genrec.data.sequences import SequenceConfig
    from genrec.model.tokens import collate
    from semid.tokenizer import PAD

    retriever = Retriever.from_run(run, beam_width=ecfg.beam_width, device=ecfg.device, cold_share=0.0)
    if not getattr(retriever.model, "is_item_decoder", False):
        return {}
    test = build_eval_data(data, SequenceConfig(split="leave_one_out"), ecfg, seed).test
    pick = np.random.default_rng(seed).permutation(len(test))[:n]
    histories = [test.history(i) for i in pick]
    targets = np.array([test.targets(i)[0] for i in pick])
    beam = retriever.retrieve_arrays(histories, k=k).item_ids
    parts = retriever.known_parts([np.asarray(h) for h in histories])
    rows = torch.as_tensor(retriever.item_tokens.tokens, device=ecfg.device)
    exact = np.zeros((len(pick), k), np.int64)
    lookup = {tuple(r): i for r, i in zip(retriever.item_tokens.tokens.tolist(), retriever.item_tokens.item_ids)}
    for c in range(0, len(pick), 256):
        batch = collate(retriever._queries(parts[c:c + 256], [None] * len(parts[c:c + 256])),
                        np.arange(len(parts[c:c + 256])), PAD, padding_side="left")
        top, _ = exact_top(retriever.model, batch["input_ids"].to(ecfg.device),
                           batch["attention_mask"].to(ecfg.device), rows, k)
        exact[c:c + 256] = [[lookup[tuple(r)] for r in q] for q in top.cpu().tolist()]

    def metrics(lists: np.ndarray) -> dict:
        hit = lists == targets[:, None]
        rank = np.where(hit.any(1), hit.argmax(1), -1)
        return {f"recall@{k}": float(hit.any(1).mean()),
                f"ndcg@{k}": float(np.where(rank >= 0, 1 / np.log2(np.abs(rank) + 2), 0).mean())}

    return {"examples": len(pick), "beam_width": ecfg.beam_width, "beam": metrics(beam), "exact": metrics(exact)}


def baseline_job(data: str, config: str, name: str, seed: int, workdir: str, out: str, ecfg: EvalConfig) -> str:
    """Fit and score baseline ``name`` for seed ``seed``; writes OUT/_NAME-seedN.json."""
    configure_logging()
    base = seeded(load_run_config(config), seed)
    run = Path(workdir) / f"{base.name}-seed{seed}" / "run"
    scored = evaluate_baseline(Path(data), run, name, seed, ecfg)
    path = Path(out) / f"_{name}-seed{seed}.json"
    path.write_text(json.dumps(scored, indent=1))
    return str(path)


def combine(out: Path, variants: list[str], baselines: list[str], seeds: list[int]) -> list[Path]:
    """One quality.py-style JSON per (variant, seed): the variant as ``genrec`` plus the seed's baselines."""
    written = []
    for v in variants:
        for s in seeds:
            own = out / f"_genrec-{v}-seed{s}.json"
            if not own.is_file():
                continue
            result = json.loads(own.read_text())
            for b in baselines:
                part = out / f"_{b}-seed{s}.json"
                if part.is_file():
                    other = json.loads(part.read_text())
                    for key in ("models", "choices", "timings"):
                        result[key][b] = other[key][b]
                    for slice_name, rows in other["slices"].items():
                        if b in rows:
                            result["slices"].setdefault(slice_name, {})[b] = rows[b]
            path = out / f"{v}-seed{s}.json"
            path.write_text(json.dumps(result, indent=1))
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="the full dataset folder (the harness holds out from it)")
    ap.add_argument("--config", default="configs/amazon-beauty.yaml")
    ap.add_argument("--workdir", default="runs/quality", help="where each seed's training copy and SIDs are")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--variant", action="append", default=[], help="NAME:section.key=value,... (repeatable)")
    ap.add_argument("--baselines", default="", help="comma-separated baselines fitted once per seed")
    ap.add_argument("--device", default="cpu", help="torch device of decoding and the neural baselines")
    ap.add_argument("--processes", type=int, default=4, help="jobs at once")
    ap.add_argument("--max-test", type=int, default=None, help="score a seeded sample of test examples")
    ap.add_argument("--out", default="runs/sweep")
    args = ap.parse_args(argv)
    configure_logging()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_run_config(args.config)
    data_split(Path(args.data), cfg)  # fails early on a bad dataset
    ecfg = EvalConfig(cold_start_fraction=0.05, max_test=args.max_test, device=args.device,
                      cold_share=cfg.cold_start.share)
    variants = dict(v.split(":", 1) if ":" in v else (v, "") for v in args.variant)
    baselines = [b for b in args.baselines.split(",") if b]
    jobs = {}
    with ProcessPoolExecutor(args.processes, mp_context=get_context("spawn")) as pool:
        for s in args.seeds:
            for b in baselines:
                jobs[pool.submit(baseline_job, args.data, args.config, b, s, args.workdir, str(out), ecfg)] = f"{b}/{s}"
            for name, overrides in variants.items():
                jobs[pool.submit(variant_job, args.data, args.config, name, overrides, s, args.workdir, str(out),
                                 ecfg)] = f"{name}/{s}"
        for fut in as_completed(jobs):
            try:
                print(f"done {jobs[fut]}: {fut.result()}", flush=True)
            except Exception:  # noqa: BLE001 - one failed job costs its own row only
                print(f"FAILED {jobs[fut]}:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
    for path in combine(out, list(variants), baselines, args.seeds):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
