"""A generated catalog at scale (``genrec data synth --scale``): a dataset folder of items.parquet,
assortment.parquet, events.parquet and meta.json in the dataset contract (``genrec.data.dataset``), plus
embeddings.parquet, clustered product vectors in the run's embeddings format (``semid.embeddings``), so
that text embedding is not the bottleneck of a scale run. Everything is written a chunk at a time with
``pyarrow.parquet.ParquetWriter``; memory grows with the catalog by about 30 bytes a product plus one bit per
(retailer, product) pair, never with the assortment's or the events' row count. docs/scaling.md,
"Generated catalogs" has the command and its timings."""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from genrec.data.dataset import ASSORTMENT_SCHEMA, EVENTS_SCHEMA
from genrec.data.synth.scale_catalog import (CatalogCore, ScaleTaxonomy, StockBits, catalog_core, items_chunk,
                                             leaf_centres, make_retailers, retailer_stock, scale_taxonomy,
                                             vectors_chunk)
from genrec.data.synth.scale_config import ScaleConfig
from genrec.data.synth.scale_events import SHOPPER_BLOCK, STRUCTURE, session_tables
from semid.catalog import ITEMS_FILE, ITEMS_SCHEMA
from semid.common import DataError, atomic_dir
from semid.embeddings import EMBEDDINGS_FILE
from semid.progress import progress

log = logging.getLogger(__name__)

DEFAULT_CHUNK = 65_536  # products per written chunk (rounded up to whole blocks); the output does not depend on it

STOCK_RULE = (
    "Retailer r stocks round(coverage_r x products) products, coverage_r uniform in [coverage_min, "
    "coverage_max]: in every block of products its share of the block, drawn without replacement with weights "
    "exp(stock_popularity x log popularity + the retailer's normal(0, stock_department_spread) leaning toward "
    "the product's department). Retailers overlap; a product may be stocked by none."
)
VECTORS = (
    "L2-normalised normal(leaf centre, noise) per product; leaf centres are normal around their aisle's "
    "(leaf_spread), aisle centres around their department's (aisle_spread), department centres around the "
    "origin (department_spread): an RQ-VAE can find the taxonomy in them. Columns item_id int64, embedding "
    "fixed_size_list<float32>[dim], as semid.embeddings.write_embeddings writes them."
)


def write_scale_world(cfg: ScaleConfig, out: str | Path, chunk: int = DEFAULT_CHUNK, overwrite: bool = False,
                      show_progress: bool = True) -> dict:
    """Generate the world of ``cfg`` into the folder ``out`` (atomically: a temporary folder renamed into place)
    and return its meta. The files depend on ``cfg`` alone, never on ``chunk``."""
    out = Path(out)
    if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise DataError(f"scale: chunk must be a whole number of products >= 1, got {chunk!r}")
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise DataError(f"{out}: output folder exists and is not empty (use --overwrite)")
    meta: dict = {}
    atomic_dir(out, lambda folder: meta.update(_write(cfg, folder, int(chunk), show_progress)))
    return meta


