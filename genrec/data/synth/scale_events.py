"""Shopper sessions of a generated world at scale, a block of shoppers at a time until the configured number of
events. The structure a model can learn: each shopper's taste over a few leaves of one or two aisles,
staples rebought across orders, a partner product that often joins a product in the basket, popularity
within a leaf; shoppers buy only what their home retailer stocks, and only products already launched."""
from __future__ import annotations

from typing import Iterator

import numpy as np
import pyarrow as pa

from genrec.data.dataset import EVENTS_SCHEMA
from genrec.data.synth.scale_catalog import CatalogCore, ScaleTaxonomy, StockBits
from genrec.data.synth.scale_config import PAIRS, SHOPPERS, ScaleConfig, stream
from semid.common import DataError

SHOPPER_BLOCK = 1024  # shoppers per random stream (the output depends on it)
TRIES = 24  # draws of a product before an item is left out (its retailer does not stock what was drawn)

STRUCTURE = (
    "Each shopper has a home retailer (uniform), buys only what it stocks and only products launched by the "
    "order (first_seen <= ts). Taste: taste_leaves leaves drawn from taste_aisles aisles (aisles and leaves "
    "weighted by how many products they hold), with Dirichlet(1) weights. A shopper's staples are products "
    "of its taste leaves launched at the start; each item of an order is a staple with the shopper's staple "
    "rate, else browsed: a leaf from the taste (or, with probability explore, any leaf by size), then a "
    "product of the leaf by popularity. Every leaf has a partner leaf in another aisle and every product a "
    "partner product in it (the same rank in the leaf's random order); a bought product brings its partner "
    "into the basket right after it with probability pair_rate. A product is bought at most once per order. "
    "The last shopper block is cut at the configured number of events, possibly inside an order."
)


def partner_leaves(cfg: ScaleConfig, tax: ScaleTaxonomy) -> np.ndarray:
    """(L,) a partner leaf for every leaf, in another aisle when there is one."""
    rng = stream(cfg, PAIRS)
    per_aisle = cfg.leaves_per_aisle
    if tax.aisles == 1:
        return rng.integers(tax.leaves, size=tax.leaves)
    other = rng.integers(tax.leaves - per_aisle, size=tax.leaves)
    own_start = tax.aisle_of(np.arange(tax.leaves)) * per_aisle
    return np.where(other >= own_start, other + per_aisle, other)


def session_tables(cfg: ScaleConfig, tax: ScaleTaxonomy, core: CatalogCore, stock: StockBits
                   ) -> Iterator[pa.Table]:
    """events.parquet rows (EVENTS_SCHEMA), one block of shoppers per table, ``cfg.events`` rows in all. User
    ids are block * SHOPPER_BLOCK + shopper + 1 (shoppers who bought nothing leave a gap); session ids count
    up from 1 across blocks; ts is the shopper's order number."""
    partner = partner_leaves(cfg, tax)
    written, sessions = 0, 0
    b = 0
    while written < cfg.events:
        ev = _shopper_block(cfg, tax, core, stock, partner, b)
        n = min(ev["item"].size, cfg.events - written)
        if n == 0:
            raise DataError(f"scale: shopper block {b} bought nothing; its retailers stock no launched product "
                            "(raise products or coverage_min, or lower late_fraction)")
        session = ev["session"][:n]
        dense = np.cumsum(np.r_[True, session[1:] != session[:-1]])  # 1.. over the block's non-empty sessions
        yield pa.Table.from_arrays([
            pa.array(b * SHOPPER_BLOCK + ev["user"][:n] + 1),
            pa.array(sessions + dense),
            pa.array(ev["ts"][:n]),
            pa.array(ev["item"][:n] + 1),
            pa.array(ev["position"][:n].astype(np.int32)),
            pa.array(ev["retailer"][:n].astype(np.int32)),
        ], schema=EVENTS_SCHEMA)
        written, sessions, b = written + n, sessions + int(dense[-1]), b + 1


