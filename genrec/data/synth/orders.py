"""Orders (sessions): each shopper's numbered orders mix rebought staples with products browsed by taste,
and planted complement rules pull a complement into the cart right after its trigger. Everything is drawn
for all orders at once."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from genrec.data.synth.catalog import Catalog
from genrec.data.synth.config import SynthConfig, stream
from genrec.data.synth.shoppers import Shoppers, choose_items, sample_leaves

_ORDERS = 6  # random stream id


@dataclass
class Rules:
    """Complement rules by trigger leaf, as a CSR table: rules of leaf l are ptr[l]:ptr[l + 1]."""

    ptr: np.ndarray  # (L + 1,)
    target: np.ndarray  # (n_rules,) complement leaf
    prob: np.ndarray  # (n_rules,) chance per bought trigger


def rule_table(trigger: np.ndarray, target: np.ndarray, prob: np.ndarray, n_leaves: int) -> Rules:
    """Index complement rules (parallel arrays of leaf indices and probabilities) by trigger leaf."""
    order = np.argsort(trigger, kind="stable")
    ptr = np.concatenate([[0], np.cumsum(np.bincount(trigger, minlength=n_leaves))])
    return Rules(ptr, target[order], prob[order])


@dataclass
class Events:
    """Bought products in add-to-cart order, as parallel arrays (internal indices)."""

    user: np.ndarray  # shopper index
    order: np.ndarray  # global order index (shopper-major, then order number)
    ts: np.ndarray  # the shopper's order number, 1-based
    item: np.ndarray  # product index
    position: np.ndarray  # add-to-cart position within the order, 1-based
    source: np.ndarray  # 0 staple, 1 browsed, 2 complement (for checks; not written)


def make_orders(cfg: SynthConfig, cat: Catalog, sh: Shoppers, rules: Rules) -> Events:
    """Draw every shopper's orders: staples, browsed products, then complements of what was bought."""
    rng = stream(cfg, _ORDERS)
    n_orders = rng.integers(cfg.orders_min, cfg.orders_max + 1, cfg.users)
    order_user = np.repeat(np.arange(cfg.users), n_orders)
    order_ts = np.arange(order_user.size) - np.repeat(np.cumsum(n_orders) - n_orders, n_orders) + 1
    base_size = rng.integers(cfg.base_items_min, cfg.base_items_max + 1, order_user.size)

    s_order, s_item = _staple_picks(sh, order_user, base_size, rng)
    n_browse = base_size - np.bincount(s_order, minlength=order_user.size)
    b_order = np.repeat(np.arange(order_user.size), n_browse)
    b_user = order_user[b_order]
    b_item = choose_items(cat, sh, b_user, sample_leaves(sh, b_user, rng), order_ts[b_order], rng)

    base_order = np.concatenate([s_order, b_order])
    base_item = np.concatenate([s_item, b_item])
    base_src = np.concatenate([np.zeros(s_order.size, np.int8), np.ones(b_order.size, np.int8)])
    # cart order: staples lean towards the front, browsed products towards the back
    lean = np.where(base_src == 0, 0.0, cfg.staples_first)
    base_key = lean + rng.random(base_order.size) * (1.0 - cfg.staples_first)
    keep = base_item >= 0
    base_order, base_item = base_order[keep], base_item[keep]
    base_src, base_key = base_src[keep], base_key[keep]

    c_order, c_item, c_key = _complements(cfg, cat, sh, rules, order_user, order_ts, base_order, base_item,
                                          base_key, rng)
    order = np.concatenate([base_order, c_order])
    item = np.concatenate([base_item, c_item])
    key = np.concatenate([base_key, c_key])
    src = np.concatenate([base_src, np.full(c_order.size, 2, np.int8)])
    return _finish(cfg, order_user, order_ts, order, item, key, src)


def _staple_picks(sh: Shoppers, order_user: np.ndarray, base_size: np.ndarray,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Which staples each order rebuys: each with the shopper's staple rate, earlier-drawn staples first,
    leaving room for at least one browsed product. Returns (order index, product) pairs."""
    staples = sh.staples[order_user]
    want = (rng.random(staples.shape) < sh.staple_rate[order_user, None]) & (staples >= 0)
    want &= np.cumsum(want, axis=1) <= (base_size - 1)[:, None]
    o, j = np.nonzero(want)
    return o, staples[o, j]


def _complements(cfg: SynthConfig, cat: Catalog, sh: Shoppers, rules: Rules, order_user: np.ndarray,
                 order_ts: np.ndarray, base_order: np.ndarray, base_item: np.ndarray, base_key: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every bought product whose leaf triggers rules, fire each rule with its probability and add a
    product of the complement leaf (chosen by the shopper's taste) just after the trigger in the cart."""
    leaf = cat.leaf[base_item]
    n_rules = rules.ptr[leaf + 1] - rules.ptr[leaf]
    trig = np.repeat(np.arange(base_item.size), n_rules)
    first = np.repeat(rules.ptr[leaf] - np.cumsum(n_rules) + n_rules, n_rules)
    rule = first + np.arange(trig.size)
    fire = rng.random(trig.size) < np.minimum(1.0, rules.prob[rule] * cfg.complement_strength)
    trig, rule = trig[fire], rule[fire]
    order = base_order[trig]
    user = order_user[order]
    item = choose_items(cat, sh, user, rules.target[rule], order_ts[order], rng)
    key = base_key[trig] + rng.uniform(1e-6, 0.02, trig.size)
    keep = item >= 0
    return order[keep], item[keep], key[keep]


def _finish(cfg: SynthConfig, order_user: np.ndarray, order_ts: np.ndarray, order: np.ndarray,
            item: np.ndarray, key: np.ndarray, src: np.ndarray) -> Events:
    """Sort into cart order, keep each product once per order (its first add), cut orders to max_basket,
    and number the positions."""
    idx = np.lexsort((key, order))
    order, item, src = order[idx], item[idx], src[idx]
    pair = order * (int(item.max(initial=0)) + 1) + item
    _, first = np.unique(pair, return_index=True)
    first.sort()
    order, item, src = order[first], item[first], src[first]
    starts = np.searchsorted(order, order, side="left")
    position = np.arange(order.size) - starts + 1
    keep = position <= cfg.max_basket
    order, item, src, position = order[keep], item[keep], src[keep], position[keep]
    return Events(order_user[order], order, order_ts[order], item, position.astype(np.int32), src)
