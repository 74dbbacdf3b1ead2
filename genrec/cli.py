"""The ``genrec`` command line. Each subcommand parses its flags and hands off to one library function;
nothing else imports this module."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from semid.common import DataError
from semid.config import ConfigError


def _cmd_import_instacart(args: argparse.Namespace) -> None:
    from genrec.data.importers.instacart import import_instacart

    ds = import_instacart(
        Path(args.src), Path(args.out), retailers=args.retailers, seed=args.seed, overwrite=args.overwrite
    )
    print(f"wrote {args.out}: {ds.items.num_rows:,} items, {ds.events.num_rows:,} events")


def _cmd_import_amazon(args: argparse.Namespace) -> None:
    from genrec.data.importers.amazon import import_amazon

    ds = import_amazon(Path(args.src), Path(args.out), overwrite=args.overwrite)
    print(f"wrote {args.out}: {ds.items.num_rows:,} items, {ds.events.num_rows:,} events")


def _cmd_stats(args: argparse.Namespace) -> None:
    from genrec.data.stats import dataset_stats, format_stats

    stats = dataset_stats(Path(args.dataset))
    print(json.dumps(stats, indent=2) if args.json else format_stats(stats))


def _cmd_synth(args: argparse.Namespace) -> None:
    from genrec.data.synth import SynthConfig, synthesize

    cfg = SynthConfig(seed=args.seed)
    for name in ("items", "users", "retailers"):
        if getattr(args, name) is not None:
            setattr(cfg, name, getattr(args, name))
    ds = synthesize(cfg)
    ds.write(args.out, overwrite=args.overwrite)
    print(f"wrote {args.out}: {ds.items.num_rows:,} items, {ds.events.num_rows:,} events")


def _cmd_embed(args: argparse.Namespace) -> None:
    from genrec.run.config import load_run_config
    from semid.catalog import read_items
    from semid.embeddings import EmbeddingConfig, embed_items, write_embeddings

    cfg = load_run_config(args.config).embedding if args.config else EmbeddingConfig()
    if args.model:
        cfg.model = args.model
    items = read_items(Path(args.data))
    vectors = embed_items(items, cfg)
    write_embeddings(items.column("item_id").to_numpy(), vectors, Path(args.out))
    print(f"wrote {args.out}: {vectors.shape[0]:,} x {vectors.shape[1]} embeddings")


def _cmd_semid_train(args: argparse.Namespace) -> None:
    from genrec.run.config import load_run_config
    from genrec.run.semids import build_semids

    cfg = load_run_config(args.config)
    init = Path(args.init_from) if args.init_from else None
    stage = build_semids(Path(args.data), cfg, Path(args.out), init_run=init)
    print(f"wrote {args.out}: {stage.sids.num_rows:,} SIDs, codebook version {stage.version}")


def _cmd_semid_eval(args: argparse.Namespace) -> None:
    from genrec.run.semids import evaluate_semids
    from semid.common import write_json
    from semid.intrinsic import format_intrinsic

    metrics = evaluate_semids(Path(args.run), seed=args.seed, data=Path(args.data) if args.data else None)
    print(format_intrinsic(metrics))
    if args.out:
        write_json(metrics, Path(args.out))


def _cmd_semid_assign(args: argparse.Namespace) -> None:
    import pyarrow.parquet as pq

    from genrec.run.semids import assign_new_items

    table = assign_new_items(Path(args.run), Path(args.items))
    pq.write_table(table, args.out)
    print(f"wrote {args.out}: SIDs for {table.num_rows:,} new products")


def _cmd_semid_audit(args: argparse.Namespace) -> None:
    import pyarrow.parquet as pq

    from genrec.run.semids import audit_run

    table = audit_run(Path(args.run), min_support=args.min_support, top=args.top)
    pq.write_table(table, args.out)
    print(f"wrote {args.out}: {table.num_rows:,} products to review")
    for row in table.slice(0, args.show).to_pylist():
        print(f"  {row['confidence']:.2f}  {row['title']}  [{row['label']}] -> {row['majority_label']}")


def _cmd_semid_substitutes(args: argparse.Namespace) -> None:
    from semid.substitutes import Substitutes

    subs = Substitutes.from_run(Path(args.run))
    if args.category_share:
        share = subs.category_share(k=args.share_k, sample=args.sample, seed=args.seed)
        print(f"{share['items']:,} sampled products: {share['same_category_share']:.1%} of their top {share['k']} "
              f"substitutes share their category (nearest by embedding alone: {share['nearest_by_embedding_share']:.1%})")
    if args.item is None:
        if not args.category_share:
            raise DataError("give --item ID (or --category-share)")
        return
    stocked = None
    if args.retailer_id is not None:
        from index.retailer_index import RetailerIndex

        index = RetailerIndex.load(Path(args.run) / "index")
        if args.retailer_id not in index.retailers.tolist():
            raise DataError(f"unknown retailer {args.retailer_id}; known: {index.retailers.tolist()[:50]}")
        stocked = index.stocked(args.retailer_id)
    ranked = subs.for_item(args.item, k=args.k, stocked=stocked)
    row = subs.row_of(args.item)
    where = "" if args.retailer_id is None else f" stocked by retailer {args.retailer_id}"
    print(f"{subs.sids[row]}  {subs.titles[row]}  [{subs.categories[row]}]")
    print(f"substitutes{where}, by shared SID levels then cosine:")
    for rank, r in enumerate(ranked, 1):
        print(f"{rank:3d}. level {r['shared_levels']}  cos {r['cosine']:.3f}  {r['sid']:>14}  {r['title']}  [{r['category']}]")


def _cmd_semid_churn(args: argparse.Namespace) -> None:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from genrec.run.semids import churn_between
    from semid.common import write_json
    from semid.churn import format_churn

    report, migration = churn_between(Path(args.old), Path(args.new))
    print(format_churn(report))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(migration, args.out)
        counts = {c["values"]: c["counts"] for c in pc.value_counts(migration.column("status")).to_pylist()}
        summary = ", ".join(f"{counts.get(s, 0):,} {s}" for s in ("kept", "moved", "added", "removed"))
        print(f"wrote {args.out}: migration table, {summary}")
    if args.json:
        write_json(report, Path(args.json))


def _cmd_train(args: argparse.Namespace) -> None:
    from genrec.run.build import train_run
    from genrec.run.config import load_run_config

    result = train_run(Path(args.data), load_run_config(args.config), Path(args.out), resume=not args.restart)
    print(f"wrote {args.out}: decoder trained, best validation {result.best}")


def _cmd_eval(args: argparse.Namespace) -> None:
    from genrec.evaluation.harness import EvalConfig, evaluate, format_table
    from genrec.run.semids import run_dataset
    from semid.common import write_json

    run = Path(args.run) if args.run else None
    if run is None and args.data is None:
        raise DataError("give --run RUN (its dataset is recorded) or --data DIR for baselines only")
    data = run_dataset(run, Path(args.data) if args.data else None) if run else Path(args.data)
    cfg = EvalConfig(max_test=args.max_test, cold_start_fraction=args.cold_start, cold_share=args.cold_share,
                     beam_width=args.beam)
    ks = [int(k) for k in args.k.split(",")] if args.k else None
    result = evaluate(data, run, [b for b in args.baselines.split(",") if b], ks, seed=args.seed, config=cfg,
                      progress=lambda msg: print(f"  {msg}", file=sys.stderr, flush=True))
    print(format_table(result))
    if args.out:
        write_json(result, Path(args.out))


def _cmd_carousel(args: argparse.Namespace) -> None:
    from accelerate import PartialState

    from genrec.carousel import CarouselConfig, run_carousel

    cfg = CarouselConfig(k=args.k, chunk_size=args.chunk_size, batch_size=args.batch_size,
                         beam_width=args.beam_width, exclude_history=not args.keep_history,
                         on_missing=args.on_missing, threads=args.threads, device=args.device,
                         dtype=args.dtype, progress=not args.no_progress)
    summary = run_carousel(Path(args.run), Path(args.requests), Path(args.out),
                           data=Path(args.data) if args.data else None, cfg=cfg, overwrite=args.overwrite)
    if PartialState().is_main_process:
        print(json.dumps(summary, indent=2, default=str))


def _cmd_serve(args: argparse.Namespace) -> None:
    from genrec.serve.runner import serve
    from genrec.serve.settings import from_arguments

    serve(Path(args.run), from_arguments(args))


def _cmd_report(args: argparse.Namespace) -> None:
    from genrec.report import write_report

    path = write_report(Path(args.run), Path(args.out), seed=args.seed)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): open it in a browser, no server needed")


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


def _cmd_demo(args: argparse.Namespace) -> None:
    from genrec.run.demo import run_demo

    run_demo(Path(args.workdir), config=Path(args.config) if args.config else None, seed=args.seed)
    print(f"\ndemo finished; everything it built is in {args.workdir}")


def build_parser() -> argparse.ArgumentParser:
    """All subcommands and their flags."""
    p = argparse.ArgumentParser(prog="genrec", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="import, synthesize and describe datasets")
    dsub = data.add_subparsers(dest="data_command", required=True)
    imp = dsub.add_parser("import", help="import a public dataset into the parquet layout")
    isub = imp.add_subparsers(dest="source", required=True)

    ic = isub.add_parser("instacart", help="Instacart 2017 (Kaggle layout and/or the per-user sample file)")
    ic.add_argument("--src", required=True, help="folder with products.csv(.gz), aisles, departments, ...")
    ic.add_argument("--out", required=True, help="dataset folder to write")
    ic.add_argument("--retailers", type=int, default=0,
                    help="simulate this many retailer assortments (0: none; recorded as simulated)")
    ic.add_argument("--seed", type=int, default=0, help="seed of the simulated assortments")
    ic.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    ic.set_defaults(func=_cmd_import_instacart)

    am = isub.add_parser("amazon", help="Amazon 2014 5-core sequences (ASIN form) with item phrases")
    am.add_argument("--src", required=True, help="folder with gram_user_sequence_asin.txt.gz, ...")
    am.add_argument("--out", required=True, help="dataset folder to write")
    am.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    am.set_defaults(func=_cmd_import_amazon)

    st = dsub.add_parser("stats", help="counts and distributions of a dataset")
    st.add_argument("dataset", help="dataset folder")
    st.add_argument("--json", action="store_true", help="print JSON instead of a table")
    st.set_defaults(func=_cmd_stats)

    sy = dsub.add_parser("synth", help="generate the synthetic grocery world")
    sy.add_argument("--out", required=True, help="dataset folder to write")
    sy.add_argument("--seed", type=int, default=0)
    sy.add_argument("--items", type=int, default=None, help="number of products")
    sy.add_argument("--users", type=int, default=None, help="number of shoppers")
    sy.add_argument("--retailers", type=int, default=None, help="number of retailers")
    sy.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    sy.set_defaults(func=_cmd_synth)

    em = sub.add_parser("embed", help="embed a dataset's items (cached on disk)")
    em.add_argument("--data", required=True, help="dataset folder (reads items.parquet)")
    em.add_argument("--out", required=True, help="parquet file to write (item_id, embedding)")
    em.add_argument("--config", default=None, help="run config whose `embedding` section to use")
    em.add_argument("--model", default=None, help="sentence-transformers model name or path")
    em.set_defaults(func=_cmd_embed)

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
    ev.add_argument("--max-test", type=int, default=None, help="evaluate a seeded sample of test examples")
    ev.add_argument("--cold-start", type=float, default=None, help="share of test items made unseen (TIGER)")
    ev.add_argument("--cold-share", type=float, default=None,
                    help="share of genrec's K open to never-trained products under decoded prefixes "
                         "(TIGER's epsilon; default 0.1, 0 turns it off)")
    ev.add_argument("--beam", type=int, default=20, help="genrec's beam width")
    ev.add_argument("--out", default=None, help="metrics JSON to write")
    ev.set_defaults(func=_cmd_eval)

    ca = sub.add_parser("carousel", help="batch candidates for many shoppers (streamed, resumable, shardable)")
    ca.add_argument("--run", required=True, help="run folder")
    ca.add_argument("--requests", required=True, help="parquet: user_id, retailer_id, [history]")
    ca.add_argument("--out", required=True, help="parquet to write: user_id, retailer_id, rank, item_id, sid, score")
    ca.add_argument("--data", default=None, help="dataset whose events give histories of rows without one")
    ca.add_argument("--k", type=int, default=50, help="candidates per shopper")
    ca.add_argument("--chunk-size", type=int, default=2048, help="requests per resumable part")
    ca.add_argument("--batch-size", type=int, default=512, help="requests per beam search call")
    ca.add_argument("--beam-width", type=int, default=20)
    ca.add_argument("--keep-history", action="store_true", help="allow items already in the history")
    ca.add_argument("--on-missing", choices=["skip", "error"], default="skip",
                    help="a shopper with no usable history: skip and count, or fail")
    ca.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ca.add_argument("--device", default=None, help="torch device (default: accelerate's)")
    ca.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto",
                    help="decoder weights (auto: bfloat16 on CUDA and on CPUs with native bf16 matmul)")
    ca.add_argument("--overwrite", action="store_true", help="replace an existing output")
    ca.add_argument("--no-progress", action="store_true", help="no progress bar")
    ca.set_defaults(func=_cmd_carousel)

    from genrec.serve.settings import add_arguments as add_serve_arguments

    sv = sub.add_parser("serve", help="HTTP retrieval endpoint (FastAPI on uvicorn, micro-batched)")
    sv.add_argument("--run", required=True, help="run folder")
    add_serve_arguments(sv)
    sv.set_defaults(func=_cmd_serve)

    rp = sub.add_parser("report", help="a self-contained HTML report of a run (opens from disk)")
    rp.add_argument("--run", required=True, help="run folder")
    rp.add_argument("--out", required=True, help="folder to write index.html into")
    rp.add_argument("--seed", type=int, default=0, help="seed of the pair sample (as genrec semid eval)")
    rp.set_defaults(func=_cmd_report)

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

    de = sub.add_parser("demo", help="the whole pipeline on the synthetic grocery world")
    de.add_argument("--workdir", default="work/demo", help="folder for the demo's data and run")
    de.add_argument("--config", default=None, help="run config (default: configs/demo.yaml)")
    de.add_argument("--seed", type=int, default=0)
    de.set_defaults(func=_cmd_demo)

    semid = sub.add_parser("semid", help="Semantic IDs: train, evaluate, assign, audit, churn")
    ssub = semid.add_subparsers(dest="semid_command", required=True)
    tr = ssub.add_parser("train", help="embed items, train the codebook, assign SIDs")
    tr.add_argument("--data", required=True, help="dataset folder")
    tr.add_argument("--config", required=True, help="run config YAML (configs/*.yaml)")
    tr.add_argument("--out", required=True, help="run folder to write")
    tr.add_argument("--init-from", default=None, help="start from this run's codebook (stable retraining)")
    tr.set_defaults(func=_cmd_semid_train)
    sev = ssub.add_parser("eval", help="intrinsic evaluation of a run's codebook")
    sev.add_argument("--run", required=True, help="run folder")
    sev.add_argument("--out", default=None, help="metrics JSON to write")
    sev.add_argument("--seed", type=int, default=0, help="seed of the fixed pair sample")
    sev.add_argument("--data", default=None,
                     help="dataset whose held-out purchases measure co-purchase sharing (default: the run's own)")
    sev.set_defaults(func=_cmd_semid_eval)
    asg = ssub.add_parser("assign", help="SIDs for new products without retraining (cold start)")
    asg.add_argument("--run", required=True, help="run folder")
    asg.add_argument("--items", required=True, help="items.parquet of the new products")
    asg.add_argument("--out", required=True, help="parquet file of their SIDs")
    asg.set_defaults(func=_cmd_semid_assign)
    au = ssub.add_parser("audit", help="products whose SID neighbourhood disagrees with their category")
    au.add_argument("--run", required=True, help="run folder")
    au.add_argument("--out", required=True, help="parquet file of the ranked review queue")
    au.add_argument("--min-support", type=int, default=5, help="smallest neighbourhood that may vote")
    au.add_argument("--top", type=int, default=None, help="keep only the top N")
    au.add_argument("--show", type=int, default=10, help="print the first N")
    au.set_defaults(func=_cmd_semid_audit)
    su = ssub.add_parser("substitutes", help="products ranked by shared SID prefix, then embedding similarity")
    su.add_argument("--run", required=True, help="run folder")
    su.add_argument("--item", type=int, default=None, help="the product to find substitutes for")
    su.add_argument("--k", type=int, default=10, help="how many substitutes")
    su.add_argument("--retailer-id", type=int, default=None, help="only products this retailer stocks")
    su.add_argument("--category-share", action="store_true",
                    help="also print how often the top k share the product's category, over a sample")
    su.add_argument("--share-k", type=int, default=5, help="the top k that --category-share reads")
    su.add_argument("--sample", type=int, default=2000, help="products sampled by --category-share")
    su.add_argument("--seed", type=int, default=0, help="seed of that sample")
    su.set_defaults(func=_cmd_semid_substitutes)
    ch = ssub.add_parser("churn", help="SID churn between two codebook versions and the migration table")
    ch.add_argument("--old", required=True, help="run folder (or sids.parquet) of the previous codebook")
    ch.add_argument("--new", required=True, help="run folder (or sids.parquet) of the retrained codebook")
    ch.add_argument("--out", default=None, help="parquet file of the old SID -> new SID migration table")
    ch.add_argument("--json", default=None, help="churn report JSON to write")
    ch.set_defaults(func=_cmd_semid_churn)
    return p


def configure_logging(verbose: bool = False) -> None:
    """INFO (DEBUG when ``verbose``) records of genrec on stderr, faiss's loader chatter left out."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``genrec`` console script; user errors print one line and exit 2."""
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    try:
        args.func(args)
    except (DataError, ConfigError, FileNotFoundError) as e:
        print(f"genrec: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("genrec: interrupted", file=sys.stderr)
        return 130
    finally:
        _close_process_group()
    return 0


def _close_process_group() -> None:
    """Under ``accelerate launch``, wait for every process and tear the process group down before exit:
    a gloo group left to interpreter shutdown can abort the process ("terminate called without an active
    exception") after the work is done."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
