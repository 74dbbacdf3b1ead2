"""``genrec carousel``, ``genrec serve`` and ``genrec review``: what a trained run is used through."""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from semid.common import DataError

# the carousel settings given as flags of the same name (--no-progress turns progress off; exclude_history is
# --keep-history, the other way round)
CAROUSEL_FLAGS = ("k", "chunk_size", "batch_size", "beam_width", "on_missing", "threads", "device", "dtype", "progress")


def _cmd_carousel(args: argparse.Namespace) -> None:
    from genrec.carousel.config import CarouselConfig
    from semid.config import from_flags

    cfg = from_flags(CarouselConfig, args, CAROUSEL_FLAGS, exclude_history=not args.keep_history)
    from accelerate import PartialState  # the model stack loads once the flags are known to be good

    from genrec.carousel.run import run_carousel

    summary = run_carousel(Path(args.run), Path(args.requests), Path(args.out),
                           data=Path(args.data) if args.data else None, cfg=cfg, overwrite=args.overwrite)
    if PartialState().is_main_process:
        print(json.dumps(summary, indent=2, default=str))


def _cmd_serve(args: argparse.Namespace) -> None:
    from genrec.serve.settings import from_arguments

    settings = from_arguments(args)  # bad flags fail here, before the model stack loads
    from genrec.serve.runner import serve

    serve(Path(args.run), settings)


def _cmd_review(args: argparse.Namespace) -> None:
    if args.review_command == "export":
        return _cmd_review_export(args)
    if not args.run:
        raise DataError("give --run RUN to review its audit (or: genrec review export --db FILE --out FILE)")
    import uvicorn

    from genrec.review import create_review_app, open_review

    if args.host not in ("127.0.0.1", "localhost", "::1"):
        logging.getLogger("genrec.review").warning(
            "listening on %s: the review app has no login, anyone who reaches it can record decisions", args.host)
    store, summary = open_review(Path(args.run), Path(args.db) if args.db else None, args.min_support, args.top)
    print(f"review queue {store.path}: {summary['cases']:,} cases, {summary['decisions_current']:,} decisions "
          f"kept, {summary['decisions_stale']:,} no longer apply (their case changed)")
    print(f"open http://{args.host}:{args.port}/ (Ctrl-C stops; decisions are saved as they are made)", flush=True)
    uvicorn.run(create_review_app(store), host=args.host, port=args.port, log_level="warning")


def _cmd_review_export(args: argparse.Namespace) -> None:
    import pyarrow.parquet as pq

    from genrec.review import ReviewStore

    if not Path(args.db).is_file():
        raise DataError(f"{args.db}: no review database there")
    table = ReviewStore(Path(args.db)).export()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, args.out)
    current = sum(table.column("current").to_pylist())
    print(f"wrote {args.out}: {table.num_rows:,} decisions ({current:,} on the current queue)")


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's subcommands to the ``genrec`` parser."""
    ca = sub.add_parser("carousel", help="batch candidates for many shoppers (streamed, resumable, shardable)")
    ca.add_argument("--run", required=True, help="run folder")
    ca.add_argument("--requests", required=True, help="parquet: user_id, retailer_id, [history]")
    ca.add_argument("--out", required=True, help="parquet to write: user_id, retailer_id, rank, item_id, sid, score")
    ca.add_argument("--data", default=None, help="dataset whose events give histories of rows without one")
    from genrec.carousel.config import CarouselConfig
    from semid.config import add_flags

    add_flags(ca, CarouselConfig, CAROUSEL_FLAGS)
    ca.add_argument("--keep-history", action="store_true", help="allow items already in the history")
    ca.add_argument("--overwrite", action="store_true", help="replace an existing output")
    ca.set_defaults(func=_cmd_carousel)

    from genrec.serve.settings import add_arguments as add_serve_arguments

    sv = sub.add_parser("serve", help="HTTP retrieval endpoint (FastAPI on uvicorn, micro-batched)")
    sv.add_argument("--run", required=True, help="run folder")
    add_serve_arguments(sv)
    sv.set_defaults(func=_cmd_serve)

    rv = sub.add_parser("review", help="review queue of the catalog audit (web app on loopback, SQLite)")
    rv.add_argument("--run", default=None, help="run folder whose audit to review")
    rv.add_argument("--db", default=None, help="SQLite file of the decisions (default: RUN/review.sqlite)")
    rv.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback by default)")
    rv.add_argument("--port", type=int, default=8001)
    rv.add_argument("--min-support", type=int, default=5, help="smallest neighbourhood that may vote")
    rv.add_argument("--top", type=int, default=None, help="queue only the top N cases")
    rv.set_defaults(func=_cmd_review)
    rsub = rv.add_subparsers(dest="review_command")
    rx = rsub.add_parser("export", help="every decision to a parquet file")
    rx.add_argument("--db", required=True, help="SQLite file of the decisions")
    rx.add_argument("--out", required=True, help="parquet file to write")
