"""Shoppers with latent tastes: a home retailer, preferences over departments and leaves, a favourite brand
per department with a loyalty strength, an organic leaning, and the staples they rebuy. Also the one
place that turns a taste into a product choice: log weight = popularity + loyalty if the favourite brand
+ organic leaning if organic."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from genrec.data.synth.catalog import Catalog
from genrec.data.synth.config import SynthConfig, stream

_TASTES, _STAPLES = 4, 5  # random stream ids
_CHUNK = 1 << 18  # candidate cells scored at once (bounds memory for large worlds)


@dataclass
class Shoppers:
    """Latent tastes as arrays indexed by shopper 0..U-1 (public user_id = index + 1)."""

    home: np.ndarray  # (U,) home retailer (0 when there are no retailers)
    organic: np.ndarray  # (U,) bool: prefers organic products
    organic_logit: np.ndarray  # (U,) log weight added to organic products (+ for organic shoppers, - else)
    loyalty: np.ndarray  # (U,) log weight added to the shopper's favourite brand of a department
    favourite: np.ndarray  # (U, D) favourite brand per department
    leaf_cdf: np.ndarray  # (U, L) cumulative leaf preference, over leaves the home retailer carries
    staple_rate: np.ndarray  # (U,) per-order chance of rebuying each staple
    staples: np.ndarray  # (U, K) staple product indices in draw order, padded with -1


def choose_items(cat: Catalog, sh: Shoppers, users: np.ndarray, leaves: np.ndarray, ts: np.ndarray,
                 rng: np.random.Generator) -> np.ndarray:
    """For each (shopper, leaf, order number), draw one product of that leaf that the shopper's home
    retailer stocks and that has launched, by the shopper's weights (Gumbel-max); -1 where none qualifies.
    Works leaf by leaf so each draw scores only its own leaf's products."""
    out = np.full(users.size, -1, dtype=np.int64)
    order = np.argsort(leaves, kind="stable")
    bounds = np.searchsorted(leaves[order], np.arange(cat.leaf_ptr.size))
    for leaf in np.flatnonzero(np.diff(bounds)):
        cand = cat.by_leaf[cat.leaf_ptr[leaf]:cat.leaf_ptr[leaf + 1]]
        if cand.size == 0:
            continue
        rows = order[bounds[leaf]:bounds[leaf + 1]]
        step = max(1, _CHUNK // cand.size)
        for lo in range(0, rows.size, step):
            e = rows[lo:lo + step]
            out[e] = _gumbel_pick(cat, sh, users[e], ts[e], cand, rng)
    return out


def _gumbel_pick(cat: Catalog, sh: Shoppers, users: np.ndarray, ts: np.ndarray, cand: np.ndarray,
                 rng: np.random.Generator) -> np.ndarray:
    """One draw per shopper among products ``cand`` of a single leaf (so of a single department)."""
    u = users[:, None]
    fav = sh.favourite[users, cat.department[cand[0]]][:, None] == cat.brand[cand]
    logit = cat.popularity[cand] + sh.loyalty[u] * fav + sh.organic_logit[u] * cat.organic[cand]
    ok = cat.stocked[sh.home[u], cand] & (cat.first_seen[cand] <= ts[:, None])
    score = np.where(ok, logit + rng.gumbel(size=ok.shape), -np.inf)
    best = score.argmax(axis=1)
    rows = np.arange(users.size)
    return np.where(ok[rows, best], cand[best], -1)


def sample_leaves(sh: Shoppers, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw one leaf per entry of ``users`` from that shopper's leaf preference (inverse CDF, vectorised)."""
    n_leaves = sh.leaf_cdf.shape[1]
    flat = (sh.leaf_cdf + np.arange(sh.leaf_cdf.shape[0])[:, None]).ravel()
    r = np.minimum(rng.random(users.size), 1.0 - 1e-9)
    idx = np.searchsorted(flat, users + r, side="right") - users * n_leaves
    return np.clip(idx, 0, n_leaves - 1)


def _dirichlet_rows(rng: np.random.Generator, shape: np.ndarray, rows: int) -> np.ndarray:
    """``rows`` unnormalised Dirichlet draws (gamma variates) with per-column shape, floored above zero."""
    return np.maximum(rng.gamma(shape, size=(rows, shape.size)), 1e-30)


def _leaf_preferences(cfg: SynthConfig, cat: Catalog, home: np.ndarray,
                      rng: np.random.Generator) -> np.ndarray:
    """(U, L) leaf preference: a department mix times a mix within each department, restricted to leaves the
    home retailer carries."""
    tax = cat.taxonomy
    n_dept, n_leaf = len(tax.departments), len(tax.leaves)
    leaf_dept = np.array([lf.department for lf in tax.leaves])
    dept_pop = rng.dirichlet(np.full(n_dept, 4.0))
    dept = _dirichlet_rows(rng, cfg.department_concentration * n_dept * dept_pop, cfg.users)
    dept /= dept.sum(axis=1, keepdims=True)
    leaf_pop = rng.lognormal(0.0, 0.5, n_leaf)
    per_dept = np.bincount(leaf_dept, weights=leaf_pop, minlength=n_dept)
    size = np.bincount(leaf_dept, minlength=n_dept)
    within = _dirichlet_rows(rng, cfg.leaf_concentration * leaf_pop / per_dept[leaf_dept] * size[leaf_dept],
                             cfg.users)
    onehot = np.eye(n_dept)[leaf_dept]
    within /= (within @ onehot)[:, leaf_dept]
    carried = np.zeros((cat.stocked.shape[0], n_leaf), dtype=bool)
    r, i = np.nonzero(cat.stocked)
    carried[r, cat.leaf[i]] = True
    pref = dept[:, leaf_dept] * within * carried[home]
    return pref / np.maximum(pref.sum(axis=1, keepdims=True), 1e-300)


def make_shoppers(cfg: SynthConfig, cat: Catalog) -> Shoppers:
    """Draw every shopper's latent taste, then their staples from it."""
    rng = stream(cfg, _TASTES)
    n_ret = cat.stocked.shape[0]
    home = rng.choice(n_ret, size=cfg.users, p=rng.dirichlet(np.full(n_ret, 4.0)))
    organic = rng.random(cfg.users) < cfg.organic_shoppers
    organic_logit = np.where(organic, 1.0, -1.0) * np.log(cfg.organic_pull)
    loyalty = rng.beta(1.5, 1.5, cfg.users) * np.log(cfg.loyalty_max)
    favourite = _favourite_brands(cfg, cat, home, rng)
    pref = _leaf_preferences(cfg, cat, home, rng)
    cdf = np.cumsum(pref, axis=1)
    cdf /= np.maximum(cdf[:, -1:], 1e-300)
    staple_rate = rng.uniform(cfg.staple_rate_min, cfg.staple_rate_max, cfg.users)
    sh = Shoppers(home, organic, organic_logit, loyalty, favourite, cdf, staple_rate,
                  np.empty((cfg.users, 0), dtype=np.int64))
    sh.staples = _staples(cfg, cat, sh)
    return sh


def _favourite_brands(cfg: SynthConfig, cat: Catalog, home: np.ndarray,
                      rng: np.random.Generator) -> np.ndarray:
    """(U, D) favourite brand per department: one of its national brands or the home retailer's store
    brand."""
    n_dept = len(cat.taxonomy.departments)
    fav = np.empty((cfg.users, n_dept), dtype=np.int64)
    for d in range(n_dept):
        national = np.flatnonzero(cat.brand_department == d)
        n_opt = national.size + (1 if cfg.retailers else 0)
        pick = rng.integers(0, n_opt, cfg.users)
        store = cat.store_brand[home] if cfg.retailers else np.zeros(cfg.users, dtype=np.int64)
        fav[:, d] = np.where(pick < national.size, national[np.minimum(pick, national.size - 1)], store)
    return fav


def _staples(cfg: SynthConfig, cat: Catalog, sh: Shoppers) -> np.ndarray:
    """(U, staples_max) staples per shopper: products drawn by taste (leaf, then product) among those its
    home retailer stocks from the start, distinct, in draw order; each shopper keeps its own count, the
    rest is -1."""
    rng = stream(cfg, _STAPLES)
    count = rng.integers(cfg.staples_min, cfg.staples_max + 1, cfg.users)
    draws = 2 * cfg.staples_max  # extra draws make up for repeats
    user = np.repeat(np.arange(cfg.users), draws)
    item = choose_items(cat, sh, user, sample_leaves(sh, user, rng), np.zeros(user.size, np.int64), rng)
    ok = np.flatnonzero(item >= 0)
    _, first = np.unique(user[ok] * cat.leaf.size + item[ok], return_index=True)
    keep = ok[np.sort(first)]  # first draw of each distinct (shopper, product), in draw order
    user, item = user[keep], item[keep]
    rank = np.arange(user.size) - np.searchsorted(user, user)
    sel = rank < count[user]
    out = np.full((cfg.users, cfg.staples_max), -1, dtype=np.int64)
    out[user[sel], rank[sel]] = item[sel]
    return out