def _shopper_block(cfg: ScaleConfig, tax: ScaleTaxonomy, core: CatalogCore, stock: StockBits,
                   partner: np.ndarray, b: int) -> dict[str, np.ndarray]:
    """The orders of shoppers b * SHOPPER_BLOCK ...: parallel int64 arrays user (in the block), session (in the
    block, ascending), ts, item (product index), position (1-based), retailer."""
    rng = stream(cfg, SHOPPERS, b)
    S, F, N, K = SHOPPER_BLOCK, cfg.leaves_per_aisle, cfg.products, cfg.taste_leaves
    home = rng.integers(cfg.retailers, size=S)
    orders = rng.integers(cfg.sessions_min, cfg.sessions_max + 1, S)
    staple_rate = rng.uniform(cfg.staple_rate_min, cfg.staple_rate_max, S)

    # taste: aisles by their product count, leaves within them by theirs, Dirichlet weights
    aisles = _leaf_at(core, rng.integers(N, size=(S, cfg.taste_aisles))) // F
    aisle = aisles[np.arange(S)[:, None], rng.integers(cfg.taste_aisles, size=(S, K))]
    lo, hi = core.leaf_ptr[aisle * F], core.leaf_ptr[(aisle + 1) * F]
    taste = _leaf_at(core, lo + (rng.random((S, K)) * (hi - lo)).astype(np.int64))
    taste_cum = np.cumsum(rng.dirichlet(np.ones(K), S), axis=1)

    staples = np.full((S, 0), -1, np.int64)
    if cfg.staples:
        pick = _categorical(np.repeat(taste_cum, cfg.staples, axis=0), rng.random(S * cfg.staples))
        leaf = taste[np.repeat(np.arange(S), cfg.staples), pick]
        staples = _draw(core, stock, leaf, np.repeat(home, cfg.staples), np.zeros(leaf.size, np.int64), rng)
        staples = staples.reshape(S, cfg.staples)

    # orders and their drawn items
    session_user = np.repeat(np.arange(S), orders)
    session_ts = np.arange(session_user.size) - np.repeat(np.cumsum(orders) - orders, orders) + 1
    basket = rng.integers(cfg.basket_min, cfg.basket_max + 1, session_user.size)
    session = np.repeat(np.arange(session_user.size), basket)
    user, ts = session_user[session], session_ts[session]
    item = np.full(session.size, -1, np.int64)
    if cfg.staples:
        staple = staples[user, rng.integers(cfg.staples, size=session.size)]
        use = (rng.random(session.size) < staple_rate[user]) & (staple >= 0)
        item[use] = staple[use]
    browse = np.flatnonzero(item < 0)
    u = rng.random((3, browse.size))
    leaf = np.where(u[0] < cfg.explore, _leaf_at(core, (u[1] * N).astype(np.int64)),
                    taste[user[browse], _categorical(taste_cum[user[browse]], u[2])])
    item[browse] = _draw(core, stock, leaf, home[user[browse]], ts[browse], rng)

    # partner products join right after the product that brings them
    mate = _partner(core, partner, item)
    bring = np.flatnonzero((rng.random(item.size) < cfg.pair_rate) & (mate >= 0))
    ok = stock.has(home[user[bring]], mate[bring]) & (core.first_seen[mate[bring]] <= ts[bring])
    joined = np.full(item.size, -1, np.int64)
    joined[bring[ok]] = mate[bring[ok]]
    item = np.stack([item, joined], axis=1).reshape(-1)
    session = np.repeat(session, 2)
    keep = item >= 0
    item, session = item[keep], session[keep]
    first = np.sort(np.unique(session * N + item, return_index=True)[1])  # a product once per order
    item, session = item[first], session[first]
    position = np.arange(session.size) - np.searchsorted(session, session, side="left") + 1
    user = session_user[session]
    return {"user": user, "session": session, "ts": session_ts[session], "item": item, "position": position,
            "retailer": home[user]}


def _leaf_at(core: CatalogCore, slot: np.ndarray) -> np.ndarray:
    """Leaf of positions in leaf order (a uniform position picks a leaf by its size)."""
    return np.searchsorted(core.leaf_ptr, slot, side="right") - 1


def _categorical(cum: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Row-wise draw from cumulative weights (n, K) with uniforms (n,)."""
    return np.minimum((u[:, None] > cum).sum(axis=1), cum.shape[1] - 1)


def _draw(core: CatalogCore, stock: StockBits, leaf: np.ndarray, retailer: np.ndarray, ts: np.ndarray,
          rng: np.random.Generator) -> np.ndarray:
    """A product of each leaf by popularity that the retailer beside it stocks and that is launched by ``ts``;
    -1 where TRIES draws found none."""
    out = np.full(leaf.size, -1, np.int64)
    todo = np.flatnonzero(core.leaf_size[leaf] > 0)
    for _ in range(TRIES):
        if not todo.size:
            break
        first, end = core.leaf_ptr[leaf[todo]], core.leaf_ptr[leaf[todo] + 1]
        lo, hi = core.pop_cum[first], core.pop_cum[end]
        pos = np.searchsorted(core.pop_cum, lo + rng.random(todo.size) * (hi - lo), side="right") - 1
        product = core.by_leaf[np.clip(pos, first, end - 1)].astype(np.int64)
        ok = stock.has(retailer[todo], product) & (core.first_seen[product] <= ts[todo])
        out[todo[ok]] = product[ok]
        todo = todo[~ok]
    return out


def _partner(core: CatalogCore, partner: np.ndarray, item: np.ndarray) -> np.ndarray:
    """The partner product of each product (-1 for -1, or where the partner leaf is empty)."""
    out = np.full(item.size, -1, np.int64)
    has = np.flatnonzero(item >= 0)
    leaf = core.leaf[item[has]]
    mate_leaf = partner[leaf]
    size = core.leaf_size[mate_leaf]
    rank = core.slot[item[has]] - core.leaf_ptr[leaf]
    ok = size > 0
    out[has[ok]] = core.by_leaf[core.leaf_ptr[mate_leaf[ok]] + rank[ok] % size[ok]]
    return out
