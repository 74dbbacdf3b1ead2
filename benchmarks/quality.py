"""The results table: our generative model and every baseline on one dataset, the same split, the same
metrics, trained and scored in one run per seed; seeds merge into mean +- standard deviation.

One seed (``--seed N``) cuts what the harness holds out for that seed (TIGER's cold-start protocol: a 5%
share of the test items loses every earlier interaction), writes that training copy of the dataset,
trains the run on it (Semantic IDs + decoder, seeded), then evaluates the run and the baselines with
``genrec.evaluation.harness`` and writes the JSON. With ``--jobs N`` (default 2) the trained baselines (SASRec,
two-tower) are fitted by N - 1 worker processes, one torch thread each, while the decoder trains: on a
2-core machine the seed then takes about as long as its longer side, not the sum. ``--merge`` reads
several seeds' JSON files and prints the table of means and standard deviations, each baseline's ratio
to ours, and, for Amazon Beauty, the published TIGER row (Rajput et al. 2023, Table 1), marked as
quoted. ``--rescore`` scores a finished seed's run again after a change to retrieval (cold-start mixing,
say) and replaces only its rows. ``--quick`` does all of it on a tiny synthetic world in about a minute, for tests.

    .venv/bin/python benchmarks/quality.py --data data/beauty --config configs/amazon-beauty.yaml --seed 0
    .venv/bin/python benchmarks/quality.py --data data/beauty --config configs/amazon-beauty.yaml --seed 0 --rescore
    .venv/bin/python benchmarks/quality.py --merge runs/quality/amazon-beauty-seed*.json
    .venv/bin/python benchmarks/quality.py --quick --seed 0 --workdir /tmp/q
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from genrec.cli import configure_logging
from genrec.data.dataset import Dataset, read_dataset
from genrec.data.sequences import SequenceConfig, build_histories, resolve_split
from genrec.evaluation.harness import GENREC, GENREC_WEIGHTED, evaluate, evaluate_baseline, format_table
from genrec.evaluation.protocol import EvalConfig, training_dataset
from genrec.rank.train import train_ranker
from genrec.run.build import build_item_head, build_serving_parts, train_run
from genrec.run.config import RunConfig, load_run_config
from genrec.run.layout import RANKER_META_FILE, SIDS_FILE
from genrec.run.semids import build_semids

# Rajput et al. 2023 (TIGER), Table 1, Amazon Beauty: quoted, not measured here
TIGER_BEAUTY = {"recall@5": 0.0454, "ndcg@5": 0.0321, "recall@10": 0.0648, "ndcg@10": 0.0384}
BASELINES_BY_SPLIT = {
    "leave_one_out": "popular,itemknn,semantic_knn,sasrec_ce,sasrec_bce,two_tower",
    "last_basket": "popular,own_popular,tifuknn,itemknn,semantic_knn,sasrec_ce,two_tower",
}
QUICK_BASELINES = "popular,itemknn,semantic_knn"
# baselines that train a network (minutes to tens of minutes each): these go to worker processes
TRAINED_BASELINES = ("sasrec_ce", "sasrec_bce", "two_tower")
LAUNCH_DATING = 3  # version of training_dataset's catalog dating: a training copy made under another is redone


def seeded(cfg: RunConfig, seed: int) -> RunConfig:
    """The run config with every seed of training (codebook, decoder) set to ``seed``."""
    return dataclasses.replace(cfg, semid=dataclasses.replace(cfg.semid, seed=seed),
                               train=dataclasses.replace(cfg.train, seed=seed))


def training_copy(data: Path, out: Path, seq_cfg: SequenceConfig, seed: int, ecfg: EvalConfig) -> Path:
    """Write ``data`` minus what the harness holds out for ``seed``, its cold-start items dated as launched
    after the log (``training_dataset``), to ``out`` (once; a copy from before the dating gets it): the run
    trains on it."""
    if (out / "events.parquet").is_file() and read_dataset(out).meta.get("launch_dating") == LAUNCH_DATING:
        return out
    ds = training_dataset(read_dataset(data), seq_cfg, seed, ecfg.within_basket_share, ecfg.cold_start_fraction)
    ds.meta["launch_dating"] = LAUNCH_DATING
    ds.write(out, overwrite=True)
    return out


def data_split(data: Path, cfg: RunConfig) -> str:
    """The split the config's sequence settings give on ``data`` (leave_one_out or last_basket)."""
    return resolve_split(build_histories(read_dataset(data).events), cfg.sequence.split)


