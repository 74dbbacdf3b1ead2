"""The catalog seen through the pair forest's interface (``index.forest.StockForest``), without the pairs:
what candidates, cold-start mixing and the rank stage read, in memory that grows with the catalog (a few
arrays of one entry per product) plus the stock bits the index already holds, never with the (retailer,
product) pairs (about 200M at 5M products and 100 retailers: tens of GB as a forest).

Positions are catalog products in (catalog trie leaf, popularity descending, item id) order. Both tries
number their leaves in lexicographic order of the token rows and the forest sorts a leaf's pairs by
popularity then id, so one slot's products come in the forest's order: a list is the forest's list once
the products the slot does not stock are dropped. Ranges (``leaf_items``, ``subtree_items``) and the cold
pool therefore hold the whole catalog's products, and every consumer keeps those its query's slot stocks
(``stocked``); ``positions`` and ``cold_of`` answer for one slot already. Keys are query x n + position
with n the catalog size. Slots are the stock trie's (0 the whole catalog, retailer i in ascending order
i + 1); its node at depth d >= 1 is slot x n_nodes[d - 1] + catalog node (``index.stock_trie``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

import numpy as np

from index.forest import CATALOG_SLOT, StockForest
from index.stock import StockBits
from index.stock_trie import START_DEPTH, StockTrie


@dataclass
class CatalogView:
    """Catalog products in leaf order, the stock trie they decode through and who stocks what."""

    trie: StockTrie  # the decoding trie: paths and leaves under a slot
    stock: StockBits  # the index's stock bits (shared, not copied)
    slot_row: np.ndarray  # [n_slots] bit row of each slot's retailer in ``stock``; -1 for slot 0 or none
    item_ids: np.ndarray  # [n] products in leaf order, by popularity (desc) then id within a leaf
    popularity: np.ndarray  # [n]
    sids: np.ndarray  # [n] SID strings
    leaf_start: np.ndarray  # [n_leaves + 1]: catalog leaf j holds positions leaf_start[j]:leaf_start[j+1]
    catalog_ids: np.ndarray  # the catalog, ascending (shared with the index)
    catalog_rows: np.ndarray  # [n, D] token rows in ``catalog_ids`` order (shared with the index)
    catalog_pos: np.ndarray  # [n] catalog position of the product at each view position
    view_pos: np.ndarray  # [n] view position of each catalog position (``catalog_pos``'s inverse)
    cold_positions: np.ndarray  # ascending positions of new products (``build``), whoever stocks them
    _sid_index: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)  # made on first use

    @classmethod
    def build(cls, trie: StockTrie, stock: StockBits, retailers: np.ndarray, ids: np.ndarray,
              rows: np.ndarray, popularity: np.ndarray, sids: np.ndarray,
              established: np.ndarray) -> "CatalogView":
        """From the stock trie over the catalog (``ids`` ascending with their token ``rows``, popularity,
        SID strings and established flags), the stock bits and the known ``retailers`` (ascending: slot
        i + 1 is ``retailers[i]``). New products (the cold-start pool), as in ``StockForest.build``: no
        training interactions and not ``established``."""
        n = ids.size
        order = np.lexsort((np.arange(n), -popularity, trie.leaf_of_pos))  # ids ascend with the position
        view_pos = np.empty(n, np.int64)
        view_pos[order] = np.arange(n)
        slot_row = np.full(1 + np.asarray(retailers).size, -1, np.int64)
        slot_row[1:] = [stock.row_of(int(r)) for r in np.asarray(retailers).tolist()]
        return cls(
            trie=trie, stock=stock, slot_row=slot_row,
            item_ids=ids[order], popularity=popularity[order], sids=sids[order],
            leaf_start=trie.leaf_first, catalog_ids=ids, catalog_rows=rows, catalog_pos=order,
            view_pos=view_pos, cold_positions=np.flatnonzero((popularity[order] == 0) & ~established[order]),
        )

    @property
    def depth(self) -> int:
        """Tokens per product row."""
        return self.trie.catalog.depth

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays this view adds to the index (the stock trie and the shared catalog arrays
        not counted)."""
        own = (self.slot_row, self.item_ids, self.popularity, self.sids, self.catalog_pos, self.view_pos,
               self.cold_positions, *(self._sid_index or ()))
        return int(sum(a.nbytes for a in own))

    # ----- stock ------------------------------------------------------------------------------------------

    def stocked(self, slots: np.ndarray | int, positions: np.ndarray) -> np.ndarray:
        """Whether each position's product is in its slot's stock (one slot for all or one per position):
        what every consumer of a range (``leaf_items``, ``subtree_items``) keeps."""
        slots, positions = np.asarray(slots, np.int64), np.asarray(positions, np.int64)
        if slots.ndim == 0:  # one slot: one bit row, no per-position row lookup (the cold pool of a slot)
            row = int(self.slot_row[slots])
            if slots == CATALOG_SLOT or row < 0:
                return np.full(positions.shape, slots == CATALOG_SLOT)
            cat = self.catalog_pos[positions]
            return ((self.stock.bits[row][cat >> 3] >> (cat & 7).astype(np.uint8)) & 1) == 1
        slots, positions = np.broadcast_arrays(slots, positions)
        out = slots == CATALOG_SLOT
        row = self.slot_row[slots]
        some = row >= 0
        cat = self.catalog_pos[positions[some]]
        byte = self.stock.bits[row[some], cat >> 3]
        out[some] = ((byte >> (cat & 7).astype(np.uint8)) & 1) == 1
        return out

    def cold_of(self, slot: int) -> np.ndarray:
        """Ascending positions of the new products ``slot`` stocks."""
        cold = self.cold_positions
        return cold[self.stocked(slot, cold)]

    def positions(self, slots: np.ndarray, item_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Position of each product and whether its slot (one per product) stocks it."""
        n = self.catalog_ids.size
        pos = np.zeros(item_ids.size, np.int64)
        if not n:
            return pos, np.zeros(item_ids.size, bool)
        cat = np.searchsorted(self.catalog_ids, item_ids).clip(max=n - 1)
        known = self.catalog_ids[cat] == item_ids
        found = known & self.stocked(slots, self.view_pos[cat])
        pos[found] = self.view_pos[cat[found]]
        return pos, found

    # ----- the trie -----------------------------------------------------------------------------------------

    def leaves(self, rows: np.ndarray, slots: np.ndarray) -> np.ndarray:
        """Catalog leaf of each product token row under its slot (-1 where that slot stocks none of it)."""
        return self.trie.leaves(rows, slots)

    def path(self, rows: np.ndarray, slot: int | np.ndarray) -> np.ndarray:
        """Stock-trie nodes along each row under its slot (one for all rows, or one per row): [n, D+1],
        column c a node at depth c + 1 (-1 once the slot stocks nothing below)."""
        slots = np.empty(rows.shape[0], np.int64)
        slots[:] = slot
        return self.trie.path(rows, self.trie.start(slots), START_DEPTH).numpy()

    def leaf_items(self, leaf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Half-open position ranges of catalog leaves (empty for -1); filter by ``stocked``."""
        ok = leaf >= 0
        safe = np.where(ok, leaf, 0)
        return np.where(ok, self.leaf_start[safe], 0), np.where(ok, self.leaf_start[safe + 1], 0)

    def subtree_items(self, depth: int, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Half-open position ranges of the catalog products under stock-trie ``nodes`` at ``depth >= 1``
        (all >= 0; depth 1 is a slot's node: the whole catalog); filter by ``stocked``."""
        cat_depth = depth - START_DEPTH
        node = np.asarray(nodes, np.int64) % max(self.trie.catalog.n_nodes[cat_depth], 1)
        starts = self.trie.catalog.leaf_start[cat_depth].numpy()
        return self.leaf_start[starts[node]], self.leaf_start[starts[node + 1]]

    def rows_at(self, positions: np.ndarray) -> np.ndarray:
        """SID token rows [n, D] of the products at ``positions``."""
        return self.catalog_rows[self.catalog_pos[positions]]

    def sid_positions(self, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Catalog position of the product with each SID string and whether there is one (the sorted SIDs
        are made on the first call: a serving process that never looks SIDs up never holds them)."""
        if self._sid_index is None:
            text = self.sids[self.view_pos].astype(str)  # catalog order
            order = np.argsort(text, kind="stable")
            self._sid_index = (order, text[order])
        sid_order, sorted_sids = self._sid_index
        pos = np.zeros(wanted.size, np.int64)
        if not sorted_sids.size:
            return pos, np.zeros(wanted.size, bool)
        at = np.searchsorted(sorted_sids, wanted).clip(max=sorted_sids.size - 1)
        found = sorted_sids[at] == wanted
        pos[found] = sid_order[at[found]]
        return pos, found


# what candidate code reads: the catalog view, or the pair forest it stands in for (old callers, checks)
ProductLists = Union[CatalogView, StockForest]


def stocked_ranges(lists: ProductLists, lo: np.ndarray, hi: np.ndarray, slots: np.ndarray,
                   within: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The positions in the half-open ranges [lo, hi) (of ``within``, e.g. the cold positions, when given)
    that each range's slot stocks: (range index, position) of each, in range order then as listed."""
    counts = hi - lo
    total = int(counts.sum())
    at = np.repeat(lo, counts) + np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    pos = at if within is None else within[at]
    owner = np.repeat(np.arange(lo.size), counts)
    keep = lists.stocked(slots[owner], pos)
    return owner[keep], pos[keep]
