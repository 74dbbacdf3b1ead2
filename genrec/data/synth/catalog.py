"""The synthetic catalog: brands, products named from the taxonomy vocabulary, their popularity and launch
order, and which retailer stocks what."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from genrec.data.synth.config import SynthConfig, stream
from genrec.data.synth.vocab import Leaf, Taxonomy, retailer_name

_BRANDS, _PRODUCTS, _ASSORTMENT = 1, 2, 3  # random stream ids


@dataclass
class Catalog:
    """Products as parallel arrays indexed 0..N-1 (internal index; the public id is ``item_id``)."""

    taxonomy: Taxonomy
    item_id: np.ndarray  # (N,) int64 public ids 1..N, shuffled so they do not follow the taxonomy
    leaf: np.ndarray  # (N,) leaf index
    department: np.ndarray  # (N,) department index
    brand: np.ndarray  # (N,) index into brands
    organic: np.ndarray  # (N,) bool
    owner: np.ndarray  # (N,) retailer whose store brand this is, -1 for national brands
    popularity: np.ndarray  # (N,) log popularity weight (launch boost included)
    first_seen: np.ndarray  # (N,) int64 order number the product launches at (0: from the start)
    titles: list[str]
    brands: list[str]  # national brands first, then one store brand per retailer
    brand_department: np.ndarray  # (B,) department of a national brand, -1 for store brands
    store_brand: np.ndarray  # (R,) brand index of each retailer's store brand
    leaf_ptr: np.ndarray  # (L + 1,) products of leaf l are by_leaf[leaf_ptr[l]:leaf_ptr[l + 1]]
    by_leaf: np.ndarray  # (N,) product indices sorted by leaf
    stocked: np.ndarray  # (max(R, 1), N) bool: which retailer stocks which product

    def text(self, i: int) -> str:
        """What gets embedded: the title, the brand and the category path."""
        return f"{self.titles[i]}. Brand: {self.brands[self.brand[i]]}. Category: {' > '.join(self.path(i))}."

    def path(self, i: int) -> list[str]:
        """Category path (department, aisle, leaf) of product ``i``."""
        return self.taxonomy.path(int(self.leaf[i]))


def make_brands(cfg: SynthConfig, tax: Taxonomy
                ) -> tuple[list[str], np.ndarray, list[np.ndarray], np.ndarray]:
    """National brands per department (names from its word pools), the brands selling in each aisle, and
    one store brand per retailer. Returns names, brand department, aisle brand lists, store brand ids."""
    rng = stream(cfg, _BRANDS)
    names: list[str] = []
    dept_of: list[int] = []
    dept_brands: list[np.ndarray] = []
    for d, dept in enumerate(tax.departments):
        pairs = [f"{a} {b}" for a in dept.brand_first for b in dept.brand_second]
        fresh = [pairs[j] for j in rng.permutation(len(pairs)) if pairs[j] not in names]
        chosen = fresh[: cfg.brands_per_department]
        dept_brands.append(np.arange(len(names), len(names) + len(chosen)))
        names.extend(chosen)
        dept_of.extend([d] * len(chosen))
    aisle_brands = []
    for _, d in tax.aisles:
        pool = dept_brands[d]
        k = min(cfg.brands_per_aisle, pool.size)
        aisle_brands.append(np.sort(rng.choice(pool, size=k, replace=False)))
    store = np.arange(len(names), len(names) + cfg.retailers)
    names.extend(f"{retailer_name(r)} Essentials" for r in range(cfg.retailers))
    dept_of.extend([-1] * cfg.retailers)
    return names, np.array(dept_of, dtype=np.int64), aisle_brands, store


def _leaf_quotas(cfg: SynthConfig, n_leaves: int, rng: np.random.Generator) -> np.ndarray:
    """How many products each leaf gets: every leaf at least one when there are enough products."""
    w = rng.lognormal(0.0, 0.5, n_leaves)
    w /= w.sum()
    if cfg.items >= n_leaves:
        return 1 + rng.multinomial(cfg.items - n_leaves, w)
    chosen = rng.choice(n_leaves, size=cfg.items, replace=False, p=w)
    return np.bincount(chosen, minlength=n_leaves)


def _leaf_products(cfg: SynthConfig, leaf: Leaf, organic_ok: bool, brand_options: np.ndarray,
                   n_store: int, quota: int, rng: np.random.Generator) -> list[tuple[int, str, bool, str]]:
    """Draw ``quota`` distinct (brand, organic, modifier, noun, size) variants for one leaf, weighted so that
    store brands and organic variants come in their configured shares. Returns (brand, suffix-free title
    body, organic, pack suffix) per product."""
    nb, nm, nn, ns, no = brand_options.size, len(leaf.modifiers), len(leaf.nouns), len(leaf.sizes), 2
    n_nat = nb - n_store
    store_share = cfg.store_brand_share if n_store else 0.0  # no retailers: national brands only
    brand_w = np.where(np.arange(nb) < n_nat, (1 - store_share) / n_nat, store_share / max(n_store, 1))
    org_w = np.array([1 - cfg.organic_share, cfg.organic_share]) if organic_ok else np.array([1.0, 0.0])
    clash = np.array([[bool(set(m.lower().split()) & set(n.lower().split())) for n in leaf.nouns]
                      for m in leaf.modifiers])  # "Smoked" + "Smoked Bacon" reads badly
    with np.errstate(divide="ignore"):
        logw = (np.log(brand_w)[:, None, None, None, None] + np.log(org_w)[None, None, None, None, :]
                + np.where(clash, -np.inf, 0.0)[None, :, :, None, None] + np.zeros((nb, nm, nn, ns, no)))
    flat = logw.ravel()
    valid = np.flatnonzero(np.isfinite(flat))
    scores = flat[valid] + rng.gumbel(size=valid.size)
    order = valid[np.argsort(-scores, kind="stable")]
    picks = np.resize(order, quota)  # cycles through the variants again if the leaf runs out
    b, m, n, s, o = np.unravel_index(picks, (nb, nm, nn, ns, no))
    out = []
    for k in range(quota):
        body = " ".join(w for w in ("Organic" if o[k] else "", leaf.modifiers[m[k]], leaf.nouns[n[k]],
                                    leaf.sizes[s[k]]) if w)
        cycle = k // order.size
        out.append((int(brand_options[b[k]]), body, bool(o[k]), f" Multipack x{cycle + 1}" if cycle else ""))
    return out


def make_catalog(cfg: SynthConfig, tax: Taxonomy) -> Catalog:
    """Products for every leaf (names reflect taxonomy, brand and variant), popularity, late launches and
    the retailer assortments."""
    brands, brand_dept, aisle_brands, store = make_brands(cfg, tax)
    rng = stream(cfg, _PRODUCTS)
    quotas = _leaf_quotas(cfg, len(tax.leaves), rng)
    leaf_of, brand_of, organic, titles = [], [], [], []
    for li, (leaf, quota) in enumerate(zip(tax.leaves, quotas)):
        if quota == 0:
            continue
        options = np.concatenate([aisle_brands[leaf.aisle], store])
        organic_ok = tax.departments[leaf.department].organic_ok
        variants = _leaf_products(cfg, leaf, organic_ok, options, store.size, int(quota), rng)
        for b, body, org, suffix in variants:
            leaf_of.append(li)
            brand_of.append(b)
            organic.append(org)
            titles.append(f"{brands[b]} {body}{suffix}")
    n = len(titles)
    leaf_arr = np.array(leaf_of, dtype=np.int64)
    brand_arr = np.array(brand_of, dtype=np.int64)
    owner = np.full(n, -1, dtype=np.int64)
    if store.size:
        is_store = brand_arr >= store[0]
        owner[is_store] = brand_arr[is_store] - store[0]
    popularity = rng.normal(0.0, cfg.popularity_sigma, n)
    first_seen = np.zeros(n, dtype=np.int64)
    late = rng.choice(n, size=int(round(cfg.late_fraction * n)), replace=False)
    first_seen[late] = rng.integers(cfg.late_first, cfg.late_last + 1, size=late.size)
    popularity[late] += np.log(cfg.launch_boost)
    item_id = rng.permutation(n).astype(np.int64) + 1
    department = np.array([lf.department for lf in tax.leaves], dtype=np.int64)[leaf_arr]
    stocked = make_assortment(cfg, department, owner, len(tax.departments))
    leaf_ptr = np.concatenate([[0], np.cumsum(np.bincount(leaf_arr, minlength=len(tax.leaves)))])
    return Catalog(tax, item_id, leaf_arr, department, brand_arr, np.array(organic, dtype=bool), owner,
                   popularity, first_seen, titles, brands, brand_dept, store, leaf_ptr,
                   np.argsort(leaf_arr, kind="stable"), stocked)


def make_assortment(cfg: SynthConfig, department: np.ndarray, owner: np.ndarray, n_depts: int) -> np.ndarray:
    """Which retailer stocks which product: each retailer carries its own share of national brands, varying
    by department, plus its store brand (exclusive to it); a product nobody drew goes to one retailer."""
    n = department.size
    if cfg.retailers == 0:
        return np.ones((1, n), dtype=bool)
    rng = stream(cfg, _ASSORTMENT)
    coverage = rng.uniform(cfg.coverage_min, cfg.coverage_max, cfg.retailers)
    mult = rng.lognormal(0.0, cfg.department_spread, (cfg.retailers, n_depts))
    p = np.clip(coverage[:, None] * mult, 0.05, 1.0)[:, department]
    stocked = (rng.random((cfg.retailers, n)) < p) & (owner < 0)[None, :]
    own = np.flatnonzero(owner >= 0)
    stocked[owner[own], own] = True
    orphans = np.flatnonzero(~stocked.any(axis=0))
    stocked[rng.integers(0, cfg.retailers, orphans.size), orphans] = True
    for r in np.flatnonzero(~stocked.any(axis=1)):  # more retailers than products: give each one something
        stocked[r, rng.integers(0, n)] = True
    return stocked
