"""The catalog of a generated world at scale: a department > aisle > leaf taxonomy named from the grocery
vocabulary, products (leaf, popularity, launch, title, brand), clustered product vectors, and which
retailer stocks what. Per-product state is a few flat arrays (about 30 bytes a product); strings, vectors
and stock rows are made a chunk at a time, drawn per fixed block so that chunking never changes them."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from genrec.data.synth.scale_config import (CENTRES, CORE, ORDER, RETAILERS, STOCK, TAXONOMY, TEXT, VECTORS,
                                            ScaleConfig, blocks, stream)
from genrec.data.synth.vocab import Taxonomy, grocery_taxonomy
from semid.catalog import ITEMS_SCHEMA


@dataclass
class ScaleTaxonomy:
    """Leaves numbered aisle-major (leaf l lies in aisle l // leaves_per_aisle), each taking its words from a
    leaf of the hand-written vocabulary; names repeat with a number ("hard cheese 3") so every name is unique."""

    names: pa.Array  # departments, then aisles, then leaves: what category_path values are taken from
    path_text: pa.Array  # (L,) "department > aisle > leaf"
    departments: int
    aisles: int
    leaves: int
    words: dict[str, pa.Array]  # brand, modifier (plain, then the organic ones), noun, size
    word_range: dict[str, np.ndarray]  # name -> (L, 2) [offset, count] of each leaf's words in ``words[name]``
    organic_ok: np.ndarray  # (L,) whether the leaf's products come in organic variants

    def aisle_of(self, leaf: np.ndarray) -> np.ndarray:
        return leaf // (self.leaves // self.aisles)

    def department_of(self, leaf: np.ndarray) -> np.ndarray:
        return leaf // (self.leaves // self.departments)


def scale_taxonomy(cfg: ScaleConfig) -> ScaleTaxonomy:
    """departments x aisles_per_department x leaves_per_aisle categories, cycling through the vocabulary's
    departments, each department's aisles and each aisle's leaves."""
    vocab = grocery_taxonomy()
    vocab_aisles = [[a for a, (_, d) in enumerate(vocab.aisles) if d == vd] for vd in range(len(vocab.departments))]
    vocab_leaves = [[k for k, lf in enumerate(vocab.leaves) if lf.aisle == a] for a in range(len(vocab.aisles))]
    level_names: list[list[str]] = [[], [], []]
    template, dept_template = [], []
    seen: list[Counter] = [Counter(), Counter(), Counter()]

    def name(level: int, base: str) -> None:
        seen[level][base] += 1
        level_names[level].append(base if seen[level][base] == 1 else f"{base} {seen[level][base]}")

    for d in range(cfg.departments):
        vd = d % len(vocab.departments)
        name(0, vocab.departments[vd].name)
        for j in range(cfg.aisles_per_department):
            va = vocab_aisles[vd][j % len(vocab_aisles[vd])]
            name(1, vocab.aisles[va][0])
            for k in range(cfg.leaves_per_aisle):
                template.append(vocab_leaves[va][k % len(vocab_leaves[va])])
                dept_template.append(vd)
                name(2, vocab.leaves[template[-1]].name)
    depts, aisles, leaves = level_names
    leaf_dept = np.arange(len(leaves)) // (cfg.aisles_per_department * cfg.leaves_per_aisle)
    leaf_aisle = np.arange(len(leaves)) // cfg.leaves_per_aisle
    path_text = [f"{depts[d]} > {aisles[a]} > {lf}" for d, a, lf in zip(leaf_dept, leaf_aisle, leaves)]
    words, word_range = _words(vocab, np.array(template), np.array(dept_template))
    organic_ok = np.array([vocab.departments[vd].organic_ok for vd in dept_template], dtype=bool)
    return ScaleTaxonomy(pa.array(depts + aisles + leaves, pa.string()), pa.array(path_text, pa.string()),
                         len(depts), len(aisles), len(leaves), words, word_range, organic_ok)


def _words(vocab: Taxonomy, template: np.ndarray, dept_template: np.ndarray) -> tuple[dict, dict]:
    """Flat word tables and each leaf's [offset, count] in them: brands of its vocabulary department, modifiers,
    nouns and sizes of its vocabulary leaf. Organic modifiers follow the plain ones, one for one."""
    tables: dict[str, list[str]] = {"brand": [], "modifier": [], "noun": [], "size": []}
    per_vocab: dict[str, list[tuple[int, int]]] = {k: [] for k in tables}
    for dept in vocab.departments:
        pool = [f"{a} {b}" for a in dept.brand_first for b in dept.brand_second]
        per_vocab["brand"].append((len(tables["brand"]), len(pool)))
        tables["brand"] += pool
    for leaf in vocab.leaves:
        for key, pool in (("modifier", leaf.modifiers), ("noun", leaf.nouns), ("size", leaf.sizes)):
            per_vocab[key].append((len(tables[key]), len(pool)))
            tables[key] += pool
    tables["modifier"] += [f"Organic {m}" for m in tables["modifier"]]
    ranges = {k: np.array(v, dtype=np.int64)[dept_template if k == "brand" else template] for k, v in per_vocab.items()}
    return {k: pa.array(v, pa.string()) for k, v in tables.items()}, ranges


@dataclass
class CatalogCore:
    """Per-product arrays held for the whole catalog (products are 0..N-1; item_id is the index + 1)."""

    leaf_ptr: np.ndarray  # (L + 1,) products of leaf l are by_leaf[leaf_ptr[l]:leaf_ptr[l + 1]]
    by_leaf: np.ndarray  # (N,) int32 products in leaf order (a random order within a leaf)
    slot: np.ndarray  # (N,) int32 each product's position in by_leaf
    leaf: np.ndarray  # (N,) int32 leaf of each product
    log_pop: np.ndarray  # (N,) float32 log popularity
    first_seen: np.ndarray  # (N,) int32 order number a product launches at (0: from the start)
    pop_cum: np.ndarray  # (N + 1,) float64 cumulative popularity along by_leaf (weighted draws within a leaf)

    @property
    def leaf_size(self) -> np.ndarray:
        return np.diff(self.leaf_ptr)


def catalog_core(cfg: ScaleConfig, tax: ScaleTaxonomy) -> CatalogCore:
    """Leaf sizes (log-normal weights, a multinomial over the catalog), a random placement of products in leaves
    (item ids do not follow the taxonomy), then popularity and launch per block."""
    n = cfg.products
    rng = stream(cfg, TAXONOMY)
    weight = rng.lognormal(0.0, cfg.leaf_size_sigma, tax.leaves)
    leaf_ptr = np.concatenate([[0], np.cumsum(rng.multinomial(n, weight / weight.sum()))]).astype(np.int64)
    by_leaf = stream(cfg, ORDER).permutation(n).astype(np.int32)
    slot = np.empty(n, np.int32)
    slot[by_leaf] = np.arange(n, dtype=np.int32)
    leaf = (np.searchsorted(leaf_ptr, slot, side="right") - 1).astype(np.int32)
    log_pop = np.empty(n, np.float32)
    first_seen = np.zeros(n, np.int32)
    for b, s, e in blocks(cfg, 0, n):
        r = stream(cfg, CORE, b)
        log_pop[s:e] = r.normal(0.0, cfg.popularity_sigma, e - s)
        late = r.random(e - s) < cfg.late_fraction
        first_seen[s:e] = np.where(late, r.integers(cfg.late_first, cfg.late_last + 1, e - s), 0)
    pop_cum = np.concatenate([[0.0], np.cumsum(np.exp(log_pop[by_leaf].astype(np.float64)))])
    return CatalogCore(leaf_ptr, by_leaf, slot, leaf, log_pop, first_seen, pop_cum)


def items_chunk(cfg: ScaleConfig, tax: ScaleTaxonomy, core: CatalogCore, start: int, stop: int) -> pa.Table:
    """items.parquet rows of products ``start:stop``: title "Brand [Organic] Modifier Noun Size" from the leaf's
    words, text as the small world writes it (title, brand, category path), category_path root to leaf."""
    idx = {k: [] for k in tax.words}
    for b, s, e in blocks(cfg, start, stop):
        u = stream(cfg, TEXT, b).random((5, e - s))
        leaf = core.leaf[s:e]
        for row, key in enumerate(("brand", "modifier", "noun", "size")):
            off, count = tax.word_range[key][leaf].T
            draw = u[row] ** 2 if key == "brand" else u[row]  # a department's first brands sell most
            pick = off + np.minimum((draw * count).astype(np.int64), count - 1)
            if key == "modifier":
                pick += (tax.organic_ok[leaf] & (u[4] < cfg.organic_share)) * (len(tax.words["modifier"]) // 2)
            idx[key].append(pick)
    brand, modifier, noun, size = (pc.take(tax.words[k], pa.array(np.concatenate(idx[k]))) for k in idx)
    title = pc.binary_join_element_wise(brand, modifier, noun, size, " ")
    leaf = core.leaf[start:stop].astype(np.int64)
    text = pc.binary_join_element_wise(title, ". Brand: ", brand, ". Category: ",
                                       pc.take(tax.path_text, pa.array(leaf)), ".", "")
    nodes = np.stack([tax.department_of(leaf), tax.departments + tax.aisle_of(leaf),
                      tax.departments + tax.aisles + leaf], axis=1).reshape(-1)
    path = pa.ListArray.from_arrays(pa.array(np.arange(0, nodes.size + 1, 3, dtype=np.int32)),
                                    pc.take(tax.names, pa.array(nodes)))
    return pa.Table.from_arrays(
        [pa.array(np.arange(start, stop, dtype=np.int64) + 1), title, text, brand, path,
         pa.array(core.first_seen[start:stop].astype(np.int64))], schema=ITEMS_SCHEMA)


def leaf_centres(cfg: ScaleConfig) -> np.ndarray:
    """(L, dim) centres: department centres around the origin, aisle centres around their department's, leaf
    centres around their aisle's (each level's per-dimension spread from the config)."""
    rng = stream(cfg, CENTRES)
    dept = rng.normal(0.0, cfg.department_spread, (cfg.departments, cfg.dim))
    aisle = np.repeat(dept, cfg.aisles_per_department, axis=0)
    aisle += rng.normal(0.0, cfg.aisle_spread, aisle.shape)
    leaf = np.repeat(aisle, cfg.leaves_per_aisle, axis=0)
    return leaf + rng.normal(0.0, cfg.leaf_spread, leaf.shape)


def vectors_chunk(cfg: ScaleConfig, core: CatalogCore, centres: np.ndarray, start: int, stop: int) -> np.ndarray:
    """float32 (stop - start, dim) L2-normalised product vectors: the leaf centre plus Gaussian noise."""
    out = np.empty((stop - start, cfg.dim), np.float32)
    for b, s, e in blocks(cfg, start, stop):
        x = centres[core.leaf[s:e]] + stream(cfg, VECTORS, b).normal(0.0, cfg.noise, (e - s, cfg.dim))
        out[s - start:e - start] = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return out


@dataclass
class Retailers:
    """Each retailer's share of the catalog and its leaning toward departments."""

    coverage: np.ndarray  # (R,) share of the catalog stocked, in [coverage_min, coverage_max]
    affinity: np.ndarray  # (R, departments) log-odds added to the department's products