def run_seed(data: Path, cfg: RunConfig, split: str, seed: int, workdir: Path, baselines: list[str],
             ecfg: EvalConfig, jobs: int = 1) -> dict:
    """Train our run for ``seed`` on the harness's training copy, then evaluate it beside ``baselines``;
    with ``jobs`` > 1 the trained baselines are fitted in worker processes while the decoder trains."""
    cfg = seeded(cfg, seed)
    root = workdir / f"{cfg.name}-seed{seed}"
    run = root / "run"
    seq_cfg = dataclasses.replace(cfg.sequence, split=split)
    train_data = training_copy(data, root / "data", seq_cfg, seed, ecfg)
    say = lambda msg: print(f"  {msg}", file=sys.stderr, flush=True)  # noqa: E731
    start = time.perf_counter()
    if not (run / SIDS_FILE).is_file():
        build_semids(train_data, cfg, run)  # first: its embeddings are what the content baselines read
    parallel = [b for b in baselines if b in TRAINED_BASELINES] if jobs > 1 else []
    with ProcessPoolExecutor(max_workers=max(1, jobs - 1), mp_context=get_context("spawn"),
                             initializer=configure_logging) as pool:
        futures = {name: pool.submit(evaluate_baseline, data, run, name, seed, ecfg) for name in parallel}
        try:
            train_run(train_data, cfg, run)
            train_ranker(run, cfg, train_data)
            train_s = time.perf_counter() - start
            result = evaluate(data, run, [b for b in baselines if b not in parallel], seed=seed, config=ecfg,
                              progress=say)
            if futures:
                say(f"waiting for {', '.join(futures)} (worker processes)")
            result = _absorb(result, futures, [GENREC, GENREC_WEIGHTED] + baselines)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    result["timings"][GENREC]["train_s"] = round(train_s, 1)
    result["timings"][GENREC].update(_ranker_timing(run))
    result["config"] = {"name": cfg.name, "seed": seed, "data": str(data), "run": str(run), "jobs": jobs}
    return result


def _absorb(result: dict, futures: dict[str, Future], order: list[str]) -> dict:
    """Fold the workers' results into the main one, models in ``order`` (ours first, then the baselines
    as listed). A worker that failed (or was killed) costs its own row only: it is named under
    ``failed`` with its error, and everything else is kept."""
    for name, future in futures.items():
        try:
            part = future.result()
        except Exception as e:  # noqa: BLE001 - any worker failure: keep the rest of the seed
            print(f"  {name} failed in its worker: {e!r}", file=sys.stderr, flush=True)
            result.setdefault("failed", {})[name] = repr(e)
            continue
        _take_rows(result, part, name)
    return _reorder(result, order)


def _reorder(result: dict, order: list[str]) -> dict:
    """``result`` with the models of ``order`` first, in that order, in its table and every slice."""
    rank = {name: i for i, name in enumerate(order)}

    def ordered(rows: dict) -> dict:
        return dict(sorted(rows.items(), key=lambda kv: rank.get(kv[0], len(rank))))

    result["models"] = ordered(result["models"])
    result["slices"] = {name: ordered(per_model) for name, per_model in result["slices"].items()}
    return result


def _take_rows(result: dict, part: dict, name: str) -> None:
    """Put model ``name``'s rows of ``part`` (metrics, choices, timings, slices) into ``result``."""
    for key in ("models", "choices", "timings"):
        result[key][name] = part[key][name]
    for slice_name, per_model in part["slices"].items():
        if name in per_model:
            result["slices"].setdefault(slice_name, {})[name] = per_model[name]


def rescore(data: Path, cfg: RunConfig, split: str, seed: int, workdir: Path, ecfg: EvalConfig, out: Path,
            models: list[str] = (GENREC,)) -> dict:
    """Score ``models`` of a finished seed again and put their rows in place of the old ones (or of a
    failed worker's missing row) in the seed's JSON ``out``; every other row is kept as it was. Ours
    (``genrec``) after a change to retrieval, not to the decoder (the run's index, memory and item head are
    rebuilt first, the head only when missing or out of date); a baseline to fill a row its worker lost."""
    root = workdir / f"{cfg.name}-seed{seed}"
    run = root / "run"
    if not out.is_file() or not (run / "decoder").is_dir():
        raise SystemExit(f"--rescore: needs a finished seed: {out} and a trained decoder in {run}")
    old = json.loads(out.read_text())
    if GENREC in models:
        seq_cfg = dataclasses.replace(cfg.sequence, split=split)
        ds, _, item_tokens = build_serving_parts(training_copy(data, root / "data", seq_cfg, seed, ecfg), cfg, run)
        build_item_head(run, ds, cfg, item_tokens)  # on the trained decoder, when the config weighs one
        train_ranker(run, cfg, training_copy(data, root / "data", seq_cfg, seed, ecfg))  # when out of date
    new = evaluate(data, run, [m for m in models if m != GENREC], seed=seed, config=ecfg,
                   progress=lambda msg: print(f"  {msg}", file=sys.stderr, flush=True), score_run=GENREC in models)
    train_s = old["timings"][GENREC].get("train_s")
    ours = [GENREC_WEIGHTED] if GENREC in models and GENREC_WEIGHTED in new["models"] else []
    for name in list(models) + ours:
        _take_rows(old, new, name)
        old.get("failed", {}).pop(name, None)
    if not old.get("failed", True):
        del old["failed"]
    old["timings"][GENREC]["train_s"] = train_s
    old["timings"][GENREC].update(_ranker_timing(run))
    old["config"]["rescored"] = time.strftime("%Y-%m-%d %H:%M:%S")
    return _reorder(old, [GENREC, GENREC_WEIGHTED] + BASELINES_BY_SPLIT[split].split(","))


