"""``genrec demo``: from nothing to a trained system on the synthetic grocery world, stage by stage.
Each stage writes into the work folder and is skipped when its output is already there, so an
interrupted demo picks up where it stopped."""
from __future__ import annotations

import logging
import textwrap
import time
from pathlib import Path

from genrec.data.dataset import read_dataset
from genrec.data.stats import dataset_stats, format_stats
from genrec.data.synth import SynthConfig, synthesize
from genrec.evaluation.harness import evaluate, format_table
from genrec.evaluation.protocol import EvalConfig
from genrec.report import write_report
from genrec.retriever import Retriever
from genrec.rank.train import train_ranker
from genrec.run.build import train_run
from genrec.run.config import RunConfig, load_run_config
from genrec.run.layout import EVAL_FILE, SEMID_EVAL_FILE, SIDS_FILE
from genrec.run.semids import audit_run, build_semids, evaluate_semids
from semid.common import write_json
from semid.intrinsic import format_intrinsic
from semid.text_table import WIDTH

log = logging.getLogger(__name__)

DEMO_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"


def _say(text: str, indent: int) -> None:
    """Print ``text`` wrapped to ``WIDTH`` (100) columns, continuation lines indented by ``indent`` spaces."""
    print(textwrap.fill(text, WIDTH, subsequent_indent=" " * indent, break_on_hyphens=False))


def _stage(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.perf_counter()


def _done(start: float) -> None:
    print(f"   ({time.perf_counter() - start:.1f}s)", flush=True)


def run_demo(workdir: Path, config: Path | None = None, seed: int = 0) -> dict:
    """Run every stage of the pipeline that exists on the synthetic world; returns the metrics."""
    cfg = load_run_config(config) if config else (load_run_config(DEMO_CONFIG) if DEMO_CONFIG.is_file() else RunConfig())
    data, run = workdir / "data", workdir / "run"

    t = _stage(f"1. synthetic grocery world -> {data}")
    if not (data / "events.parquet").is_file():
        synthesize(SynthConfig(seed=seed)).write(data, overwrite=True)
    print(format_stats(dataset_stats(data)))
    _done(t)

    t = _stage(f"2. text embeddings + RQ-VAE Semantic IDs -> {run}")
    if not (run / SIDS_FILE).is_file():
        build_semids(data, cfg, run)
    metrics = evaluate_semids(run, seed=seed)
    write_json(metrics, run / SEMID_EVAL_FILE)
    print(format_intrinsic(metrics))
    _done(t)

    t = _stage("3. catalog audit: products whose SID neighbourhood disagrees with their category")
    audit = audit_run(run, top=8)
    for row in audit.to_pylist():  # the product, then its category -> its neighbourhood's
        _say(f"   {row['confidence']:.2f}  {row['title']}", 9)
        _say(f"         [{row['label']}] -> {row['majority_label']}", 10)
    _done(t)

    t = _stage("4. transformer decoder on shopper sessions (resumes from its checkpoint), then the ranker")
    train_run(data, cfg, run)
    train_ranker(run, cfg, data)
    _done(t)

    t = _stage("5. offline evaluation against baselines (held-out last basket per shopper)")
    result = evaluate(data, run, ["popular", "own_popular", "itemknn"], seed=seed, config=EvalConfig(max_test=500))
    write_json(result, run / EVAL_FILE)
    print(format_table(result))
    _done(t)

    t = _stage("6. example carousels")
    show_carousels(data, run)
    _done(t)

    t = _stage("7. HTML report of the run")
    report = write_report(run, workdir / "report")
    print(f"   report: {report.resolve()} (open it in a browser; no server needed)")
    _done(t)
    return {"semid": metrics, "eval": result}


def show_carousels(data: Path, run: Path, shoppers: int = 3, k: int = 6) -> None:
    """A few shoppers' recent items and the products the model would put in their carousel."""
    ds = read_dataset(data)
    titles = dict(zip(ds.items.column("item_id").to_pylist(), ds.items.column("title").to_pylist()))
    events = ds.events.to_pydict()
    retriever = Retriever.from_run(run)
    for user in sorted(set(events["user_id"]))[:shoppers]:
        rows = [i for i, u in enumerate(events["user_id"]) if u == user]
        history = [events["item_id"][i] for i in rows]
        retailer = events["retailer_id"][rows[-1]]
        ranked = retriever.retrieve([history], retailer_id=retailer, k=k)[0]
        recent = "; ".join(titles[i] for i in history[-4:])
        _say(f"   shopper {user} (retailer {retailer}) recently bought: {recent}", 6)
        for c in ranked:
            _say(f"      {c.source:<11} {c.sid:>14}  {titles[c.item_id]}", 34)