def make_retailers(cfg: ScaleConfig) -> Retailers:
    rng = stream(cfg, RETAILERS)
    return Retailers(rng.uniform(cfg.coverage_min, cfg.coverage_max, cfg.retailers),
                     rng.normal(0.0, cfg.stock_department_spread, (cfg.retailers, cfg.departments)))


def retailer_stock(cfg: ScaleConfig, tax: ScaleTaxonomy, core: CatalogCore, shops: Retailers, r: int) -> np.ndarray:
    """Products retailer ``r`` stocks, ascending: in every block exactly its share of the block (rounded so that
    the catalog total is round(coverage * N)), chosen without replacement with weights
    exp(stock_popularity * log popularity + the retailer's department affinity) (Gumbel top-k)."""
    out = []
    c = shops.coverage[r]
    for b, s, e in blocks(cfg, 0, cfg.products):
        k = int(np.rint(c * e) - np.rint(c * s))
        if k <= 0:
            continue
        if k >= e - s:
            out.append(np.arange(s, e))
            continue
        score = (cfg.stock_popularity * core.log_pop[s:e] + shops.affinity[r, tax.department_of(core.leaf[s:e])]
                 + stream(cfg, STOCK, r, b).gumbel(size=e - s))
        out.append(s + np.sort(np.argpartition(-score, k - 1)[:k]))
    return np.concatenate(out) if out else np.zeros(0, np.int64)


class StockBits:
    """Which retailer stocks which product as one bit each: (R, ceil(N / 8)) bytes."""

    def __init__(self, retailers: int, products: int) -> None:
        self.bits = np.zeros((retailers, -(-products // 8)), np.uint8)
        self.products = products

    def set(self, r: int, products: np.ndarray) -> None:
        row = np.zeros(self.products, bool)
        row[products] = True
        self.bits[r] = np.packbits(row)

    def has(self, retailers: np.ndarray, products: np.ndarray) -> np.ndarray:
        """Whether each retailer stocks the product beside it."""
        return ((self.bits[retailers, products >> 3] >> (7 - (products & 7))) & 1).astype(bool)
