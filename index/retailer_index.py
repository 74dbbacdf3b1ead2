"""SID -> products, partitioned by retailer. The index holds the catalog (item id, token row, SID string,
popularity) and which retailer stocks what; for each retailer (and for the whole catalog) it lazily builds
a partition: a prefix trie over the token rows it stocks, so decoding for that retailer can only spell
SIDs it stocks, and the products under each SID ranked by popularity. Adding or removing products or
stock only marks the partitions it touches as stale: the next query rebuilds them, no retraining."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from index.trie import PrefixTrie
from semid.catalog import DataError, read_json

FORMAT = "genrec-retailer-index"
FORMAT_VERSION = 1
ALL = None  # partition key of the whole catalog

ITEMS_FILE, STOCK_FILE, META_FILE = "items.parquet", "stock.parquet", "index.json"


@dataclass
class Candidates:
    """K products per query, best first. ``scores`` are the SID log-probs for products from decoded SIDs;
    filled products (``from_beam`` False) score below all of them, one unit lower per token of prefix
    they do not share, so the order is total. Missing slots (fewer than K products) hold item -1."""

    item_ids: np.ndarray  # [B, K] int64
    scores: np.ndarray  # [B, K] float64
    sids: np.ndarray  # [B, K] object: SID strings, "" where empty
    from_beam: np.ndarray  # [B, K] bool


@dataclass
class _Partition:
    """One retailer's (or the whole catalog's) trie and its products grouped by trie leaf."""

    trie: PrefixTrie
    item_ids: np.ndarray  # products in leaf order, by popularity (desc) then id within a leaf
    popularity: np.ndarray
    sids: np.ndarray
    leaf_start: np.ndarray  # [n_leaves + 1]: the products of leaf j are item_ids[leaf_start[j]:leaf_start[j+1]]
    id_order: np.ndarray  # argsort of item_ids, to find a product's position


class RetailerIndex:
    """Catalog + stock with per-retailer tries; verbs: add, remove, lookup, trie_for, candidates, save,
    load. ``retailer_id=None`` everywhere means the whole catalog."""

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
        self._sids = np.zeros(0, object)
        self._stock = np.zeros((0, 2), np.int64)  # (retailer_id, item_id), sorted, unique
        self._retailers = np.zeros(0, np.int64)  # every retailer ever given stock
        self._parts: dict[int | None, _Partition] = {}

    # ----- size and contents ----------------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self._ids.size)

    def __repr__(self) -> str:
        return (
            f"RetailerIndex(items={len(self)}, retailers={self._retailers.size}, stock={len(self._stock)}, "
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
        return self._stock[self._stock[:, 0] == key, 1].copy()

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
    ) -> None:
        """Add or update products (rows are required for products not yet in the catalog) and, with
        ``retailer_ids`` (one per row, or one for all), record that those retailers stock them. Popularity
        and SID strings are kept when not given (0 and the joined token ids for new products)."""
        ids = _int_array(item_ids, "item_ids")
        n = ids.size
        rows = None if token_rows is None else self._check_rows(token_rows, n)
        pop = None if popularity is None else _broadcast(popularity, n, np.float64, "popularity")
        sid = None if sids is None else _broadcast(sids, n, object, "sids")
        uniq, last = _last_occurrence(ids)
        if rows is not None:
            _check_consistent(ids, rows, uniq, last)
        self._merge_catalog(
            uniq,
            None if rows is None else rows[last],
            None if pop is None else pop[last],
            None if sid is None else sid[last],
        )
        if retailer_ids is not None:
            self._add_stock(_broadcast(retailer_ids, n, np.int64, "retailer_ids"), ids)

    def remove(self, item_ids: Sequence[int] | np.ndarray, retailer_id: int | None = None) -> int:
        """Remove products from the catalog (retailer_id None, with all their stock) or only from one
        retailer's stock; returns how many products or stock entries went. Unknown ids are ignored."""
        ids = np.unique(_int_array(item_ids, "item_ids"))
        if retailer_id is None:
            gone = np.isin(self._ids, ids)
            stock_gone = np.isin(self._stock[:, 1], ids)
            self._forget(np.unique(self._stock[stock_gone, 0]), catalog=bool(gone.any()))
            self._ids, self._rows = self._ids[~gone], self._rows[~gone]
            self._pop, self._sids = self._pop[~gone], self._sids[~gone]
            self._stock = self._stock[~stock_gone]
            return int(gone.sum())
        key = self._key(retailer_id)
        gone = (self._stock[:, 0] == key) & np.isin(self._stock[:, 1], ids)
        if gone.any():
            self._forget(np.array([key]), catalog=False)
            self._stock = self._stock[~gone]
        return int(gone.sum())

    # ----- queries ---------------------------------------------------------------------------------------

    def trie_for(self, retailer_id: int | None = None) -> PrefixTrie:
        """The prefix trie of what ``retailer_id`` stocks (the whole catalog for None)."""
        return self._partition(retailer_id).trie

    def lookup(
        self, keys: np.ndarray | torch.Tensor | Sequence[str], retailer_id: int | None = None
    ) -> list[np.ndarray]:
        """Per token row (or SID string): the products under it that ``retailer_id`` stocks, best first;
        an empty array where there are none."""
        part = self._partition(retailer_id)
        rows = self._rows_for_keys(keys)
        if rows.shape[0] == 0:
            return []
        leaf = part.trie.walk(rows).numpy()
        lo, hi = _leaf_items(part, leaf)
        return [part.item_ids[a:b].copy() for a, b in zip(lo.tolist(), hi.tolist())]

    def candidates(
        self,
        decoded_token_rows: np.ndarray | torch.Tensor,
        scores: np.ndarray | torch.Tensor,
        k: int,
        retailer_id: int | None = None,
        exclude_items: Sequence[Sequence[int] | np.ndarray | None] | None = None,
    ) -> Candidates:
        """Decoded SIDs [B, R, L+1] with their log-probs [B, R] -> K products per query: the products of each
        SID in score order (popularity within an SID), then, when short of K, products from the nearest SID
        prefixes (longest shared prefix first, then popularity). ``exclude_items``: per query, products
        never to return (e.g. the history)."""
        part = self._partition(retailer_id)
        decoded, sc = _as_decoded(decoded_token_rows, scores, part.trie.depth)
        if k < 1:
            raise DataError(f"candidates: k must be >= 1, got {k}")
        batch = decoded.shape[0]
        banned = _banned_keys(part, exclude_items, batch)
        q, pos, item_sc = _beam_items(part, decoded, sc, banned, k)
        out = _empty_candidates(batch, k)
        rank = np.arange(q.size) - np.searchsorted(q, q)
        _place(out, part, q, rank, pos, item_sc, from_beam=True)
        counts = np.bincount(q, minlength=batch)
        for b in np.flatnonzero(counts < k):
            taken = pos[q == b]
            base = float(item_sc[q == b].min()) if taken.size else 0.0
            _fill(out, part, b, decoded[b], taken, banned, k, base)
        return out

    # ----- persistence -------------------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write the index to folder ``path``: items.parquet, stock.parquet and index.json."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        width = self._rows.shape[1]
        offsets = pa.array(np.arange(self._ids.size + 1) * width, pa.int32())
        tokens = pa.ListArray.from_arrays(offsets, pa.array(self._rows.reshape(-1), pa.int32()))
        items = pa.table(
            {
                "item_id": pa.array(self._ids, pa.int64()),
                "tokens": tokens,
                "sid": pa.array(self._sids.tolist(), pa.string()),
                "popularity": pa.array(self._pop, pa.float64()),
            }
        )
        stock = pa.table(
            {"retailer_id": pa.array(self._stock[:, 0], pa.int32()), "item_id": pa.array(self._stock[:, 1], pa.int64())}
        )
        _replace(path / ITEMS_FILE, lambda tmp: pq.write_table(items, tmp))
        _replace(path / STOCK_FILE, lambda tmp: pq.write_table(stock, tmp))
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "codebook_version": self.codebook_version,
            "tokens_per_item": self.tokens_per_item,
            "vocab_size": self.vocab_size,
            "retailers": self._retailers.tolist(),
            "n_items": len(self),
        }
        _replace(path / META_FILE, lambda tmp: tmp.write_text(json.dumps(meta, indent=2) + "\n"))
        return path

    @classmethod
    def load(cls, path: str | Path, codebook_version: str | None = None) -> "RetailerIndex":
        """Read a saved index; with ``codebook_version`` the recorded one must match."""
        path = Path(path)
        meta = _read_meta(path / META_FILE)
        if codebook_version is not None and meta.get("codebook_version") != codebook_version:
            raise DataError(
                f"{path / META_FILE}: index was built for codebook version {meta.get('codebook_version')!r}, "
                f"not {codebook_version!r}"
            )
        index = cls(meta.get("tokens_per_item"), meta.get("vocab_size"), meta.get("codebook_version"))
        items = _read_parquet(path / ITEMS_FILE, ["item_id", "tokens", "sid", "popularity"])
        stock = _read_parquet(path / STOCK_FILE, ["retailer_id", "item_id"])
        if items.num_rows:
            rows = _token_matrix(items.column("tokens"), path / ITEMS_FILE)
            index.add(
                items.column("item_id").to_numpy(),
                rows,
                popularity=items.column("popularity").to_numpy(),
                sids=np.asarray(items.column("sid").to_pylist(), dtype=object),
            )
        if stock.num_rows:
            index.add(stock.column("item_id").to_numpy(), retailer_ids=stock.column("retailer_id").to_numpy())
        index._retailers = np.union1d(index._retailers, np.asarray(meta.get("retailers", []), np.int64))
        if len(index) != meta.get("n_items"):
            raise DataError(f"{path / META_FILE}: records {meta.get('n_items')} items, {ITEMS_FILE} holds {len(index)}")
        return index

    # ----- internals ---------------------------------------------------------------------------------------

    def _check_rows(self, token_rows: np.ndarray | torch.Tensor, n: int) -> np.ndarray:
        """Token rows as int64 [n, L+1], fixing L+1 on first use."""
        if isinstance(token_rows, torch.Tensor):
            token_rows = token_rows.detach().cpu().numpy()
        rows = np.asarray(token_rows)
        if rows.ndim != 2 or rows.shape[0] != n or (rows.size and not np.issubdtype(rows.dtype, np.integer)):
            raise DataError(f"index.add: token_rows must be integers of shape ({n}, L+1), got {rows.shape} {rows.dtype}")
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

    def _merge_catalog(
        self, ids: np.ndarray, rows: np.ndarray | None, pop: np.ndarray | None, sid: np.ndarray | None
    ) -> None:
        """Update known products in place and append new ones (kept sorted by id)."""
        pos, found = self._find(ids)
        new = ~found
        if new.any() and rows is None:
            raise DataError(f"index.add: token_rows are required for new products, e.g. {ids[new][:5].tolist()}")
        changed = rows is not None or pop is not None or sid is not None
        if changed and found.any():
            stocked = np.isin(self._stock[:, 1], ids[found])
            self._forget(np.unique(self._stock[stocked, 0]), catalog=True)
        if rows is not None:
            self._rows[pos[found]] = rows[found]
            if sid is None:
                self._sids[pos[found]] = _default_sids(rows[found])
        if pop is not None:
            self._pop[pos[found]] = pop[found]
        if sid is not None:
            self._sids[pos[found]] = sid[found]
        if new.any():
            self._forget(np.zeros(0, np.int64), catalog=True)
            new_sid = _default_sids(rows[new]) if sid is None else sid[new]
            new_pop = np.zeros(int(new.sum())) if pop is None else pop[new]
            ids_all = np.concatenate([self._ids, ids[new]])
            order = np.argsort(ids_all, kind="stable")
            self._ids = ids_all[order]
            self._rows = np.concatenate([self._rows, rows[new]])[order]
            self._pop = np.concatenate([self._pop, new_pop])[order]
            self._sids = np.concatenate([self._sids, new_sid])[order]

    def _add_stock(self, retailers: np.ndarray, ids: np.ndarray) -> None:
        """Record (retailer, product) pairs; the products must be in the catalog."""
        _, found = self._find(ids)
        if not found.all():
            raise DataError(f"index.add: stock for unknown products, e.g. {ids[~found][:5].tolist()}")
        pairs = np.unique(np.concatenate([self._stock, np.stack([retailers, ids], axis=1)]), axis=0)
        touched = np.unique(retailers)
        self._forget(touched, catalog=False)
        self._stock = pairs
        self._retailers = np.union1d(self._retailers, touched)

    def _forget(self, retailers: np.ndarray, catalog: bool) -> None:
        """Drop cached partitions that an update makes stale (the whole-catalog one when ``catalog``)."""
        for r in retailers.tolist():
            self._parts.pop(int(r), None)
        if catalog:
            self._parts.pop(ALL, None)
        if not self._retailers.size:  # without stock every retailer is served by the whole catalog
            self._parts.clear()

    def _key(self, retailer_id: int | None) -> int | None:
        """Partition key: None for the whole catalog (also when no stock was ever recorded, meaning every
        retailer stocks everything); an unknown retailer otherwise is an error."""
        if retailer_id is None or not self._retailers.size:
            return ALL
        key = int(retailer_id)
        if not np.isin(key, self._retailers):
            raise DataError(f"index: unknown retailer {key} (known: {self._retailers[:10].tolist()}...)")
        return key

    def _partition(self, retailer_id: int | None) -> _Partition:
        """The partition of ``retailer_id``, rebuilt if an update made it stale."""
        key = self._key(retailer_id)
        part = self._parts.get(key)
        if part is None:
            part = self._build(key)
            self._parts[key] = part
        return part

    def _build(self, key: int | None) -> _Partition:
        """Trie and leaf-grouped, popularity-ranked products of one partition."""
        if self.tokens_per_item is None:
            raise DataError("index: empty (no products added yet)")
        if key is ALL:
            idx = np.arange(self._ids.size)
        else:
            idx = np.searchsorted(self._ids, self._stock[self._stock[:, 0] == key, 1])
        rows = self._rows[idx]
        trie = PrefixTrie(rows, vocab_size=self.vocab_size)
        leaf = trie.walk(rows).numpy()
        order = np.lexsort((self._ids[idx], -self._pop[idx], leaf))
        idx, leaf = idx[order], leaf[order]
        ids = self._ids[idx]
        return _Partition(
            trie=trie,
            item_ids=ids,
            popularity=self._pop[idx],
            sids=self._sids[idx],
            leaf_start=np.searchsorted(leaf, np.arange(trie.n_leaves + 1)),
            id_order=np.argsort(ids, kind="stable"),
        )

    def _rows_for_keys(self, keys: np.ndarray | torch.Tensor | Sequence[str]) -> np.ndarray:
        """Token rows from rows or SID strings (an unknown SID gets a -1 row, which matches nothing)."""
        if isinstance(keys, torch.Tensor):
            keys = keys.detach().cpu().numpy()
        arr = np.asarray(keys, dtype=object if _is_strings(keys) else None)
        if arr.dtype == object:
            wanted = arr.astype(str).reshape(-1)
            rows = np.full((wanted.size, self.tokens_per_item or 0), -1, np.int64)
            if not self._sids.size:
                return rows
            order = np.argsort(self._sids.astype(str), kind="stable")
            sorted_sids = self._sids.astype(str)[order]
            pos = np.searchsorted(sorted_sids, wanted).clip(max=sorted_sids.size - 1)
            found = sorted_sids[pos] == wanted
            rows[found] = self._rows[order[pos[found]]]
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


