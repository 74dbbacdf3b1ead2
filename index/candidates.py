"""Decoded SIDs -> K products per query, for a batch whose queries may each name a different retailer (a slot
of the stock trie): the products of each decoded SID in score order, then, when short of K, products from
the nearest SID prefixes under the query's retailer. Vectorised over the batch except the (rare) filling.

Products are positions of ``index.catalog_view.CatalogView`` (or of the pair forest it stands in for,
``index.forest.StockForest``, which gives the same lists): a leaf's or subtree's range holds the whole
catalog's products there, and each query keeps those its slot stocks (``stocked``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from index.catalog_view import ProductLists, stocked_ranges
from index.cold import ColdRanker, top_cold
from semid.common import DataError


# Which candidate source put a product in a list, as bits (a product several sources proposed has several):
# the decoder's beam, the shopper's own earlier purchases, co-purchase statistics, the new-product slots, and
# the SID-prefix fill of a list the beam left short. ``genrec.rank.candidates`` names them for people.
SOURCE_BEAM, SOURCE_AGAIN, SOURCE_CO, SOURCE_NEW, SOURCE_FILL = 1, 2, 4, 8, 16


@dataclass
class Candidates:
    """K products per query, best first. ``scores`` are the ranker's scores (``genrec.retriever.Candidate``;
    the SID log-probs where nothing re-scores them) for products from decoded SIDs; filled products
    (``from_beam`` False) score below all of them, one unit lower per token of prefix they do not share, so
    the order is total. Missing slots (fewer than K products) hold item -1."""

    item_ids: np.ndarray  # [B, K] int64
    scores: np.ndarray  # [B, K] float64
    sids: np.ndarray  # [B, K] object: SID strings, "" where empty
    from_beam: np.ndarray  # [B, K] bool
    sources: np.ndarray | None = None  # [B, K] uint8: SOURCE_* bits, 0 where empty (None: the beam's)
    explained: list | None = None  # per query and slot, a dict of what put it there (``Retriever`` explain)

    def __post_init__(self) -> None:
        if self.sources is None:
            self.sources = np.where(self.item_ids >= 0, SOURCE_BEAM, 0).astype(np.uint8)


def empty_candidates(batch: int, k: int) -> Candidates:
    """``batch`` rows of ``k`` missing slots."""
    return Candidates(
        item_ids=np.full((batch, k), -1, np.int64),
        scores=np.full((batch, k), -np.inf),
        sids=np.full((batch, k), "", dtype=object),
        from_beam=np.zeros((batch, k), bool),
        sources=np.zeros((batch, k), np.uint8),
    )


def rank_candidates(
    forest: ProductLists,
    decoded: np.ndarray | torch.Tensor,
    scores: np.ndarray | torch.Tensor,
    slots: np.ndarray,
    k: int,
    exclude_items: Sequence[Sequence[int] | np.ndarray | None] | None = None,
    cold_share: float = 0.0,
    cold_ranker: ColdRanker | None = None,
    last_rows: np.ndarray | None = None,
) -> Candidates:
    """Decoded SIDs [B, R, D] with their log-probs [B, R] -> K products per query that the query's slot
    holds (see ``RetailerIndex.candidates``; ``cold_share``, ``cold_ranker``, ``last_rows``: ``mix_cold``)."""
    decoded, sc = as_decoded(decoded, scores, forest.depth)
    if k < 1:
        raise DataError(f"candidates: k must be >= 1, got {k}")
    batch = decoded.shape[0]
    if slots.shape != (batch,):
        raise DataError(f"candidates: {slots.size} retailer ids for {batch} queries")
    banned = banned_keys(forest, slots, exclude_items, batch)
    q, pos, item_sc = _beam_items(forest, decoded, sc, slots, banned, k)
    out = empty_candidates(batch, k)
    rank = np.arange(q.size) - np.searchsorted(q, q)
    _place(out, forest, q, rank, pos, item_sc, from_beam=True)
    counts = np.bincount(q, minlength=batch)
    for b in np.flatnonzero(counts < k):
        taken = pos[q == b]
        base = float(item_sc[q == b].min()) if taken.size else 0.0
        _fill(out, forest, b, decoded[b], int(slots[b]), taken, banned, k, base)
    if cold_share > 0:
        mix_cold(out, forest, decoded, sc, slots, banned, cold_share, cold_ranker, last_rows)
    return out


def cold_slots(k: int, share: float) -> int:
    """How many of K slots ``share`` reserves for new products: ceil(share * K), none when share is 0."""
    if not 0 <= share < 1:
        raise DataError(f"cold_share must lie in [0, 1), got {share}")
    return min(k, int(np.ceil(share * k - 1e-9)))


def mix_cold(out: Candidates, forest: ProductLists, decoded: np.ndarray, scores: np.ndarray, slots: np.ndarray,
             banned: np.ndarray, share: float, ranker: ColdRanker | None = None,
             last_rows: np.ndarray | None = None, keep: np.ndarray | None = None) -> None:
    """TIGER's cold-start mixing, in place: up to ``cold_slots`` of each query's last slots are open to
    new products its slot holds (no training interactions and not established, ``CatalogView.build``: the
    decoder never learnt to generate their SIDs); those placed score just below the list they join. With
    a ``ranker`` (``index.cold``) the open slots hold whichever lie nearest the query's SID point, the
    listed products there or the nearest new ones (``last_rows``: each query's latest history item, [B, D],
    -1 rows for none). Without one, new products under a decoded SID's codewords, else all but its last
    codeword, take the open slots. ``keep`` [B, K] (with a ranker): listed products no new one may displace
    (the shopper's own re-buys, say)."""
    reserve = cold_slots(out.item_ids.shape[1], share)
    if not reserve or not forest.cold_positions.size:
        return
    if ranker is None:
        found, near, tail = _cold_by_prefix(forest, decoded, scores, slots), {}, None
    else:
        queries = ranker.queries(decoded, scores, last_rows)
        found, near = _cold_by_point(queries, forest, slots, ranker, reserve + out.item_ids.shape[1])
        tail = _tail_similarity(out, forest, ranker, queries, reserve)
        if keep is not None:
            tail = np.where(keep[:, -reserve:] & np.isfinite(tail), np.inf, tail)
    n, k = forest.item_ids.size, out.item_ids.shape[1]
    for b, pos in found.items():
        skip = banned[(banned >= b * n) & (banned < (b + 1) * n)] - b * n
        fresh = ~np.isin(pos, skip) & ~np.isin(forest.item_ids[pos], out.item_ids[b])
        pos = pos[fresh][:reserve]
        kept = np.zeros(0, np.int64)
        if tail is not None:  # the open slots keep the nearest of their listed products and the new ones
            kept, chosen = _nearest_of(tail[b], near[b][fresh][: pos.size])
            pos = pos[chosen]
        if not pos.size:
            continue
        _rewrite_tail(out, forest, b, k - reserve if tail is not None else k - pos.size, kept, pos)


_FIELDS = ("item_ids", "scores", "sids", "from_beam", "sources")


def _rewrite_tail(out: Candidates, forest: ProductLists, b: int, first: int, kept: np.ndarray,
                  pos: np.ndarray) -> None:
    """Query ``b``'s slots from ``first`` on: its listed products at offsets ``kept`` (in order), then the
    new products at positions ``pos``, scoring just below the list; any slot left over is empty."""
    empty = empty_candidates(1, 1)
    for name in _FIELDS:
        field = getattr(out, name)
        field[b, first:first + kept.size] = field[b, first + kept]
        field[b, first + kept.size:] = getattr(empty, name)[0, 0]
    at = np.arange(first + kept.size, first + kept.size + pos.size)
    base = float(np.min(out.scores[b, : at[0]], initial=0.0)) if at[0] else 0.0
    _place(out, forest, np.full(pos.size, b), at, pos, base - 1.0 - np.arange(pos.size), False, SOURCE_NEW)


def _nearest_of(listed: np.ndarray, new: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Of the open slots' listed products (similarities in slot order, -inf where empty) and the new
    candidates (best first), the ``len(listed)`` nearest, ties to the listed: (listed slots kept, in
    order; new candidates chosen, best first)."""
    top = np.argsort(-np.concatenate([listed, new]), kind="stable")[: listed.size]
    kept = np.sort(top[top < listed.size])
    return kept[listed[kept] > -np.inf], np.sort(top[top >= listed.size]) - listed.size


def _tail_similarity(out: Candidates, forest: ProductLists, ranker: ColdRanker, queries: np.ndarray,
                     reserve: int) -> np.ndarray:
    """Cosine between each query's point and its open slots' listed products ([B, reserve] in slot order;
    -inf where a slot is empty)."""
    ids = out.item_ids[:, -reserve:]
    listed = ids >= 0
    cat = np.searchsorted(forest.catalog_ids, np.where(listed, ids, forest.catalog_ids[0]))
    sims = np.einsum("bd,brd->br", queries, ranker.points(forest.catalog_rows[cat]))
    return np.where(listed, sims, -np.inf)


def _cold_by_point(queries: np.ndarray, forest: ProductLists, slots: np.ndarray, ranker: ColdRanker,
                   take: int) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """Per query, its slot's ``take`` new products nearest its point, best first (equal similarity: the lower
    item id first, ``top_cold``), and their similarities."""
    found, near = {}, {}
    for slot in np.unique(slots).tolist():
        cold = forest.cold_of(slot)
        if not cold.size:
            continue
        members = np.flatnonzero(slots == slot)
        rows = forest.rows_at(cold)
        best = top_cold(ranker, queries[members], rows, min(cold.size, take), forest.item_ids[cold])
        # the same arithmetic as _tail_similarity, so a new product whose point equals a listed one's ties it
        sims = np.einsum("bd,btd->bt", queries[members], ranker.points(rows[best]))
        found.update(zip(members.tolist(), cold[best]))
        near.update(zip(members.tolist(), sims))
    return found, near


def _cold_by_prefix(forest: ProductLists, decoded: np.ndarray, scores: np.ndarray,
                    slots: np.ndarray) -> dict[int, np.ndarray]:
    """Per query, the new products its slot stocks under its decoded SIDs' codewords, then under all but the
    last codeword, best beam first; one vectorised pass finds the (few) beams with such products below them."""
    cold = forest.cold_positions
    _, width, depth = decoded.shape
    order = np.argsort(-scores, axis=1, kind="stable")  # best beam first
    rows = np.take_along_axis(decoded, order[..., None], axis=1).reshape(-1, depth)
    live = np.isfinite(np.take_along_axis(scores, order, axis=1)).reshape(-1)
    beam_slots = np.repeat(slots, width)
    path = forest.path(rows, beam_slots)
    owners, values = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for d in range(depth - 1, max(depth - 3, 0), -1):  # prefixes of depth-1, then depth-2 tokens
        nodes = np.where(live, path[:, d], -1)
        hit = np.flatnonzero(nodes >= 0)
        lo, hi = forest.subtree_items(d + 1, nodes[hit])
        at, pos = stocked_ranges(forest, np.searchsorted(cold, lo), np.searchsorted(cold, hi), beam_slots[hit],
                                 within=cold)
        owners.append(hit[at] // width)
        values.append(pos)
    owner, value = np.concatenate(owners), np.concatenate(values)
    by_query = np.argsort(owner, kind="stable")  # per query: deepest prefix first, best beam first
    owner, value = owner[by_query], value[by_query]
    cuts = np.flatnonzero(np.diff(owner)) + 1
    starts = np.r_[0, cuts].astype(np.int64)
    return {int(owner[s]): _first_seen(part) for s, part in zip(starts.tolist(), np.split(value, cuts)) if part.size}


def _first_seen(values: np.ndarray) -> np.ndarray:
    """Distinct values in order of first appearance."""
    _, first = np.unique(values, return_index=True)
    return values[np.sort(first)]


def as_decoded(
    decoded: np.ndarray | torch.Tensor, scores: np.ndarray | torch.Tensor, depth: int
) -> tuple[np.ndarray, np.ndarray]:
    """Decoded rows [B, R, D] int64 and scores [B, R] float64 as numpy arrays, checked."""
    d = decoded.detach().cpu().numpy() if isinstance(decoded, torch.Tensor) else np.asarray(decoded)
    s = scores.detach().cpu().numpy() if isinstance(scores, torch.Tensor) else np.asarray(scores)
    if d.ndim != 3 or d.shape[2] != depth or s.shape != d.shape[:2]:
        raise DataError(
            f"candidates: expected decoded rows [B, R, {depth}] and scores [B, R], got {d.shape} and {s.shape}"
        )
    return d.astype(np.int64, copy=False), s.astype(np.float64, copy=False)


def banned_keys(forest: ProductLists, slots: np.ndarray, exclude: Sequence | None, batch: int) -> np.ndarray:
    """Sorted keys query * n + position of every excluded product that the query's slot holds."""
    if exclude is None:
        return np.zeros(0, np.int64)
    if len(exclude) != batch:
        raise DataError(f"candidates: exclude_items has {len(exclude)} entries for {batch} queries")
    sizes = np.array([0 if e is None else len(e) for e in exclude], np.int64)
    if not sizes.sum():
        return np.zeros(0, np.int64)
    ids = np.concatenate([_int_array(e) for e in exclude if e is not None and len(e)])
    query = np.repeat(np.arange(batch), sizes)
    pos, found = forest.positions(slots[query], ids)
    return np.unique(query[found] * forest.item_ids.size + pos[found])


def _int_array(values: Sequence[int] | np.ndarray) -> np.ndarray:
    """Excluded item ids as a 1-D int64 array, or a DataError."""
    arr = np.atleast_1d(np.asarray(values))
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"candidates: exclude_items must hold 1-D sequences of integers, got {arr.dtype} {arr.shape}")
    return arr.astype(np.int64, copy=False)


