"""SID -> products, partitioned by retailer. The index holds the catalog (item id, token row, SID string,
popularity, whether it is established) and which retailer stocks what, as a bit per (retailer, product)
(``index.stock``). Decoding walks the stock trie (``index.stock_trie``: the catalog trie once, plus a bit per
retailer and trie node), so a batch mixing retailers is one beam search in which each query can only spell
SIDs its retailer stocks, in memory that grows with the catalog, not with the (retailer, product) pairs;
candidates, lookups and ranking read the catalog view (``index.catalog_view``: the catalog's products in
trie-leaf order, each list kept to what the query's retailer stocks by the stock bits), which gives the
lists the pair forest (``index.forest``, a trie row per stock pair; ``stock_forest``, for checks and old
callers) gives. ``trie_for`` builds one retailer's own trie on request (for checks and tools). Adding or
removing products or stock drops what is built: the next query rebuilds it, no retraining."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from index.candidates import Candidates, as_decoded, rank_candidates
from index.catalog_view import CatalogView, stocked_ranges
from index.cold import ColdRanker
from index.forest import CATALOG_SLOT, StockForest, TrieStart
from index.persistence import ITEMS_FILE, META_FILE, iter_stock, read_index, write_index
from index.stock import StockBits
from index.stock_trie import START_DEPTH as STOCK_START_DEPTH
from index.stock_trie import StockTrie
from index.trie import PrefixTrie
from semid.common import DataError

__all__ = ["Candidates", "RetailerIndex", "TrieStart"]

ALL = None  # key of the whole catalog


class RetailerIndex:
    """Catalog + stock, decoded through the stock trie and listed through the catalog view; verbs: add,
    remove, lookup, trie_for, start_for, candidates, save, load. ``retailer_id=None`` everywhere means the
    whole catalog."""

    def __init__(
        self,
        tokens_per_item: int | None = None,
        vocab_size: int | None = None,
        codebook_version: str | None = None,
    ) -> None:
        self.tokens_per_item = tokens_per_item  # L+1; set by the first add when None
        self.vocab_size = vocab_size  # token ids must be below it; None = no check
        self.codebook_version = codebook_version
        self._ids = np.zeros(0, np.int64)  # catalog, sorted by item id
        self._rows = np.zeros((0, tokens_per_item or 0), np.int64)
        self._pop = np.zeros(0, np.float64)
        self._established = np.zeros(0, bool)  # listed before the log began: unpopular, not new
        self._sids = np.zeros(0, object)
        self._stock = StockBits(0)  # who stocks what: a bit per (retailer, catalog position)
        self._retailers = np.zeros(0, np.int64)  # every retailer ever given stock
        self._forest: StockForest | None = None  # built on first use, dropped by every update
        self._stock_trie: StockTrie | None = None  # likewise
        self._view: CatalogView | None = None  # likewise

    # ----- size and contents ----------------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self._ids.size)

    def __repr__(self) -> str:
        return (
            f"RetailerIndex(items={len(self)}, retailers={self._retailers.size}, stock={self._stock.n_pairs}, "
            f"codebook_version={self.codebook_version!r})"
        )

    @property
    def item_ids(self) -> np.ndarray:
        """Every product in the catalog, ascending."""
        return self._ids.copy()

    @property
    def retailers(self) -> np.ndarray:
        """Every retailer that has been given stock, ascending."""
        return self._retailers.copy()

    def stocked(self, retailer_id: int | None = None) -> np.ndarray:
        """The products ``retailer_id`` stocks (the whole catalog for None), ascending."""
        key = self._key(retailer_id)
        if key is ALL:
            return self.item_ids
        return self._ids[self._stock.positions(key)]

    def rows_of(self, item_ids: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Token rows of products (e.g. a history to exclude) and a found mask; unknown ids get -1 rows."""
        ids = _int_array(item_ids, "item_ids")
        pos, found = self._find(ids)
        rows = np.full((ids.size, self._rows.shape[1]), -1, np.int64)
        rows[found] = self._rows[pos[found]]
        return rows, found

    # ----- updates ----------------------------------------------------------------------------------------

    def add(
        self,
        item_ids: Sequence[int] | np.ndarray,
        token_rows: np.ndarray | torch.Tensor | None = None,
        retailer_ids: int | Sequence[int] | np.ndarray | None = None,
        popularity: float | Sequence[float] | np.ndarray | None = None,
        sids: Sequence[str] | np.ndarray | None = None,
        established: bool | Sequence[bool] | np.ndarray | None = None,
    ) -> None:
        """Add or update products (rows are required for products not yet in the catalog) and, with
        ``retailer_ids`` (one per row, or one for all), record that those retailers stock them. Popularity,
        SID strings and ``established`` are kept when not given (0, the joined token ids and False for new
        products). ``established``: listed before the training log began, so a product without training
        interactions is unpopular, not new: it is kept out of the cold-start pool (``mix_cold``)."""
        ids = _int_array(item_ids, "item_ids")
        n = ids.size
        rows = None if token_rows is None else self._check_rows(token_rows, n)
        pop = None if popularity is None else _broadcast(popularity, n, np.float64, "popularity")
        sid = None if sids is None else _broadcast(sids, n, object, "sids")
        est = None if established is None else _broadcast(established, n, bool, "established")
        uniq, last = _last_occurrence(ids)
        if rows is not None:
            _check_consistent(ids, rows, uniq, last)
        self._merge_catalog(
            uniq,
            None if rows is None else rows[last],
            None if pop is None else pop[last],
            None if sid is None else sid[last],
            None if est is None else est[last],
        )
        if retailer_ids is not None:
            self._add_stock(_broadcast(retailer_ids, n, np.int64, "retailer_ids"), ids)

    def remove(self, item_ids: Sequence[int] | np.ndarray, retailer_id: int | None = None) -> int:
        """Remove products from the catalog (retailer_id None, with all their stock) or only from one
        retailer's stock; returns how many products or stock entries went. Unknown ids are ignored."""
        ids = np.unique(_int_array(item_ids, "item_ids"))
        if retailer_id is None:
            gone = np.isin(self._ids, ids)
            self._drop_derived()
            self._ids, self._rows = self._ids[~gone], self._rows[~gone]
            self._pop, self._sids = self._pop[~gone], self._sids[~gone]
            self._established = self._established[~gone]
            self._stock.keep(~gone)
            return int(gone.sum())
        key = self._key(retailer_id)
        if key is ALL:
            return 0
        pos, found = self._find(ids)
        gone = self._stock.clear(key, pos[found])
        if gone:
            self._drop_derived()
        return gone

    # ----- queries ---------------------------------------------------------------------------------------

    def trie_for(self, retailer_id: int | None = None) -> PrefixTrie:
        """The prefix trie of what ``retailer_id`` stocks (the whole catalog for None), built on each call:
        decoding uses the stock trie (``start_for``); this is for checks and tools."""
        return PrefixTrie(self._rows[self._positions(self._key(retailer_id))], vocab_size=self.vocab_size)

    def start_for(self, retailer_ids: Sequence[int | None] | np.ndarray) -> TrieStart:
        """Where each query decodes: one retailer id (None: whole catalog) per query. Pass ``trie``, ``nodes``
        and ``depth`` to ``constrained_beam_search`` as trie, start and start_depth. The trie is the stock
        trie (``index.stock_trie``: the catalog trie once, a bit per retailer and node), which allows exactly
        the tokens the pair forest allows, so the same beams come out, in memory that does not grow with
        the stock pairs."""
        trie = self.stock_trie()
        return TrieStart(trie, trie.start(self._slots(retailer_ids, None)), STOCK_START_DEPTH)

    def stock_trie(self) -> StockTrie:
        """The catalog trie with a bit per (retailer slot, node): what decoding walks (``start_for``)."""
        if self._stock_trie is None:
            if self.tokens_per_item is None:
                raise DataError("index: empty (no products added yet)")
            self._stock_trie = StockTrie.build(self._rows, self._stock, self._retailers, self.vocab_size)
        return self._stock_trie

    def decoded_items(self, decoded_token_rows: np.ndarray | torch.Tensor,
                      retailer_id: int | None | Sequence[int | None] = None) -> np.ndarray:
        """Decoded SIDs [B, R, L+1] -> the most popular product under each that the query's retailer stocks
        ([B, R] item ids, -1 where none), through the stock trie alone (no pair forest): what a catalog of
        millions serves from."""
        rows = np.asarray(decoded_token_rows.cpu() if isinstance(decoded_token_rows, torch.Tensor)
                          else decoded_token_rows, np.int64)
        batch, width = rows.shape[:2]
        trie = self.stock_trie()
        slots = np.repeat(self._slots(retailer_id, batch), width)
        flat = rows.reshape(-1, rows.shape[-1])
        leaf = trie.leaves(np.maximum(flat, 0), slots)
        leaf[(flat < 0).any(axis=1)] = -1
        lo, hi = trie.leaf_positions(leaf)
        out = np.full(leaf.size, -1, np.int64)
        one = hi - lo == 1  # an SID names one product: in stock, since the trie walked it for this slot
        out[one] = self._ids[trie.by_leaf[lo[one]]]
        for i in np.flatnonzero(hi - lo > 1):  # products sharing a token row: the slot's most popular
            pos = trie.by_leaf[lo[i]:hi[i]]
            if slots[i] != CATALOG_SLOT:
                pos = pos[self._stock.has(np.full(pos.size, self._retailers[slots[i] - 1]), pos)]
            if pos.size:
                best = pos[np.lexsort((self._ids[pos], -self._pop[pos]))[0]]
                out[i] = self._ids[best]
        return out.reshape(batch, width)

    def catalog_view(self) -> CatalogView:
        """The catalog's products in stock-trie leaf order with the stock bits (``index.catalog_view``):
        where candidates, lookups and the rank stage's sources find the products a query's retailer stocks,
        in memory that grows with the catalog, not with the stock pairs."""
        if self._view is None:
            self._view = CatalogView.build(self.stock_trie(), self._stock, self._retailers, self._ids, self._rows,
                                           self._pop, self._sids, self._established)
        return self._view

    def stock_forest(self) -> StockForest:
        """The pair forest over every retailer's stock and the catalog (``index.forest``), one trie row per
        (retailer, product) pair: what the catalog view stands in for, kept for checks and old callers (too
        big for a catalog of millions: ``Retriever`` never builds it)."""
        return self._stock_forest()

    def slots_for(self, retailer_ids: Sequence[int | None] | np.ndarray) -> np.ndarray:
        """The slot of each query's retailer in the stock trie and catalog view (None: the whole catalog); an
        unknown retailer is an error."""
        return self._slots(retailer_ids, None)

    def lookup(
        self,
        keys: np.ndarray | torch.Tensor | Sequence[str],
        retailer_id: int | None | Sequence[int | None] = None,
    ) -> list[np.ndarray]:
        """Per token row (or SID string): the products under it that ``retailer_id`` (one for all keys or
        one per key) stocks, best first; an empty array where there are none."""
        view = self.catalog_view()
        rows = self._rows_for_keys(keys)
        if rows.shape[0] == 0:
            return []
        slots = self._slots(retailer_id, rows.shape[0])
        lo, hi = view.leaf_items(view.leaves(rows, slots))
        key, pos = stocked_ranges(view, lo, hi, slots)
        return np.split(view.item_ids[pos], np.cumsum(np.bincount(key, minlength=rows.shape[0]))[:-1])

    def candidates(
        self,
        decoded_token_rows: np.ndarray | torch.Tensor,
        scores: np.ndarray | torch.Tensor,
        k: int,
        retailer_id: int | None | Sequence[int | None] = None,
        exclude_items: Sequence[Sequence[int] | np.ndarray | None] | None = None,
        cold_share: float = 0.0,
        cold_ranker: ColdRanker | None = None,
        last_rows: np.ndarray | None = None,
    ) -> Candidates:
        """Decoded SIDs [B, R, L+1] with their log-probs [B, R] -> K products per query: the products of each
        SID in score order (popularity within an SID), then, when short of K, products from the nearest SID
        prefixes (longest shared prefix first, then popularity). ``retailer_id``: one for all queries or one
        per query; only products it stocks are returned. ``exclude_items``: per query, products never to
        return (e.g. the history). ``cold_share``: the share of the last slots open to products with no
        training interactions (TIGER's cold-start mixing), nearest the query by SID point with a
        ``cold_ranker`` (``last_rows``: each query's latest history item), else under the decoded prefixes
        (``mix_cold``)."""
        view = self.catalog_view()
        decoded, sc = as_decoded(decoded_token_rows, scores, view.depth)
        return rank_candidates(view, decoded, sc, self._slots(retailer_id, decoded.shape[0]), k, exclude_items,
                               cold_share, cold_ranker, last_rows)

    # ----- persistence -------------------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write the index to folder ``path``: items.parquet, stock.parquet and index.json."""
        meta = {
            "codebook_version": self.codebook_version,
            "tokens_per_item": self.tokens_per_item,
            "vocab_size": self.vocab_size,
            "retailers": self._retailers.tolist(),
            "n_items": len(self),
        }
        return write_index(path, self._ids, self._rows, self._pop, self._sids, self._stock_chunks(), meta,
                           self._established)

    @classmethod
    def load(cls, path: str | Path, codebook_version: str | None = None) -> "RetailerIndex":
        """Read a saved index; with ``codebook_version`` the recorded one must match."""
        files = read_index(path, codebook_version, with_stock=False)
        meta = files.meta
        index = cls(meta.get("tokens_per_item"), meta.get("vocab_size"), meta.get("codebook_version"))
        if files.rows is not None:
            index.add(files.ids, files.rows, popularity=files.popularity, sids=files.sids,
                      established=files.established)
        for pairs in iter_stock(path):  # a chunk at a time: ~200M pairs at 5M products
            if pairs.size:
                index._add_stock(pairs[:, 0], pairs[:, 1])
        index._retailers = np.union1d(index._retailers, np.asarray(meta.get("retailers", []), np.int64))
        if len(index) != meta.get("n_items"):
            raise DataError(f"{Path(path) / META_FILE}: records {meta.get('n_items')} items, {ITEMS_FILE} holds "
                            f"{len(index)}")
        return index

    # ----- internals ---------------------------------------------------------------------------------------

    def _check_rows(self, token_rows: np.ndarray | torch.Tensor, n: int) -> np.ndarray:
        """Token rows as int64 [n, L+1], fixing L+1 on first use."""
        if isinstance(token_rows, torch.Tensor):
            token_rows = token_rows.detach().cpu().numpy()
        rows = np.asarray(token_rows)
        if rows.ndim != 2 or rows.shape[0] != n or (rows.size and not np.issubdtype(rows.dtype, np.integer)):
            raise DataError(
                f"index.add: token_rows must be integers of shape ({n}, L+1), got {rows.shape} {rows.dtype}"
            )
        if self.tokens_per_item is None:
            self.tokens_per_item = int(rows.shape[1])
            self._rows = self._rows.reshape(0, self.tokens_per_item)
        if rows.shape[1] != self.tokens_per_item:
            raise DataError(f"index.add: rows have {rows.shape[1]} tokens, the index holds {self.tokens_per_item}")
        if rows.size and rows.min() < 0:
            raise DataError("index.add: token ids must be >= 0")
        if rows.size and self.vocab_size is not None and rows.max() >= self.vocab_size:
            raise DataError(f"index.add: token id {rows.max()} is outside the vocabulary ({self.vocab_size})")
        return rows.astype(np.int64, copy=False)

    def _find(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Catalog positions of ``ids`` and whether each is there."""
        pos = np.searchsorted(self._ids, ids)
        found = pos < self._ids.size
        found[found] = self._ids[pos[found]] == ids[found]
        return pos, found

    def _merge_catalog(self, ids: np.ndarray, rows: np.ndarray | None, pop: np.ndarray | None,
                       sid: np.ndarray | None, est: np.ndarray | None) -> None:
        """Update known products in place and append new ones (kept sorted by id)."""
        pos, found = self._find(ids)
        new = ~found
        if new.any() and rows is None:
            raise DataError(f"index.add: token_rows are required for new products, e.g. {ids[new][:5].tolist()}")
        if rows is not None or pop is not None or sid is not None or est is not None:
            self._drop_derived()
        if rows is not None:
            self._rows[pos[found]] = rows[found]
            if sid is None:
                self._sids[pos[found]] = _default_sids(rows[found])
        if pop is not None:
            self._pop[pos[found]] = pop[found]
        if sid is not None:
            self._sids[pos[found]] = sid[found]
        if est is not None:
            self._established[pos[found]] = est[found]
        if new.any():
            new_sid = _default_sids(rows[new]) if sid is None else sid[new]
            new_pop = np.zeros(int(new.sum())) if pop is None else pop[new]
            ids_all = np.concatenate([self._ids, ids[new]])
            order = np.argsort(ids_all, kind="stable")
            self._ids = ids_all[order]
            self._stock.remap(ids_all.size, np.argsort(order)[: ids_all.size - int(new.sum())])
            self._rows = np.concatenate([self._rows, rows[new]])[order]
            self._pop = np.concatenate([self._pop, new_pop])[order]
            self._sids = np.concatenate([self._sids, new_sid])[order]
            new_est = np.zeros(int(new.sum()), bool) if est is None else est[new]
            self._established = np.concatenate([self._established, new_est])[order]

    def _add_stock(self, retailers: np.ndarray, ids: np.ndarray) -> None:
        """Record (retailer, product) pairs; the products must be in the catalog."""
        _, found = self._find(ids)
        if not found.all():
            raise DataError(f"index.add: stock for unknown products, e.g. {ids[~found][:5].tolist()}")
        pos, _ = self._find(ids)
        self._drop_derived()
        self._stock.add(retailers, pos)
        self._retailers = np.union1d(self._retailers, retailers)

    def _key(self, retailer_id: int | None) -> int | None:
        """Partition key: None for the whole catalog (also when no stock was ever recorded, meaning every
        retailer stocks everything); an unknown retailer otherwise is an error."""
        if retailer_id is None or not self._retailers.size:
            return ALL
        key = int(retailer_id)
        if not np.isin(key, self._retailers):
            raise DataError(f"index: unknown retailer {key} (known: {self._retailers[:10].tolist()}...)")
        return key

    def _slots(self, retailer_ids: int | None | Sequence[int | None] | np.ndarray, n: int | None) -> np.ndarray:
        """Forest slot per query: one retailer id for all ``n`` queries or one per query (None: the whole
        catalog, also every retailer when no stock was ever recorded); an unknown retailer is an error."""
        if retailer_ids is None or np.isscalar(retailer_ids):
            if n is None:
                raise DataError("index: pass one retailer id per query")
            values = [retailer_ids] * n
        else:
            values = list(retailer_ids)
            if n is not None and len(values) != n:
                raise DataError(f"index: {len(values)} retailer ids for {n} queries")
        whole = np.array([v is None for v in values], bool)
        ids = np.array([0 if v is None else int(v) for v in values], np.int64)
        if not self._retailers.size:
            return np.full(ids.size, CATALOG_SLOT, np.int64)
        pos = np.searchsorted(self._retailers, ids).clip(max=self._retailers.size - 1)
        unknown = ~whole & (self._retailers[pos] != ids)
        if unknown.any():
            self._key(int(ids[unknown][0]))  # raises with the known retailers listed
        return np.where(whole, CATALOG_SLOT, pos + 1)

    def _positions(self, key: int | None) -> np.ndarray:
        """Catalog positions of what partition ``key`` holds, ascending."""
        if self.tokens_per_item is None:
            raise DataError("index: empty (no products added yet)")
        if key is ALL:
            return np.arange(self._ids.size)
        return self._stock.positions(key)

    def _stock_forest(self) -> StockForest:
        """The forest over every retailer's stock and the catalog, rebuilt if an update made it stale."""
        if self._forest is None:
            if self.tokens_per_item is None:
                raise DataError("index: empty (no products added yet)")
            self._forest = StockForest.build(self._ids, self._rows, self._pop, self._sids, self._stock_pairs(),
                                             self._retailers, self.vocab_size, self._established)
        return self._forest

    def _stock_pairs(self) -> np.ndarray:
        """Stock as (retailer_id, item_id) pairs [m, 2], ascending: what the files and the pair forest hold."""
        pairs = self._stock.pairs()
        pairs[:, 1] = self._ids[pairs[:, 1]]
        return pairs

    def _stock_chunks(self):
        """The same pairs, one retailer at a time."""
        for r in self._stock.retailers.tolist():
            pos = self._stock.positions(r)
            yield np.stack([np.full(pos.size, r, np.int64), self._ids[pos]], axis=1)

    def _drop_derived(self) -> None:
        """Forget what is built from the catalog and stock (rebuilt on next use)."""
        self._forest = None
        self._stock_trie = None
        self._view = None

    def _rows_for_keys(self, keys: np.ndarray | torch.Tensor | Sequence[str]) -> np.ndarray:
        """Token rows from rows or SID strings (an unknown SID gets a -1 row, which matches nothing)."""
        if isinstance(keys, torch.Tensor):
            keys = keys.detach().cpu().numpy()
        arr = np.asarray(keys, dtype=object if _is_strings(keys) else None)
        if arr.dtype == object:
            pos, found = self.catalog_view().sid_positions(arr.astype(str).reshape(-1))
            rows = np.full((found.size, self.tokens_per_item or 0), -1, np.int64)
            rows[found] = self._rows[pos[found]]
            return rows
        if arr.ndim != 2 or arr.shape[1] != self.tokens_per_item:
            raise DataError(f"index.lookup: expected token rows (n, {self.tokens_per_item}) or SID strings")
        return arr.astype(np.int64)


# ----- module helpers ---------------------------------------------------------------------------------------


def _int_array(values: Sequence[int] | np.ndarray | torch.Tensor, what: str) -> np.ndarray:
    """A 1-D int64 array, or a DataError naming ``what``."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    arr = np.atleast_1d(np.asarray(values))
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise DataError(f"index: {what} must be a 1-D sequence of integers, got {arr.dtype} {arr.shape}")
    return arr.astype(np.int64, copy=False)


def _broadcast(values: object, n: int, dtype: type, what: str) -> np.ndarray:
    """One value per row (a scalar applies to all rows)."""
    arr = np.asarray(values, dtype=dtype)
    if arr.ndim == 0:
        return np.full(n, arr.item(), dtype=dtype)
    if arr.shape != (n,):
        raise DataError(f"index.add: {what} must have one value per item ({n}), got shape {arr.shape}")
    return arr


def _last_occurrence(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct ids (ascending) and the index of each one's last occurrence."""
    uniq, first_rev = np.unique(ids[::-1], return_index=True)
    return uniq, ids.size - 1 - first_rev


def _check_consistent(ids: np.ndarray, rows: np.ndarray, uniq: np.ndarray, last: np.ndarray) -> None:
    """A product repeated in one call (e.g. stocked by several retailers) must have one token row."""
    where = np.searchsorted(uniq, ids)
    bad = (rows != rows[last][where]).any(axis=1)
    if bad.any():
        raise DataError(f"index.add: product {ids[bad][0]} is given two different token rows")


def _default_sids(rows: np.ndarray) -> np.ndarray:
    """Stand-in SID strings (token ids joined by ``_``) for products added without one."""
    return np.asarray(["_".join(map(str, r)) for r in rows.tolist()], dtype=object)


def _is_strings(keys: object) -> bool:
    """Whether lookup keys are SID strings rather than token rows."""
    if isinstance(keys, str):
        raise DataError("index.lookup: pass a list of SID strings, not a single string")
    if isinstance(keys, np.ndarray):
        return keys.dtype.kind in ("U", "S", "O")
    return len(keys) > 0 and isinstance(next(iter(keys)), str)