def _ranker_timing(run: Path) -> dict:
    """The learned ranker's training time (examples and fit) as its ``ranker.json`` recorded it; {} without one."""
    path = run / RANKER_META_FILE
    return {"ranker_train_s": json.loads(path.read_text())["train_s"]} if path.is_file() else {}


def merge(results: list[dict]) -> dict:
    """Mean and standard deviation (over seeds) of every metric of every model, headline and slices. A model
    missing from some seeds (a row not filled yet) is averaged over the seeds that have it; ``n`` says how
    many."""
    def combine(tables: list[dict]) -> dict:
        out = {}
        for model in _union(tables):
            rows = [t[model] for t in tables if model in t]
            metrics = [m for m in rows[0] if all(isinstance(r.get(m), (int, float)) for r in rows)]
            out[model] = {m: {"mean": float(np.mean([r[m] for r in rows])), "std": float(np.std([r[m] for r in rows])),
                              "n": len(rows)} for m in metrics}
        return out

    slices = sorted({s for r in results for s in r.get("slices", {})})
    timings = [{m: t for m, t in r["timings"].items() if isinstance(t, dict)} for r in results]
    return {
        "seeds": [r.get("config", {}).get("seed") for r in results],
        "models": combine([r["models"] for r in results]),
        "slices": {s: combine([r["slices"][s] for r in results if s in r.get("slices", {})]) for s in slices},
        "protocol": results[0].get("protocol", {}),
        "timings": {model: {k: float(np.mean(v)) for k, v in _per_key([t[model] for t in timings if model in t]).items()}
                    for model in _union(timings)},
    }


def _union(tables: list[dict]) -> list[str]:
    """The keys of several dicts, each once, in order of first appearance."""
    return list(dict.fromkeys(key for table in tables for key in table))


def _per_key(rows: list[dict]) -> dict[str, list[float]]:
    """The numeric values of each key over the dicts that have it."""
    out: dict[str, list[float]] = {}
    for row in rows:
        for key, value in row.items():
            if isinstance(value, (int, float)):
                out.setdefault(key, []).append(value)
    return out


def format_merged(merged: dict, dataset: str | None) -> str:
    """The merged table: mean +- std per model, then our model's ratio to each row (> 1: we are ahead). Where
    the harness scored items new to the shopper (basket data), a second block shows those. A model with
    fewer seeds than the rest says how many it has."""
    ks = merged["protocol"].get("k_values") or [10]
    cols = [f"{m}@{k}" for m in ("recall", "ndcg") for k in ks]
    seeds = len(merged["seeds"])
    lines = [f"seeds: {merged['seeds']}"]
    lines += _rows("models", merged["models"], cols, seeds, dataset == "amazon-beauty")
    new = [f"new_{c}" for c in cols]
    if any(c in metrics for metrics in merged["models"].values() for c in new):
        lines += [""] + _rows("new to the shopper", merged["models"], new, seeds, False)
    for name, table in merged["slices"].items():
        lines += [""] + _rows(f"slice: {name}", table, cols, seeds, False)
    return "\n".join(lines)


def _rows(title: str, table: dict, cols: list[str], seeds: int, quote_tiger: bool) -> list[str]:
    """One block: a model per row, mean +- std per metric, and ours / theirs on the block's last metric."""
    head = cols[-1]
    ours = table.get(GENREC, {}).get(head, {}).get("mean")
    lines = [f"{title:<22}" + "".join(f"{c:>20}" for c in cols) + f"{'ours/this ' + head:>26}"]
    for model, metrics in table.items():
        cells = "".join(f"{_cell(metrics.get(c), seeds):>20}" for c in cols)
        theirs = metrics.get(head, {}).get("mean")
        lines.append(f"{model:<22}{cells}{_ratio(ours, theirs):>26}")
    if quote_tiger:
        cells = "".join(f"{TIGER_BEAUTY.get(c, float('nan')):>20.4f}" for c in cols)
        lines.append(f"{'TIGER (quoted)':<22}{cells}{_ratio(ours, TIGER_BEAUTY.get(head)):>26}")
    return lines


