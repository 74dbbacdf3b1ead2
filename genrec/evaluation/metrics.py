"""Ranking metrics for top-K recommendation lists against one target item or a basket of them, and the
quality of the candidates themselves (brand / category diversity, catalog coverage, invalid ids).

Conventions, the same for every model so the table is fair:

- A ranked list is a row of item ids, best first; -1 is padding and never a hit. An item repeated in a
  row counts only at its first position (a list cannot earn twice from one item).
- Targets are a set: an item repeated in a basket counts once. recall@K = hits in the top K / number of
  distinct targets (the share of the basket retrieved); ndcg@K = DCG@K / ideal DCG@K with binary gains,
  discount 1 / log2(rank + 1), ideal = min(K, |targets|) hits at the top.
- An example with no targets (an empty basket, or every target filtered out, e.g. no item new to the
  shopper) has no defined recall: its per-example value is NaN and it is left out of every mean; the
  number of examples that counted is reported beside the means (``count``).
- Ties: when the scores behind each list are given, items with equal scores form a tie group whose order
  is arbitrary, and each metric is its expected value over a uniformly random order of every tie group
  (McSherry & Najork, 2008): a hit in a group spanning ranks a..b earns, at cut-off K, the share of the
  group's ranks that lie inside the top K (recall) and the mean discount over those ranks (DCG). Groups are
  only known inside the returned list, so a group running past the list's end is taken to end there.
  Without scores the list's order is taken as strict.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pyarrow as pa

from semid.common import DataError

PAD_ITEM = -1  # padding in a ranked list


@dataclass
class Targets:
    """Ragged target sets: ``items[offsets[i]:offsets[i+1]]`` are example i's targets."""

    offsets: np.ndarray  # (B + 1,) int64
    items: np.ndarray  # flat int64 item ids

    def __post_init__(self) -> None:
        self.offsets = np.asarray(self.offsets, dtype=np.int64)
        self.items = np.asarray(self.items, dtype=np.int64)
        o = self.offsets
        if o.ndim != 1 or o.size < 1 or o[0] != 0 or (np.diff(o) < 0).any() or o[-1] != self.items.size:
            raise DataError("targets: offsets must start at 0, be non-decreasing and end at the number of items")

    @classmethod
    def from_lists(cls, lists: Sequence[Sequence[int]]) -> "Targets":
        """From a list of target lists (an int per example is one target)."""
        arrays = [np.atleast_1d(np.asarray(t, dtype=np.int64)).reshape(-1) for t in lists]
        lengths = np.array([a.size for a in arrays], dtype=np.int64)
        flat = np.concatenate(arrays) if arrays else np.zeros(0, np.int64)
        return cls(np.r_[0, np.cumsum(lengths)], flat)

    def __len__(self) -> int:
        return int(self.offsets.size - 1)

    @property
    def rows(self) -> np.ndarray:
        """Example index of every flat target."""
        return np.repeat(np.arange(len(self)), np.diff(self.offsets))


