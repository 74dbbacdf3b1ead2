"""Candidate sources: which products a query puts in front of the ranker, each as (query, position) pairs of
products its retailer stocks (positions of ``index.catalog_view.CatalogView``, or of the pair forest it
stands in for: the same lists).

- ``beam``: the products of the SIDs the decoder's constrained beam search wrote (the generator);
- ``again``: the shopper's own most recent distinct purchases (re-buys: most of a grocery cart);
- ``co``: the products co-purchase statistics rank highest for the history (``CoPurchaseMemory.reach``:
  the memorisation channel item-kNN has and a SID decoder lacks).

New products reach lists through the cold-start slots after ranking (``index.candidates.mix_cold``): the
ranker trains on validation targets, where a product launched after training never appears, so it could
only learn to bury them."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from index.catalog_view import ProductLists, stocked_ranges


def beam_source(forest: ProductLists, rows: np.ndarray, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decoded token rows [B, W, D] (-1 rows dead) -> (query, position, beam rank) of their products that
    the query's retailer stocks."""
    batch, width, depth = rows.shape
    flat = rows.reshape(-1, depth)
    beam_slots = np.repeat(slots, width)
    leaf = forest.leaves(np.maximum(flat, 0), beam_slots)
    leaf[flat[:, 0] < 0] = -1
    lo, hi = forest.leaf_items(leaf)
    beam, pos = stocked_ranges(forest, lo, hi, beam_slots)
    return beam // width, pos, beam % width


def again_source(forest: ProductLists, histories: list[np.ndarray], slots: np.ndarray,
                 top: int) -> tuple[np.ndarray, np.ndarray]:
    """Each history's ``top`` most recent distinct products that its retailer stocks."""
    query, items = [], []
    for b, h in enumerate(histories):
        recent = h[::-1]
        _, first = np.unique(recent, return_index=True)
        keep = recent[np.sort(first)][:top]
        query.append(np.full(keep.size, b, np.int64))
        items.append(keep)
    return _stocked(forest, slots, _cat(query), _cat(items))


def co_source(forest: ProductLists, reach: sp.csr_matrix, ranks: np.ndarray, reach_items: np.ndarray,
              slots: np.ndarray, top: int) -> tuple[np.ndarray, np.ndarray]:
    """Each query's ``top`` products by co-purchase similarity to its history (``reach``: [B, n] over
    ``reach_items``; ``ranks``: ``row_ranks(reach)``), of those its retailer stocks."""
    keep = np.flatnonzero(ranks <= top)
    row = np.repeat(np.arange(reach.shape[0]), np.diff(reach.indptr))
    return _stocked(forest, slots, row[keep], reach_items[reach.indices[keep]])


def row_ranks(reach: sp.csr_matrix) -> np.ndarray:
    """The rank of each stored entry of ``reach`` within its row, 1 = the largest (aligned with ``data``)."""
    row = np.repeat(np.arange(reach.shape[0]), np.diff(reach.indptr))
    order = np.lexsort((-reach.data, row))
    ranks = np.empty(reach.data.size)
    ranks[order] = np.arange(order.size) - reach.indptr[row[order]] + 1
    return ranks


def _stocked(forest: ProductLists, slots: np.ndarray, query: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (query, position) pairs of ``items`` that each query's slot holds."""
    pos, found = forest.positions(slots[query], items)
    return query[found], pos[found]


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
