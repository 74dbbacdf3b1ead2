"""The synthetic grocery world: determinism, contract, and the structure planted on purpose (taxonomy,
retailer assortments, complement rules, staples, late launches, tastes)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pyarrow as pa
import pytest

from genrec.cli import main
from genrec.data.dataset import read_dataset
from genrec.data.synth import SynthConfig, synthesize
from genrec.data.synth.vocab import complement_rules, grocery_taxonomy
from semid.config import ConfigError

SMALL = dict(items=300, users=150, retailers=3)


@pytest.fixture(scope="module")
def world():
    """The default-size world (seconds), shared by the tests that measure planted structure."""
    return synthesize(SynthConfig(seed=7))


@pytest.fixture(scope="module")
def small():
    return synthesize(SynthConfig(seed=1, **SMALL))


def _col(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).to_numpy()


def _leaf_of_events(ds) -> np.ndarray:
    """Leaf path ("dept > aisle > leaf") of every event's item, as an array of strings."""
    ids = _col(ds.items, "item_id")
    paths = np.array([" > ".join(p) for p in ds.items.column("category_path").to_pylist()])
    return paths[np.searchsorted(ids, _col(ds.events, "item_id"))]


def _rule_lift(ds, trigger: str, target: str) -> tuple[float, float, int]:
    """P(a target-leaf item is added after a trigger-leaf item | trigger in session), the base rate of
    sessions holding the target leaf, and the number of trigger sessions."""
    leaf = _leaf_of_events(ds)
    sess, pos = _col(ds.events, "session_id"), _col(ds.events, "position")
    n_sess = np.unique(sess).size
    trig_first = {}
    for s, p in zip(sess[leaf == trigger], pos[leaf == trigger]):
        trig_first[s] = min(p, trig_first.get(s, p))
    tgt = leaf == target
    base = np.unique(sess[tgt]).size / n_sess
    after = {s for s, p in zip(sess[tgt], pos[tgt]) if s in trig_first and p > trig_first[s]}
    n = len(trig_first)
    return (len(after) / n if n else 0.0), base, n


def test_same_seed_same_tables(small):
    again = synthesize(SynthConfig(seed=1, **SMALL))
    assert again.items.equals(small.items)
    assert again.events.equals(small.events)
    assert again.assortment.equals(small.assortment)
    assert again.meta == small.meta


def test_different_seeds_differ(small):
    other = synthesize(SynthConfig(seed=2, **SMALL))
    assert not other.items.equals(small.items)
    assert not other.events.equals(small.events)
    assert not other.assortment.equals(small.assortment)


def test_counts_match_config(small):
    cfg = SynthConfig(seed=1, **SMALL)
    assert small.items.num_rows == cfg.items
    assert np.array_equal(np.unique(_col(small.events, "user_id")), np.arange(1, cfg.users + 1))
    assert np.array_equal(np.unique(_col(small.events, "retailer_id")), np.arange(cfg.retailers))
    assert sorted(set(_col(small.assortment, "retailer_id").tolist())) == list(range(cfg.retailers))
    user, sess = _col(small.events, "user_id"), _col(small.events, "session_id")
    pairs = np.unique(np.stack([user, sess]), axis=1)
    per_user = np.bincount(pairs[0])[1:]
    assert per_user.min() >= cfg.orders_min and per_user.max() <= cfg.orders_max
    sizes = np.bincount(sess)[1:]
    assert sizes.max() <= cfg.max_basket and sizes.min() >= 1
    # positions number each session 1..n in order, and ts is the shopper's order number
    pos = _col(small.events, "position")
    starts = np.searchsorted(sess, sess)
    assert np.array_equal(pos, np.arange(sess.size) - starts + 1)
    assert _col(small.events, "ts").min() == 1 and _col(small.events, "ts").max() <= cfg.orders_max
    assert small.meta["counts"]["events"] == small.events.num_rows


def test_vocabulary_is_a_rich_three_level_taxonomy():
    tax = grocery_taxonomy()
    assert len(tax.departments) >= 10 and len(tax.aisles) >= 40 and len(tax.leaves) >= 120
    names = [lf.name for lf in tax.leaves]
    assert len(set(names)) == len(names)
    for lf in tax.leaves:
        assert len(lf.nouns) >= 3 and len(lf.modifiers) >= 3 and len(lf.sizes) >= 2, lf.name
    rules = complement_rules()
    assert len(rules) >= 30
    for a, b, p in rules:
        assert a != b and 0 < p <= 1
    cross = [tax.path(tax.leaf_index(a))[0] != tax.path(tax.leaf_index(b))[0] for a, b, _ in rules]
    assert np.mean(cross) > 0.7  # complements mostly come from other departments