def _cell(value: dict | None, seeds: int) -> str:
    """``mean +- std`` of one metric, ``mean (n=N)`` where only N of the ``seeds`` have it, or a dash."""
    if not value:
        return "-"
    if value["n"] < seeds:
        return f"{value['mean']:.4f} (n={value['n']})"
    return f"{value['mean']:.4f} +- {value['std']:.4f}"


def _ratio(ours: float | None, theirs: float | None) -> str:
    """ours / theirs, or a dash where either is missing or theirs is 0."""
    return "-" if ours is None or not theirs else f"{ours / theirs:.2f}x"


def quick_world(workdir: Path) -> tuple[Path, RunConfig]:
    """A tiny synthetic world and a config small enough to train in seconds (``--quick``)."""
    from genrec.run.tiny import tiny_config, tiny_world

    data = workdir / "quick-data"
    if not (data / "events.parquet").is_file():
        tiny_world(seed=0, items=300, users=200, retailers=2).write(data, overwrite=True)
    cfg = tiny_config("quick")
    cfg.semid.threads, cfg.train.threads = 1, 1
    return data, cfg


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", help="dataset folder (genrec data import ...)")
    ap.add_argument("--config", default="configs/amazon-beauty.yaml", help="run config YAML")
    ap.add_argument("--seed", type=int, default=0, help="seed of this invocation (split hold-outs and training)")
    ap.add_argument("--baselines", default=None, help="comma-separated (default: all that fit the split)")
    ap.add_argument("--workdir", default="runs/quality", help="training copies and runs go here")
    ap.add_argument("--out", default=None, help="this seed's JSON (default WORKDIR/NAME-seedN.json)")
    ap.add_argument("--cold-start", type=float, default=0.05, help="TIGER cold-start share of test items (0: off)")
    ap.add_argument("--max-test", type=int, default=None, help="score a seeded sample of test examples")
    ap.add_argument("--merge", nargs="+", default=None, help="merge these seeds' JSON files and print the table")
    ap.add_argument("--quick", action="store_true", help="a tiny synthetic world, for tests")
    ap.add_argument("--train-budget", type=float, default=None,
                    help="seconds each trained baseline may train (its best validation checkpoint is kept)")
    ap.add_argument("--rescore", action="store_true",
                    help="score this seed's run again (or, with --baselines, those models: genrec names ours) and "
                         "replace only their rows in the seed's JSON")
    ap.add_argument("--jobs", type=int, default=2,
                    help="processes: the trained baselines fit in jobs - 1 workers while the decoder trains (1: in turn)")
    args = ap.parse_args(argv)
    configure_logging()
    if args.merge:
        results = [json.loads(Path(p).read_text()) for p in args.merge]
        merged = merge(results)
        print(format_merged(merged, results[0].get("config", {}).get("name")))
        return 0
    workdir = Path(args.workdir)
    if args.quick:
        data, cfg = quick_world(workdir)
        split = data_split(data, cfg)
        baselines = args.baselines or QUICK_BASELINES
    else:
        if not args.data:
            ap.error("--data is required (or --quick / --merge)")
        data, cfg = Path(args.data), load_run_config(args.config)
        split = data_split(data, cfg)
        baselines = args.baselines or BASELINES_BY_SPLIT[split]
    if args.jobs < 1:
        ap.error(f"--jobs must be >= 1, got {args.jobs}")
    budget = {} if args.train_budget is None else {b: {"time_budget_s": args.train_budget} for b in TRAINED_BASELINES}
    ecfg = EvalConfig(cold_start_fraction=args.cold_start or None, max_test=args.max_test, baseline_options=budget,
                      cold_share=cfg.cold_start.share)  # the config's, also for runs built before it had one
    out = Path(args.out) if args.out else workdir / f"{cfg.name}-seed{args.seed}.json"
    if args.rescore:
        models = args.baselines.split(",") if args.baselines else [GENREC]
        result = rescore(data, seeded(cfg, args.seed), split, args.seed, workdir, ecfg, out, models)
        out.write_text(json.dumps(result, indent=2))
        print(format_table(result))
        return 0
    start = time.perf_counter()
    result = run_seed(data, cfg, split, args.seed, workdir, baselines.split(","), ecfg, args.jobs)
    result["timings"]["seed_total_s"] = round(time.perf_counter() - start, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(format_table(result))
    print(f"\nseed {args.seed}: {result['timings']['seed_total_s']:.0f}s in all; wrote {out}")
    if result.get("failed"):
        print(f"failed (no row): {', '.join(result['failed'])}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