def _pair_keys(rows_a: np.ndarray, items_a: np.ndarray, rows_b: np.ndarray, items_b: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """Comparable int64 keys for (row, item) pairs of two collections (items coded densely)."""
    codes, inverse = np.unique(np.concatenate([items_a, items_b]), return_inverse=True)
    n_codes = max(codes.size, 1)
    keys = np.concatenate([rows_a, rows_b]).astype(np.int64) * n_codes + inverse
    return keys[: items_a.size], keys[items_a.size:]


def unique_targets(targets: Targets) -> Targets:
    """The same targets with repeats inside an example removed (first occurrence kept, order kept)."""
    rows = targets.rows
    keys, _ = _pair_keys(rows, targets.items, np.zeros(0, np.int64), np.zeros(0, np.int64))
    _, first = np.unique(keys, return_index=True)
    keep = np.sort(first)
    counts = np.bincount(rows[keep], minlength=len(targets))
    return Targets(np.r_[0, np.cumsum(counts)], targets.items[keep])


def remove_items(targets: Targets, drop: Targets) -> Targets:
    """Targets minus, per example, the items in ``drop`` (e.g. new-to-shopper: drop the shopper's history)."""
    if len(drop) != len(targets):
        raise DataError(f"remove_items: {len(targets)} target rows but {len(drop)} rows to drop")
    rows = targets.rows
    t_keys, d_keys = _pair_keys(rows, targets.items, drop.rows, drop.items)
    keep = ~np.isin(t_keys, d_keys)
    counts = np.bincount(rows[keep], minlength=len(targets))
    return Targets(np.r_[0, np.cumsum(counts)], targets.items[keep])


def keep_items(targets: Targets, allowed: np.ndarray) -> Targets:
    """Targets restricted to the item ids in ``allowed`` (e.g. cold-start items, tail-category items)."""
    keep = np.isin(targets.items, np.asarray(allowed, dtype=np.int64))
    counts = np.bincount(targets.rows[keep], minlength=len(targets))
    return Targets(np.r_[0, np.cumsum(counts)], targets.items[keep])


def hit_matrix(ranked: np.ndarray, targets: Targets) -> np.ndarray:
    """bool [B, L]: ranked[i, j] is one of example i's targets, not padding, and its first occurrence in row i."""
    ranked = _check_ranked(ranked, len(targets))
    b, length = ranked.shape
    flat = ranked.reshape(-1)
    r_rows = np.repeat(np.arange(b), length)
    r_keys, t_keys = _pair_keys(r_rows, flat, targets.rows, targets.items)
    _, first = np.unique(r_keys, return_index=True)
    is_first = np.zeros(flat.size, dtype=bool)
    is_first[first] = True
    hits = np.isin(r_keys, t_keys) & is_first & (flat != PAD_ITEM)
    return hits.reshape(b, length)


def _check_ranked(ranked: np.ndarray, n: int) -> np.ndarray:
    ranked = np.asarray(ranked)
    if ranked.ndim != 2 or ranked.shape[0] != n:
        raise DataError(f"ranked lists: expected a [{n}, K] array, got shape {ranked.shape}")
    if ranked.size and not np.issubdtype(ranked.dtype, np.integer):
        raise DataError(f"ranked lists: item ids must be integers, got {ranked.dtype}")
    return ranked.astype(np.int64, copy=False)


def _discount(n: int) -> np.ndarray:
    """1 / log2(rank + 1) for ranks 1..n."""
    return 1.0 / np.log2(np.arange(2, n + 2, dtype=np.float64))


def _tie_groups(scores: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per position, the first and last position of its tie group (equal consecutive scores in a row)."""
    b, length = scores.shape
    pos = np.broadcast_to(np.arange(length), (b, length))
    new = np.ones((b, length), dtype=bool)
    new[:, 1:] = ~((scores[:, 1:] == scores[:, :-1]) & valid[:, 1:] & valid[:, :-1])
    start = np.maximum.accumulate(np.where(new, pos, 0), axis=1)
    end_marker = np.ones((b, length), dtype=bool)
    end_marker[:, :-1] = new[:, 1:]
    rev = np.where(end_marker, pos, length)[:, ::-1]
    end = np.minimum.accumulate(rev, axis=1)[:, ::-1]
    return start, end


def per_example(ranked: np.ndarray, targets: Targets, k_values: Sequence[int],
                scores: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-example ``recall@K`` and ``ndcg@K`` (float [B], NaN where an example has no targets).

    ``scores`` [B, L] (optional, the scores behind ``ranked``, best first) turns on tie-aware expected
    values; see the module docstring.
    """
    targets = unique_targets(targets)
    hits = hit_matrix(ranked, targets).astype(np.float64)
    b, length = hits.shape
    n_targets = np.diff(targets.offsets).astype(np.float64)
    empty = n_targets == 0
    out: dict[str, np.ndarray] = {}
    for k in k_values:
        if k < 1:
            raise DataError(f"metric cut-off K must be >= 1, got {k}")
        disc = _discount(max(k, 1))
        if scores is None:
            kk = min(k, length)
            hit_k = hits[:, :kk].sum(axis=1)
            dcg = (hits[:, :kk] * disc[:kk]).sum(axis=1)
        else:
            hit_k, dcg = _tie_aware(hits, np.asarray(scores, np.float64), np.asarray(ranked) != PAD_ITEM, k, disc)
        idcg_cum = np.r_[0.0, np.cumsum(disc)]
        idcg = idcg_cum[np.minimum(n_targets, k).astype(np.int64)]
        with np.errstate(invalid="ignore", divide="ignore"):
            out[f"recall@{k}"] = np.where(empty, np.nan, hit_k / np.maximum(n_targets, 1))
            out[f"ndcg@{k}"] = np.where(empty, np.nan, dcg / np.where(idcg > 0, idcg, 1.0))
    return out


def _tie_aware(hits: np.ndarray, scores: np.ndarray, valid: np.ndarray, k: int, disc: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """Expected hits in the top k and expected DCG@k when every tie group is in random order."""
    if scores.shape != hits.shape:
        raise DataError(f"scores: expected shape {hits.shape} like the ranked lists, got {scores.shape}")
    start, end = _tie_groups(scores, valid)
    size = (end - start + 1).astype(np.float64)
    inside = np.clip(np.minimum(end, k - 1) - start + 1, 0, None)  # ranks of the group within the top k
    cum = np.r_[0.0, np.cumsum(disc)]  # cum[j] = sum of discounts of ranks 0..j-1
    lo = np.minimum(start, k)
    hi = np.minimum(end + 1, k)
    mean_disc = (cum[hi] - cum[lo]) / size
    return (hits * inside / size).sum(axis=1), (hits * mean_disc).sum(axis=1)


def summarize(values: dict[str, np.ndarray], mask: np.ndarray | None = None) -> dict[str, float]:
    """Mean of each per-example metric over the examples that have it (and ``mask``), plus ``count``."""
    out: dict[str, float] = {}
    count = 0
    for name, v in values.items():
        keep = ~np.isnan(v) if mask is None else (~np.isnan(v) & mask)
        count = int(keep.sum())
        out[name] = float(v[keep].mean()) if count else float("nan")
    out["count"] = count
    return out


def rank_metrics(ranked: np.ndarray, targets: Targets, k_values: Sequence[int], scores: np.ndarray | None = None,
                 mask: np.ndarray | None = None, prefix: str = "") -> dict[str, float]:
    """Mean recall@K / ndcg@K (keys ``{prefix}recall@K``) over examples with targets, plus ``count``."""
    values = per_example(ranked, targets, k_values, scores)
    summary = summarize(values, mask)
    return {(f"{prefix}{name}" if name != "count" else ("count" if not prefix else f"{prefix}count")): v
            for name, v in summary.items()}


@dataclass
class ItemFacets:
    """Per catalog item its brand and leaf category as dense codes (-1 where unknown), for diversity."""

    item_ids: np.ndarray  # (n,) int64 ascending
    brand: np.ndarray  # (n,) int64 code, -1: no brand
    leaf: np.ndarray  # (n,) int64 code, -1: no category

    @classmethod
    def from_items(cls, items: pa.Table) -> "ItemFacets":
        """From items.parquet: brand (null / empty = unknown) and the last element of category_path."""
        ids = items.column("item_id").to_numpy().astype(np.int64)
        order = np.argsort(ids, kind="stable")
        brand = _codes(items.column("brand").to_pylist() if "brand" in items.column_names else [None] * ids.size)
        paths = items.column("category_path").to_pylist() if "category_path" in items.column_names else []
        leaves = [" > ".join(p) if p else None for p in paths] or [None] * ids.size
        return cls(ids[order], brand[order], _codes(leaves)[order])


def _codes(values: list) -> np.ndarray:
    """Dense integer codes of string values; -1 for None or empty."""
    present = [v for v in values if v]
    uniq = sorted(set(present))
    lookup = {v: i for i, v in enumerate(uniq)}
    return np.array([lookup[v] if v else -1 for v in values], dtype=np.int64)


def candidate_quality(ranked: np.ndarray, facets: ItemFacets, k_values: Sequence[int],
                      allowed: np.ndarray | None = None) -> dict[str, float]:
    """Distinct brands / leaf categories per list in the top K (means), catalog coverage@K (share of the
    catalog recommended to anyone), and invalid-ID rate (non-padding ids outside ``allowed``, default the
    catalog), plus the share of padded slots."""
    ranked = np.asarray(ranked, dtype=np.int64)
    allowed_ids = facets.item_ids if allowed is None else np.unique(np.asarray(allowed, np.int64))
    out: dict[str, float] = {}
    real = ranked != PAD_ITEM
    n_real = int(real.sum())
    pos = np.searchsorted(facets.item_ids, ranked)
    pos_c = np.minimum(pos, facets.item_ids.size - 1)
    known = real & (facets.item_ids[pos_c] == ranked)
    in_allowed = np.isin(ranked, allowed_ids) & real
    out["invalid_rate"] = float((real & ~in_allowed).sum() / n_real) if n_real else 0.0
    out["pad_rate"] = float((~real).mean()) if ranked.size else 0.0
    for k in k_values:
        top = slice(0, min(k, ranked.shape[1]))
        ok = known[:, top]
        out[f"brands@{k}"] = _distinct_per_row(np.where(ok, facets.brand[pos_c[:, top]], -1))
        out[f"categories@{k}"] = _distinct_per_row(np.where(ok, facets.leaf[pos_c[:, top]], -1))
        out[f"coverage@{k}"] = float(np.unique(ranked[:, top][ok]).size / max(facets.item_ids.size, 1))
    return out


def _distinct_per_row(codes: np.ndarray) -> float:
    """Mean number of distinct non-negative codes per row."""
    if codes.size == 0:
        return 0.0
    s = np.sort(codes, axis=1)
    new = np.ones_like(s, dtype=bool)
    new[:, 1:] = s[:, 1:] != s[:, :-1]
    return float(((s >= 0) & new).sum(axis=1).mean())
