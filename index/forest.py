"""Every retailer's stock, and the whole catalog, as one prefix-trie forest: a row ``[slot, *SID tokens]``
per (retailer, stocked product) pair plus one per catalog product in slot 0. A query for a retailer starts
decoding at its slot's depth-1 node, so a batch that mixes retailers is one beam search and each query can
still only spell SIDs its retailer stocks. Products are grouped by forest leaf, most popular first."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from index.trie import PrefixTrie

CATALOG_SLOT = 0  # slot of "no retailer": the whole catalog; retailer i (ascending) has slot i + 1
START_DEPTH = 1  # a query starts at its slot's node, one token below the forest's root


@dataclass(frozen=True)
class TrieStart:
    """Where each query of a batch starts decoding: ``nodes`` [B] at ``depth`` of ``trie`` (-1 where the
    query's retailer stocks nothing). Pass them to ``constrained_beam_search(start=, start_depth=)``."""

    trie: PrefixTrie
    nodes: torch.Tensor  # [B] int64
    depth: int


@dataclass
class StockForest:
    """The forest trie and the products under each of its leaves; positions index ``item_ids``."""

    trie: PrefixTrie
    slot_nodes: np.ndarray  # [n_slots] depth-1 node of each slot, -1 where the slot holds nothing
    item_ids: np.ndarray  # (slot, product) pairs in leaf order, by popularity (desc) then id within a leaf
    popularity: np.ndarray
    sids: np.ndarray
    leaf_start: np.ndarray  # [n_leaves + 1]: leaf j holds positions leaf_start[j]:leaf_start[j+1]
    catalog_ids: np.ndarray  # the catalog at build time, ascending (pair keys use positions in it)
    pair_keys: np.ndarray  # sorted slot * n_catalog + catalog position of every pair
    pair_pos: np.ndarray  # the position of each pair key's product
    sid_order: np.ndarray  # catalog positions sorted by SID string (lookups by SID)
    sorted_sids: np.ndarray  # the catalog's SID strings in that order
    cold_positions: np.ndarray  # ascending positions of pairs whose product is new (``build``)
    catalog_rows: np.ndarray  # [n_catalog, D] SID token rows of the catalog, in ``catalog_ids`` order
    catalog_pos: np.ndarray  # catalog position of each pair's product

    @property
    def depth(self) -> int:
        """Tokens per product row (the forest is one deeper: the slot)."""
        return self.trie.depth - START_DEPTH

    @classmethod
    def build(
        cls,
        ids: np.ndarray,
        rows: np.ndarray,
        popularity: np.ndarray,
        sids: np.ndarray,
        stock: np.ndarray,
        retailers: np.ndarray,
        vocab_size: int | None,
        established: np.ndarray,
    ) -> "StockForest":
        """From the catalog (ascending ``ids`` with their token rows, popularity, SID strings, established
        flags) and the stock pairs (retailer_id, item_id) of the known ``retailers`` (ascending). New products
        (the cold-start pool): no training interactions and not ``established`` (listed before the log began)."""
        slot = np.concatenate([np.full(ids.size, CATALOG_SLOT), 1 + np.searchsorted(retailers, stock[:, 0])])
        idx = np.concatenate([np.arange(ids.size), np.searchsorted(ids, stock[:, 1])])
        n_slots = 1 + retailers.size
        trie = PrefixTrie.forest(slot, rows[idx], n_slots, vocab_size)
        leaf = trie.walk(np.column_stack([slot, rows[idx]])).numpy()
        order = np.lexsort((ids[idx], -popularity[idx], leaf))
        idx, leaf, slot = idx[order], leaf[order], slot[order]
        keys = slot * max(ids.size, 1) + idx
        key_order = np.argsort(keys, kind="stable")
        sid_text = sids.astype(str)
        sid_order = np.argsort(sid_text, kind="stable")
        return cls(
            trie=trie,
            slot_nodes=trie.group_nodes(np.arange(n_slots)).numpy(),
            item_ids=ids[idx],
            popularity=popularity[idx],
            sids=sids[idx],
            leaf_start=np.searchsorted(leaf, np.arange(trie.n_leaves + 1)),
            catalog_ids=ids,
            pair_keys=keys[key_order],
            pair_pos=key_order,
            sid_order=sid_order,
            sorted_sids=sid_text[sid_order],
            cold_positions=np.flatnonzero((popularity[idx] == 0) & ~established[idx]),
            catalog_rows=rows,
            catalog_pos=idx,
        )

    def start(self, slots: np.ndarray) -> TrieStart:
        """The decoding start of queries in ``slots``."""
        return TrieStart(self.trie, torch.from_numpy(self.slot_nodes[slots]), START_DEPTH)

    def leaves(self, rows: np.ndarray, slots: np.ndarray) -> np.ndarray:
        """Forest leaf of each product token row under its slot (-1 where that slot does not hold it)."""
        return self.trie.walk(rows, self.slot_nodes[slots], START_DEPTH).numpy()

    def path(self, rows: np.ndarray, slot: int | np.ndarray) -> np.ndarray:
        """Nodes along each row under its slot (one for all rows, or one per row): [n, D+1], column c a node
        at forest depth c + 1."""
        starts = np.empty(rows.shape[0], np.int64)
        starts[:] = self.slot_nodes[slot]
        return self.trie.path(rows, starts, START_DEPTH).numpy()

    def leaf_items(self, leaf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Half-open position ranges of forest leaves (empty for -1)."""
        ok = leaf >= 0
        safe = np.where(ok, leaf, 0)
        return np.where(ok, self.leaf_start[safe], 0), np.where(ok, self.leaf_start[safe + 1], 0)

    def subtree_items(self, depth: int, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Half-open position ranges of the products under forest ``nodes`` at ``depth`` (all >= 0)."""
        starts = self.trie.leaf_start[depth].numpy()
        return self.leaf_start[starts[nodes]], self.leaf_start[starts[nodes + 1]]

    def rows_at(self, positions: np.ndarray) -> np.ndarray:
        """SID token rows [n, D] of the products at forest ``positions``."""
        return self.catalog_rows[self.catalog_pos[positions]]

    def slot_items(self, slot: int) -> tuple[int, int]:
        """Half-open position range of the products ``slot`` holds (empty when it holds none)."""
        node = self.slot_nodes[slot]
        if node < 0:
            return 0, 0
        lo, hi = self.subtree_items(START_DEPTH, np.array([node]))
        return int(lo[0]), int(hi[0])

    def stocked(self, slots: np.ndarray | int, positions: np.ndarray) -> np.ndarray:
        """All True: a slot's ranges hold only its own pairs (the interface of ``index.catalog_view``)."""
        return np.ones(np.broadcast_shapes(np.shape(slots), np.shape(positions)), bool)

    def cold_of(self, slot: int) -> np.ndarray:
        """Ascending positions of the new products ``slot`` holds."""
        lo, hi = np.searchsorted(self.cold_positions, self.slot_items(slot))
        return self.cold_positions[lo:hi]

    def positions(self, slots: np.ndarray, item_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Position of each (slot, product) pair and whether the slot holds that product."""
        n = self.catalog_ids.size
        found = np.zeros(item_ids.size, bool)
        pos = np.zeros(item_ids.size, np.int64)
        if not n or not self.pair_keys.size:
            return pos, found
        cat = np.searchsorted(self.catalog_ids, item_ids).clip(max=n - 1)
        known = self.catalog_ids[cat] == item_ids
        keys = slots * n + cat
        at = np.searchsorted(self.pair_keys, keys).clip(max=self.pair_keys.size - 1)
        found = known & (self.pair_keys[at] == keys)
        pos[found] = self.pair_pos[at[found]]
        return pos, found

    def sid_positions(self, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Catalog position of the product with each SID string and whether there is one."""
        pos = np.zeros(wanted.size, np.int64)
        if not self.sorted_sids.size:
            return pos, np.zeros(wanted.size, bool)
        at = np.searchsorted(self.sorted_sids, wanted).clip(max=self.sorted_sids.size - 1)
        found = self.sorted_sids[at] == wanted
        pos[found] = self.sid_order[at[found]]
        return pos, found