def test_items_carry_taxonomy_brand_and_text(world):
    rows = world.items.to_pylist()
    assert all(len(r["category_path"]) == 3 for r in rows)
    for r in rows:
        assert " > ".join(r["category_path"]) in r["text"], r
        assert r["title"] in r["text"] and r["title"].startswith(r["brand"]), r
    assert len({r["title"] for r in rows}) == len(rows)  # variants are distinct products
    leaves = {tuple(r["category_path"]) for r in rows}
    assert len(leaves) == world.meta["taxonomy"]["leaves"]  # every leaf has products at default size
    # a brand sells within one department (store brands aside)
    store = {r["store_brand"] for r in world.meta["retailers"]}
    depts = {}
    for r in rows:
        if r["brand"] not in store:
            depts.setdefault(r["brand"], set()).add(r["category_path"][0])
    assert all(len(d) == 1 for d in depts.values())
    organic = np.mean(["Organic" in r["title"] for r in rows])
    assert 0.1 < organic < 0.3


def test_events_only_hold_items_the_retailer_stocks(world):
    stocked = set(zip(_col(world.assortment, "retailer_id").tolist(),
                      _col(world.assortment, "item_id").tolist()))
    bought = set(zip(_col(world.events, "retailer_id").tolist(), _col(world.events, "item_id").tolist()))
    assert bought <= stocked
    user, ret = _col(world.events, "user_id"), _col(world.events, "retailer_id")
    pairs = np.unique(np.stack([user, ret]), axis=1)
    assert pairs.shape[1] == np.unique(user).size  # one home retailer per shopper
    home = np.array(world.meta["shoppers"]["home_retailer"])
    assert np.array_equal(home[pairs[0] - 1], pairs[1])


def test_assortments_differ_and_store_brands_are_exclusive(world):
    r, i = _col(world.assortment, "retailer_id"), _col(world.assortment, "item_id")
    sets = [set(i[r == k].tolist()) for k in range(3)]
    for a in range(3):
        for b in range(a + 1, 3):
            assert len(sets[a] & sets[b]) / len(sets[a] | sets[b]) < 0.8
    assert set().union(*sets) == set(_col(world.items, "item_id").tolist())
    brand = dict(zip(_col(world.items, "item_id").tolist(), world.items.column("brand").to_pylist()))
    for info in world.meta["retailers"]:
        own = {it for it, b in brand.items() if b == info["store_brand"]}
        assert own and own <= sets[info["retailer_id"]]
        assert all(it not in sets[k] for it in own for k in range(3) if k != info["retailer_id"])
        assert info["exclusive"] >= len(own)


def test_complement_rules_are_planted(world):
    lifts = {}
    for rule in world.meta["complement_rules"]:
        p, base, n = _rule_lift(world, rule["if"], rule["then"])
        if n >= 100:
            lifts[(rule["if"], rule["then"])] = (p, base)
    assert len(lifts) >= 20
    cheese = "dairy & eggs > cheese > hard cheese"
    for target in ("deli > antipasti > olives", "snacks > crackers > water crackers"):
        p, base = lifts[(cheese, target)]
        assert p > 0.3 and p > 4 * base, (target, p, base)
    ratios = [p / max(base, 1e-9) for p, base in lifts.values()]
    assert np.median(ratios) > 4


def test_complement_lift_vanishes_without_rules():
    ds = synthesize(SynthConfig(seed=7, users=800, complement_strength=0.0))
    rules = ds.meta["complement_rules"]
    ratios = []
    for rule in rules:
        p, base, n = _rule_lift(ds, rule["if"], rule["then"])
        if n >= 50:
            ratios.append(p / max(base, 1e-9))
    assert len(ratios) >= 10 and np.median(ratios) < 2
    assert ds.meta["counts"]["events_by_source"]["complement"] == 0


