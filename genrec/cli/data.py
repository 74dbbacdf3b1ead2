"""Commands on datasets: ``genrec data import|synth|stats`` and ``genrec embed``."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

SYNTH_FLAGS = ("seed", "items", "users", "retailers")  # the synthetic world's settings that are flags
SCALE_FLAGS = ("products", "events", "dim")  # flags of `synth --scale` alone (seed and retailers are shared)
SMALL_ONLY = ("items", "users")  # flags of the small world alone


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


def _given(args: argparse.Namespace, names: tuple[str, ...]) -> dict:
    """The flags among ``names`` given on the command line (their parser default is None)."""
    return {n: getattr(args, n) for n in names if getattr(args, n) is not None}


def _cmd_synth(args: argparse.Namespace) -> None:
    from semid.common import DataError

    if args.scale:
        return _cmd_synth_scale(args)
    wrong = _given(args, SCALE_FLAGS + ("chunk",))
    if wrong:
        raise DataError(f"{', '.join('--' + n for n in wrong)} describe a catalog at scale: add --scale")
    from genrec.data.synth import SynthConfig, synthesize

    ds = synthesize(SynthConfig(seed=args.seed, **_given(args, SYNTH_FLAGS[1:])))
    ds.write(args.out, overwrite=args.overwrite)
    print(f"wrote {args.out}: {ds.items.num_rows:,} items, {ds.events.num_rows:,} events")


def _cmd_synth_scale(args: argparse.Namespace) -> None:
    from genrec.data.synth.scale_config import ScaleConfig
    from semid.common import DataError

    wrong = _given(args, SMALL_ONLY)
    if wrong:
        raise DataError(f"{', '.join('--' + n for n in wrong)} describe the small world; with --scale give "
                        "--products and --events")
    cfg = ScaleConfig(seed=args.seed, **_given(args, SCALE_FLAGS + ("retailers",)))
    from genrec.data.synth.scale import DEFAULT_CHUNK, write_scale_world

    chunk = DEFAULT_CHUNK if args.chunk is None else args.chunk
    meta = write_scale_world(cfg, Path(args.out), chunk=chunk, overwrite=args.overwrite)
    counts = meta["counts"]
    print(f"wrote {args.out}: {counts['items']:,} items in {meta['taxonomy']['leaves']:,} leaves, "
          f"{counts['retailers']} retailers ({counts['assortment_rows']:,} stock rows), {counts['events']:,} events, "
          f"{cfg.dim}-d vectors in embeddings.parquet")


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


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's subcommands to the ``genrec`` parser."""
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

    sy = dsub.add_parser("synth", help="generate the synthetic grocery world (or, with --scale, a catalog at scale)")
    sy.add_argument("--out", required=True, help="dataset folder to write")
    from genrec.data.synth import SynthConfig
    from genrec.data.synth.scale_config import ScaleConfig
    from semid.config import add_flags

    add_flags(sy, SynthConfig, SYNTH_FLAGS)
    sy.add_argument("--scale", action="store_true",
                    help="a generated catalog at scale instead, streamed: thousands of leaf categories, many "
                         "retailers, sessions and clustered product vectors (embeddings.parquet); "
                         'docs/scaling.md, "Generated catalogs"')
    add_flags(sy, ScaleConfig, SCALE_FLAGS)
    sy.add_argument("--chunk", type=int, default=None,
                    help="with --scale: products generated and written at a time (memory, not output)")
    sy.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    for action in sy._actions:  # "... (default: 3)" -> "... (default: 3; with --scale: 100)"
        if action.dest == "retailers":
            action.help = action.help[:-1] + f"; with --scale: {ScaleConfig.retailers})"
        elif action.dest in SCALE_FLAGS:
            action.help = "with --scale: " + action.help
    sy.set_defaults(**{n: None for n in SMALL_ONLY + SCALE_FLAGS + ("retailers",)})  # None: not given
    sy.set_defaults(func=_cmd_synth)

    em = sub.add_parser("embed", help="embed a dataset's items (cached on disk)")
    em.add_argument("--data", required=True, help="dataset folder (reads items.parquet)")
    em.add_argument("--out", required=True, help="parquet file to write (item_id, embedding)")
    em.add_argument("--config", default=None, help="run config whose `embedding` section to use")
    em.add_argument("--model", default=None, help="sentence-transformers model name or path")
    em.set_defaults(func=_cmd_embed)
