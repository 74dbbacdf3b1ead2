"""``genrec train``, ``genrec eval``, ``genrec report`` and ``genrec demo``: make a run, measure it, show it."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from semid.common import DataError

# the evaluation settings ``genrec eval`` takes as flags (cold_start_fraction as --cold-start, beam_width as --beam)
EVAL_FLAGS = ("max_test", "cold_start_fraction", "cold_share", "beam_width")


def _cmd_train(args: argparse.Namespace) -> None:
    from genrec.run.config import load_run_config

    cfg = load_run_config(args.config)  # a bad config fails here, before the model stack loads
    from genrec.run.semids import ensure_semids

    ensure_semids(Path(args.data), cfg, Path(args.out))  # before the decoder and ranker modules load
    from genrec.rank.train import train_ranker
    from genrec.run.build import train_run

    result = train_run(Path(args.data), cfg, Path(args.out), resume=not args.restart)
    ranker = train_ranker(Path(args.out), cfg, Path(args.data))
    print(f"wrote {args.out}: decoder trained, best validation {result.best}"
          + ("; learned ranker trained" if ranker else ""))


def _cmd_eval(args: argparse.Namespace) -> None:
    from genrec.evaluation.protocol import EvalConfig
    from semid.config import from_flags

    run = Path(args.run) if args.run else None
    if run is None and args.data is None:
        raise DataError("give --run RUN (its dataset is recorded) or --data DIR for baselines only")
    cfg = from_flags(EvalConfig, args, EVAL_FLAGS)  # bad flags fail here, before the model stack loads
    ks = [int(k) for k in args.k.split(",")] if args.k else None
    from genrec.evaluation.harness import evaluate, format_table
    from genrec.run.semids import run_dataset
    from semid.common import write_json

    data = run_dataset(run, Path(args.data) if args.data else None) if run else Path(args.data)
    result = evaluate(data, run, [b for b in args.baselines.split(",") if b], ks, seed=args.seed, config=cfg,
                      progress=lambda msg: print(f"  {msg}", file=sys.stderr, flush=True))
    print(format_table(result))
    if args.out:
        write_json(result, Path(args.out))


def _cmd_report(args: argparse.Namespace) -> None:
    from genrec.report import write_report

    path = write_report(Path(args.run), Path(args.out), seed=args.seed)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): open it in a browser, no server needed")


def _cmd_demo(args: argparse.Namespace) -> None:
    if args.config:  # a bad config fails here, before the model stack loads
        from genrec.run.config import load_run_config

        load_run_config(args.config)
    from genrec.run.demo import run_demo

    run_demo(Path(args.workdir), config=Path(args.config) if args.config else None, seed=args.seed)
    print(f"\ndemo finished; everything it built is in {args.workdir}")


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's subcommands to the ``genrec`` parser."""
    tn = sub.add_parser("train", help="build SIDs (if the run has none), the index, and train the decoder")
    tn.add_argument("--data", required=True, help="dataset folder")
    tn.add_argument("--config", required=True, help="run config YAML (configs/*.yaml)")
    tn.add_argument("--out", required=True, help="run folder (resumes from its last checkpoint)")
    tn.add_argument("--restart", action="store_true", help="ignore an existing checkpoint")
    tn.set_defaults(func=_cmd_train)

    ev = sub.add_parser("eval", help="offline evaluation of a run against baselines, printed as a table")
    ev.add_argument("--run", default=None, help="run folder (its dataset is recorded in it)")
    ev.add_argument("--data", default=None, help="dataset folder (default: the run's)")
    ev.add_argument("--baselines", default="popular,itemknn,semantic_knn",
                    help="comma-separated: popular, own_popular, itemknn, semantic_knn, sasrec_ce, sasrec_bce, two_tower")
    ev.add_argument("--k", default=None, help="comma-separated K values (default: 5,10 or 10,20,50)")
    ev.add_argument("--seed", type=int, default=0)
    from genrec.evaluation.protocol import EvalConfig
    from semid.config import add_flags

    add_flags(ev, EvalConfig, EVAL_FLAGS, names={"cold_start_fraction": "--cold-start", "beam_width": "--beam"})
    ev.add_argument("--out", default=None, help="metrics JSON to write")
    ev.set_defaults(func=_cmd_eval)

    rp = sub.add_parser("report", help="a self-contained HTML report of a run (opens from disk)")
    rp.add_argument("--run", required=True, help="run folder")
    rp.add_argument("--out", required=True, help="folder to write index.html into")
    rp.add_argument("--seed", type=int, default=0, help="seed of the pair sample (as genrec semid eval)")
    rp.set_defaults(func=_cmd_report)

    de = sub.add_parser("demo", help="the whole pipeline on the synthetic grocery world")
    de.add_argument("--workdir", default="work/demo", help="folder for the demo's data and run")
    de.add_argument("--config", default=None, help="run config (default: configs/demo.yaml)")
    de.add_argument("--seed", type=int, default=0)
    de.set_defaults(func=_cmd_demo)