def _beam_items(
    forest: ProductLists, decoded: np.ndarray, scores: np.ndarray, slots: np.ndarray, banned: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Products of the decoded SIDs, per query in score order, de-duplicated, minus banned, at most k:
    (query, position, score), sorted by query."""
    batch, width, depth = decoded.shape
    leaf = forest.leaves(decoded.reshape(-1, depth), np.repeat(slots, width))
    flat_sc = scores.reshape(-1)
    leaf[~np.isfinite(flat_sc)] = -1
    lo, hi = forest.leaf_items(leaf)
    beam, pos = stocked_ranges(forest, lo, hi, np.repeat(slots, width))
    q, sc, total = beam // width, flat_sc[beam], beam.size
    order = np.lexsort((np.arange(total), -sc, q))  # by query, best score first, then as listed
    q, pos, sc = q[order], pos[order], sc[order]
    key = q * forest.item_ids.size + pos
    _, first = np.unique(key, return_index=True)
    keep = np.zeros(total, bool)
    keep[first] = True
    keep &= ~np.isin(key, banned)
    q, pos, sc = q[keep], pos[keep], sc[keep]
    rank = np.arange(q.size) - np.searchsorted(q, q)
    keep = rank < k
    return q[keep], pos[keep], sc[keep]


def _place(
    out: Candidates,
    forest: ProductLists,
    q: np.ndarray,
    slot: np.ndarray,
    pos: np.ndarray,
    scores: np.ndarray,
    from_beam: bool,
    source: int | np.ndarray | None = None,
) -> None:
    """Write products (positions) into the output slots (``source``: their SOURCE_* bits; default
    the beam's, or the fill's where not ``from_beam``)."""
    out.item_ids[q, slot] = forest.item_ids[pos]
    out.scores[q, slot] = scores
    out.sids[q, slot] = forest.sids[pos]
    out.from_beam[q, slot] = from_beam
    out.sources[q, slot] = (SOURCE_BEAM if from_beam else SOURCE_FILL) if source is None else source


def _fill(
    out: Candidates,
    forest: ProductLists,
    b: int,
    decoded: np.ndarray,
    slot: int,
    taken: np.ndarray,
    banned: np.ndarray,
    k: int,
    base: float,
) -> None:
    """Complete query ``b`` to k products from the subtrees of its decoded SIDs' prefixes under its slot,
    deepest first, most popular first within a depth."""
    n = forest.item_ids.size
    depth = forest.depth
    path = forest.path(decoded, slot)  # [R, D+1]; column 0 is the slot's node (the retailer's whole stock)
    skip = np.union1d(taken, banned[(banned >= b * n) & (banned < (b + 1) * n)] - b * n)
    filled = taken.size
    for d in range(depth - 1, -1, -1):
        nodes = np.unique(path[:, d][path[:, d] >= 0])
        if not nodes.size:
            continue
        lo, hi = forest.subtree_items(d + 1, nodes)
        pos = stocked_ranges(forest, lo, hi, np.full(lo.size, slot))[1]
        pos = pos[~np.isin(pos, skip)]
        if not pos.size:
            continue
        pos = pos[np.lexsort((forest.item_ids[pos], -forest.popularity[pos]))][: k - filled]
        slots = np.arange(filled, filled + pos.size)
        _place(out, forest, np.full(pos.size, b), slots, pos, np.full(pos.size, base - (depth - d)), False)
        filled += pos.size
        skip = np.union1d(skip, pos)
        if filled >= k:
            return