def _leaf_items(part: _Partition, leaf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Half-open product ranges of trie leaves (empty for -1)."""
    ok = leaf >= 0
    safe = np.where(ok, leaf, 0)
    return np.where(ok, part.leaf_start[safe], 0), np.where(ok, part.leaf_start[safe + 1], 0)


def _as_decoded(
    decoded: np.ndarray | torch.Tensor, scores: np.ndarray | torch.Tensor, depth: int
) -> tuple[np.ndarray, np.ndarray]:
    """Decoded rows [B, R, D] int64 and scores [B, R] float64, checked."""
    d = decoded.detach().cpu().numpy() if isinstance(decoded, torch.Tensor) else np.asarray(decoded)
    s = scores.detach().cpu().numpy() if isinstance(scores, torch.Tensor) else np.asarray(scores)
    if d.ndim != 3 or d.shape[2] != depth or s.shape != d.shape[:2]:
        raise DataError(
            f"candidates: expected decoded rows [B, R, {depth}] and scores [B, R], got {d.shape} and {s.shape}"
        )
    return d.astype(np.int64, copy=False), s.astype(np.float64, copy=False)


def _banned_keys(part: _Partition, exclude: Sequence | None, batch: int) -> np.ndarray:
    """Sorted keys query * n + position of every excluded product this partition holds."""
    if exclude is None:
        return np.zeros(0, np.int64)
    if len(exclude) != batch:
        raise DataError(f"candidates: exclude_items has {len(exclude)} entries for {batch} queries")
    sizes = np.array([0 if e is None else len(e) for e in exclude], np.int64)
    if not sizes.sum():
        return np.zeros(0, np.int64)
    ids = np.concatenate([_int_array(e, "exclude_items") for e in exclude if e is not None and len(e)])
    query = np.repeat(np.arange(batch), sizes)
    n = part.item_ids.size
    at = np.searchsorted(part.item_ids[part.id_order], ids).clip(max=max(n - 1, 0))
    hit = (part.item_ids[part.id_order[at]] == ids) if n else np.zeros(ids.size, bool)
    return np.unique(query[hit] * n + part.id_order[at[hit]])


def _beam_items(
    part: _Partition, decoded: np.ndarray, scores: np.ndarray, banned: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Products of the decoded SIDs, per query in score order, de-duplicated, minus banned, at most k:
    (query, position in the partition, score), sorted by query."""
    batch, width, depth = decoded.shape
    leaf = part.trie.walk(decoded.reshape(-1, depth)).numpy()
    flat_sc = scores.reshape(-1)
    leaf[~np.isfinite(flat_sc)] = -1
    lo, hi = _leaf_items(part, leaf)
    counts = hi - lo
    total = int(counts.sum())
    pos = np.repeat(lo, counts) + np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    q = np.repeat(np.arange(batch * width) // width, counts)
    sc = np.repeat(flat_sc, counts)
    order = np.lexsort((np.arange(total), -sc, q))  # by query, best score first, then as listed
    q, pos, sc = q[order], pos[order], sc[order]
    key = q * part.item_ids.size + pos
    _, first = np.unique(key, return_index=True)
    keep = np.zeros(total, bool)
    keep[first] = True
    keep &= ~np.isin(key, banned)
    q, pos, sc = q[keep], pos[keep], sc[keep]
    rank = np.arange(q.size) - np.searchsorted(q, q)
    keep = rank < k
    return q[keep], pos[keep], sc[keep]


def _empty_candidates(batch: int, k: int) -> Candidates:
    return Candidates(
        item_ids=np.full((batch, k), -1, np.int64),
        scores=np.full((batch, k), -np.inf),
        sids=np.full((batch, k), "", dtype=object),
        from_beam=np.zeros((batch, k), bool),
    )


def _place(
    out: Candidates,
    part: _Partition,
    q: np.ndarray,
    slot: np.ndarray,
    pos: np.ndarray,
    scores: np.ndarray,
    from_beam: bool,
) -> None:
    """Write products (partition positions) into the output slots."""
    out.item_ids[q, slot] = part.item_ids[pos]
    out.scores[q, slot] = scores
    out.sids[q, slot] = part.sids[pos]
    out.from_beam[q, slot] = from_beam


def _fill(
    out: Candidates,
    part: _Partition,
    b: int,
    decoded: np.ndarray,
    taken: np.ndarray,
    banned: np.ndarray,
    k: int,
    base: float,
) -> None:
    """Complete query ``b`` to k products from the subtrees of its decoded SIDs' prefixes, deepest first,
    most popular first within a depth."""
    n = part.item_ids.size
    depth = part.trie.depth
    path = part.trie.path(decoded).numpy()  # [R, D+1]; the root is always on it
    skip = np.union1d(taken, banned[(banned >= b * n) & (banned < (b + 1) * n)] - b * n)
    filled = taken.size
    for d in range(depth - 1, -1, -1):
        nodes = np.unique(path[:, d][path[:, d] >= 0])
        if not nodes.size:
            continue
        starts = part.trie.leaf_start[d].numpy()
        lo, hi = part.leaf_start[starts[nodes]], part.leaf_start[starts[nodes + 1]]
        pos = np.concatenate([np.arange(a, z) for a, z in zip(lo.tolist(), hi.tolist())])
        pos = pos[~np.isin(pos, skip)]
        if not pos.size:
            continue
        pos = pos[np.lexsort((part.item_ids[pos], -part.popularity[pos]))][: k - filled]
        slots = np.arange(filled, filled + pos.size)
        _place(out, part, np.full(pos.size, b), slots, pos, np.full(pos.size, base - (depth - d)), False)
        filled += pos.size
        skip = np.union1d(skip, pos)
        if filled >= k:
            return


def _token_matrix(column: pa.ChunkedArray, path: Path) -> np.ndarray:
    """A list<int> column whose lists all have the same length -> int64 matrix."""
    arr = column.combine_chunks()
    lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
    if arr.null_count or lengths.min() != lengths.max() or lengths[0] < 1:
        raise DataError(f"{path}: column 'tokens' must hold one non-empty list of equal length per product")
    return arr.flatten().to_numpy(zero_copy_only=False).astype(np.int64).reshape(len(arr), int(lengths[0]))


def _replace(path: Path, write: Callable[[Path], object]) -> None:
    """Write a file under a temporary name, then rename it into place (a reader never sees half a file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _read_meta(path: Path) -> dict:
    """index.json, checked."""
    meta = read_json(path, "index metadata")
    if meta.get("format") != FORMAT:
        raise DataError(f"{path}: not a {FORMAT} file")
    if meta.get("format_version") != FORMAT_VERSION:
        raise DataError(f"{path}: index format version {meta.get('format_version')} is not supported")
    return meta


def _read_parquet(path: Path, columns: list[str]) -> pa.Table:
    """A parquet file with the named columns, or a DataError."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    table = pq.read_table(path)
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise DataError(f"{path}: missing columns {missing}")
    return table