def test_staples_recur_across_orders(world):
    user, item, ts = _col(world.events, "user_id"), _col(world.events, "item_id"), _col(world.events, "ts")
    key = user * 10**7 + item
    order = np.lexsort((ts, key))
    k, t = key[order], ts[order]
    repeat = np.zeros(k.size, bool)
    repeat[1:] = (k[1:] == k[:-1]) & (t[1:] > t[:-1])
    assert repeat.mean() > 0.3  # a large share of purchases are rebuys
    # a shopper's recorded staples show up in a good share of its orders
    staples = world.meta["shoppers"]["staples"]
    sess = _col(world.events, "session_id")
    n_orders = np.array([np.unique(sess[user == u]).size for u in range(1, 201)])
    hits = [np.isin(staples[u - 1], item[user == u]).mean() for u in range(1, 201)]
    freq = [np.mean([((user == u) & (item == s)).sum() / n for s in staples[u - 1]])
            for u, n in zip(range(1, 201), n_orders)]
    assert np.mean(hits) > 0.9 and 0.3 < np.mean(freq) < 0.75


def test_late_items_never_bought_before_launch(world):
    first = _col(world.items, "first_seen")
    ids = _col(world.items, "item_id")
    assert sorted(ids[first > 0].tolist()) == world.meta["late_items"]
    assert (first > 0).mean() == pytest.approx(0.1, abs=0.01)
    launched = first[np.searchsorted(ids, _col(world.events, "item_id"))]
    assert (_col(world.events, "ts") >= launched).all()
    late_bought = np.unique(_col(world.events, "item_id")[launched > 0])
    assert late_bought.size > 0.5 * (first > 0).sum()  # cold-start items do get bought once launched


def test_organic_shoppers_buy_more_organic(world):
    organic_item = np.array(["Organic" in t for t in world.items.column("title").to_pylist()])
    ids = _col(world.items, "item_id")
    bought_organic = organic_item[np.searchsorted(ids, _col(world.events, "item_id"))]
    shopper_organic = np.array(world.meta["shoppers"]["organic"])[_col(world.events, "user_id") - 1] == 1
    assert bought_organic[shopper_organic].mean() > 2 * bought_organic[~shopper_organic].mean()


def test_validates_and_round_trips(small, tmp_path):
    small.validate()
    small.write(tmp_path / "ds")
    back = read_dataset(tmp_path / "ds")
    assert back.items.equals(small.items) and back.events.equals(small.events)
    assert back.assortment.equals(small.assortment)
    assert back.meta == small.meta


def test_without_retailers_everything_is_shared():
    ds = synthesize(SynthConfig(seed=3, items=200, users=50, retailers=0))
    ds.validate()
    assert ds.assortment is None
    assert ds.events.column("retailer_id").null_count == ds.events.num_rows
    assert ds.meta["retailers"] == []


def test_tiny_worlds_still_work():
    ds = synthesize(SynthConfig(seed=4, items=5, users=3, retailers=4))
    ds.validate()
    assert ds.items.num_rows == 5 and ds.events.num_rows > 0
    assert set(_col(ds.assortment, "retailer_id").tolist()) == {0, 1, 2, 3}


def test_extreme_shares_still_name_every_product():
    ds = synthesize(SynthConfig(seed=5, items=150, users=20, retailers=0, store_brand_share=1.0,
                                organic_share=1.0))
    assert ds.items.num_rows == 150
    titles = ds.items.column("title").to_pylist()
    household = [t for t, p in zip(titles, ds.items.column("category_path").to_pylist()) if p[0] == "household"]
    assert household and all("Organic" not in t for t in household)
    food = [t for t, p in zip(titles, ds.items.column("category_path").to_pylist()) if p[0] != "household"]
    assert all("Organic" in t for t in food)


def test_bad_config_is_a_config_error():
    for bad in (dict(items=0), dict(retailers=-1), dict(orders_min=9, orders_max=3), dict(seed=-1),
                dict(organic_share=1.5)):
        with pytest.raises(ConfigError):
            synthesize(replace(SynthConfig(), **bad))


def test_cli_writes_a_dataset(tmp_path, capsys):
    out = tmp_path / "synth"
    assert main(["data", "synth", "--out", str(out), "--seed", "1", "--items", "300", "--users", "100"]) == 0
    ds = read_dataset(out)
    assert ds.items.num_rows == 300
    assert np.unique(_col(ds.events, "user_id")).size == 100
    assert "300 items" in capsys.readouterr().out
    assert main(["data", "synth", "--out", str(out), "--seed", "1"]) == 2  # exists, no --overwrite
