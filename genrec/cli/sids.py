"""``genrec semid train|eval|assign|audit|substitutes|churn``: the Semantic ID stage of a run."""
from __future__ import annotations

import argparse
from pathlib import Path

from semid.common import DataError


def _cmd_semid_train(args: argparse.Namespace) -> None:
    from genrec.run.config import load_run_config

    cfg = load_run_config(args.config)  # a bad config fails here, before the model stack loads
    from genrec.run.semids import build_semids

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
        from genrec.run.layout import INDEX_DIR
        from index.retailer_index import RetailerIndex

        index = RetailerIndex.load(Path(args.run) / INDEX_DIR)
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


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's subcommands to the ``genrec`` parser."""
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
