"""Assemble the synthetic grocery world into a Dataset: items, events and assortment tables, plus meta that
records the planted structure (taxonomy, complement rules, retailer rule, taste model, late products,
each shopper's latent taste) so tests and later stages can check against it."""
from __future__ import annotations

import logging
import time
from dataclasses import asdict

import numpy as np
import pyarrow as pa

from genrec.data.dataset import Dataset
from genrec.data.synth.catalog import Catalog, make_catalog
from genrec.data.synth.config import SynthConfig
from genrec.data.synth.orders import Events, Rules, make_orders, rule_table
from genrec.data.synth.shoppers import Shoppers, make_shoppers
from genrec.data.synth.vocab import Taxonomy, complement_rules, grocery_taxonomy, retailer_name

log = logging.getLogger(__name__)

RETAILER_RULE = (
    "Each shopper shops only at one home retailer (retailer_id on its events) and only buys what that "
    "retailer stocks (assortment.parquet). A retailer stocks its own share of national-brand products, "
    "varying by department, plus its store brand ('<name> Essentials'), which no other retailer stocks."
)


def synthesize(cfg: SynthConfig) -> Dataset:
    """Generate the synthetic grocery world for ``cfg`` (deterministic for a seed; its values are checked
    when it is made)."""
    start = time.perf_counter()
    tax = grocery_taxonomy()
    cat = make_catalog(cfg, tax)
    sh = make_shoppers(cfg, cat)
    rules = _rules(tax)
    ev = make_orders(cfg, cat, sh, rules)
    ds = Dataset(items=_items_table(cat), events=_events_table(cfg, cat, sh, ev),
                 assortment=_assortment_table(cfg, cat), meta=_meta(cfg, cat, sh, ev))
    log.info("synth: %d items, %d users, %d events in %.1fs", cat.leaf.size, cfg.users, ev.item.size,
             time.perf_counter() - start)
    return ds


def _rules(tax: Taxonomy) -> Rules:
    trig, target, prob = zip(*((tax.leaf_index(a), tax.leaf_index(b), p) for a, b, p in complement_rules()))
    return rule_table(np.array(trig), np.array(target), np.array(prob), len(tax.leaves))


def _items_table(cat: Catalog) -> pa.Table:
    order = np.argsort(cat.item_id)
    return pa.table({
        "item_id": cat.item_id[order],
        "title": [cat.titles[i] for i in order],
        "text": [cat.text(i) for i in order],
        "brand": [cat.brands[cat.brand[i]] for i in order],
        "category_path": [cat.path(i) for i in order],
        "first_seen": cat.first_seen[order],
    })


def _events_table(cfg: SynthConfig, cat: Catalog, sh: Shoppers, ev: Events) -> pa.Table:
    _, session = np.unique(ev.order, return_inverse=True)
    retailer = (pa.array(sh.home[ev.user].astype(np.int32)) if cfg.retailers
                else pa.nulls(ev.user.size, pa.int32()))
    return pa.table({
        "user_id": ev.user.astype(np.int64) + 1,
        "session_id": session.astype(np.int64) + 1,
        "ts": ev.ts.astype(np.int64),
        "item_id": cat.item_id[ev.item],
        "position": ev.position.astype(np.int32),
        "retailer_id": retailer,
    })


def _assortment_table(cfg: SynthConfig, cat: Catalog) -> pa.Table | None:
    if cfg.retailers == 0:
        return None
    r, i = np.nonzero(cat.stocked)
    return pa.table({"retailer_id": r.astype(np.int32), "item_id": cat.item_id[i]}).sort_by(
        [("retailer_id", "ascending"), ("item_id", "ascending")])


def _meta(cfg: SynthConfig, cat: Catalog, sh: Shoppers, ev: Events) -> dict:
    tax = cat.taxonomy
    late = np.flatnonzero(cat.first_seen > 0)
    return {
        "source": "synth",
        "config": asdict(cfg),
        "ids": {"item_id": "1..items, shuffled", "user_id": "1..users", "session_id": "1..orders",
                "retailer_id": "0..retailers-1", "ts": "the shopper's order number, 1-based",
                "position": "add-to-cart order, 1-based", "first_seen": "order number a product launches at "
                "(0: from the start); it is never bought in an order numbered below it"},
        "taxonomy": {"levels": ["department", "aisle", "leaf"], "departments": len(tax.departments),
                     "aisles": len(tax.aisles), "leaves": len(tax.leaves),
                     "leaves_with_items": int(np.unique(cat.leaf).size)},
        "complement_rules": [{"if": " > ".join(tax.path(tax.leaf_index(a))),
                              "then": " > ".join(tax.path(tax.leaf_index(b))), "prob": p}
                             for a, b, p in complement_rules()],
        "retailer_rule": RETAILER_RULE,
        "retailers": _retailer_meta(cfg, cat, sh),
        "taste_model": _taste_meta(cfg),
        "late_items": np.sort(cat.item_id[late]).tolist(),
        "shoppers": {
            "home_retailer": sh.home.tolist() if cfg.retailers else None,
            "organic": sh.organic.astype(int).tolist(),
            "loyalty": np.round(sh.loyalty, 4).tolist(),
            "staples": [cat.item_id[row[row >= 0]].tolist() for row in sh.staples],
        },
        "counts": {"items": int(cat.leaf.size), "users": cfg.users, "events": int(ev.item.size),
                   "sessions": int(np.unique(ev.order).size), "late_items": int(late.size),
                   "events_by_source": {name: int((ev.source == k).sum())
                                        for k, name in enumerate(("staple", "browsed", "complement"))}},
    }


def _retailer_meta(cfg: SynthConfig, cat: Catalog, sh: Shoppers) -> list[dict]:
    only_one = cat.stocked.sum(axis=0) == 1
    return [{"retailer_id": r, "name": retailer_name(r), "store_brand": cat.brands[cat.store_brand[r]],
             "stocked": int(cat.stocked[r].sum()), "exclusive": int((cat.stocked[r] & only_one).sum()),
             "shoppers": int((sh.home == r).sum())} for r in range(cfg.retailers)]


def _taste_meta(cfg: SynthConfig) -> dict:
    return {
        "description": (
            "A shopper's leaf preference is a Dirichlet department mix times a Dirichlet mix within each "
            "department, over leaves its home retailer carries. A product's log weight for a shopper is its "
            "log popularity (log-normal, plus log(launch_boost) for late products) + loyalty if its brand is "
            "the shopper's favourite brand of that department + log(organic_pull) if organic and the shopper "
            "prefers organic (minus it if not). Staples are distinct products drawn by taste (leaf by "
            "preference, then product by weight) from those launched at the start; "
            "each order rebuys each staple with the shopper's staple rate, browses the rest of its base size "
            "(leaf by preference, then product by weight), then fires complement rules on what it bought."
        ),
        **{k: v for k, v in asdict(cfg).items() if k not in ("seed", "items", "users", "retailers")},
    }