def _write(cfg: ScaleConfig, folder: Path, chunk: int, show: bool) -> dict:
    start = time.perf_counter()
    tax = scale_taxonomy(cfg)
    core = catalog_core(cfg, tax)
    centres = leaf_centres(cfg)
    log.info("scale: %s products in %s leaves (%s with products), %.1fs", f"{cfg.products:,}", f"{tax.leaves:,}",
             f"{int((core.leaf_size > 0).sum()):,}", time.perf_counter() - start)

    step = -(-chunk // cfg.block) * cfg.block
    embedding_schema = pa.schema([pa.field("item_id", pa.int64()),
                                  pa.field("embedding", pa.list_(pa.float32(), cfg.dim))])
    with pq.ParquetWriter(folder / ITEMS_FILE, ITEMS_SCHEMA) as items, \
            pq.ParquetWriter(folder / EMBEDDINGS_FILE, embedding_schema) as vectors, \
            progress(cfg.products, "scale: items and vectors", "products", show, logger=log) as bar:
        for s in range(0, cfg.products, step):
            e = min(s + step, cfg.products)
            items.write_table(items_chunk(cfg, tax, core, s, e))
            x = vectors_chunk(cfg, core, centres, s, e)
            vectors.write_table(pa.Table.from_arrays(
                [pa.array(np.arange(s, e, dtype=np.int64) + 1),
                 pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), cfg.dim)], schema=embedding_schema))
            bar.update(e - s)

    shops = make_retailers(cfg)
    stock = StockBits(cfg.retailers, cfg.products)
    stocked = np.zeros(cfg.retailers, np.int64)
    with pq.ParquetWriter(folder / "assortment.parquet", ASSORTMENT_SCHEMA, use_dictionary=["retailer_id"],
                          column_encoding={"item_id": "DELTA_BINARY_PACKED"}) as assortment, \
            progress(cfg.retailers, "scale: assortment", "retailers", show, logger=log) as bar:
        for r in range(cfg.retailers):
            products = retailer_stock(cfg, tax, core, shops, r)
            stock.set(r, products)
            stocked[r] = products.size
            assortment.write_table(pa.Table.from_arrays(
                [pa.array(np.full(products.size, r, np.int32)), pa.array(products.astype(np.int64) + 1)],
                schema=ASSORTMENT_SCHEMA))
            bar.update(1)
    anywhere = np.bitwise_or.reduce(stock.bits, axis=0)
    unstocked = cfg.products - int(np.unpackbits(anywhere)[: cfg.products].sum())

    users = sessions = 0
    with pq.ParquetWriter(folder / "events.parquet", EVENTS_SCHEMA) as events, \
            progress(cfg.events, "scale: sessions", "events", show, logger=log) as bar:
        for table in session_tables(cfg, tax, core, stock):
            events.write_table(table)
            users += len(np.unique(table.column("user_id").to_numpy()))
            sessions = int(table.column("session_id")[-1].as_py())
            bar.update(table.num_rows)

    meta = _meta(cfg, tax, core, stocked, unstocked, users, sessions)
    (folder / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    log.info("scale: wrote %s products, %s stock rows, %s events in %.1fs", f"{cfg.products:,}",
             f"{int(stocked.sum()):,}", f"{cfg.events:,}", time.perf_counter() - start)
    return meta


def _meta(cfg: ScaleConfig, tax: ScaleTaxonomy, core: CatalogCore, stocked: np.ndarray, unstocked: int, users: int,
          sessions: int) -> dict:
    share = stocked / cfg.products
    return {
        "source": "synth-scale",
        "config": asdict(cfg),
        "ids": {"item_id": "1..products (not in taxonomy order)", "retailer_id": "0..retailers-1",
                "user_id": f"block x {SHOPPER_BLOCK} + shopper + 1 (gaps where a shopper bought nothing)",
                "session_id": "1..sessions", "ts": "the shopper's order number, 1-based",
                "position": "add-to-cart order, 1-based",
                "first_seen": "order number a product launches at (0: from the start); never bought before it"},
        "taxonomy": {"levels": ["department", "aisle", "leaf"], "departments": tax.departments,
                     "aisles": tax.aisles, "leaves": tax.leaves,
                     "leaves_with_items": int((core.leaf_size > 0).sum()),
                     "largest_leaf": int(core.leaf_size.max())},
        "retailers": {"rule": STOCK_RULE, "stocked": stocked.tolist(),
                      "share_min": round(float(share.min()), 4), "share_max": round(float(share.max()), 4)},
        "sessions": {"description": STRUCTURE},
        "embeddings": {"file": EMBEDDINGS_FILE, "dim": cfg.dim, "description": VECTORS},
        "counts": {"items": cfg.products, "retailers": cfg.retailers, "assortment_rows": int(stocked.sum()),
                   "unstocked_items": unstocked, "late_items": int((core.first_seen > 0).sum()),
                   "events": cfg.events, "users": users, "sessions": sessions},
    }
