"""Which new products a query's cold-start slots go to, from Semantic IDs alone.

The decoder never learnt to generate a new product's SID, but every SID names a point of the codebook's
latent space: the sum of its codewords. ``ColdRanker`` ranks a query's new products by the cosine between
their points and the query's: the mean of its decoded SIDs' points, weighted by beam probability, blended
with its latest history item's. New products need nothing but their SID, as in TIGER's protocol; SID
prefixes alone (``index.candidates``' fallback) leave most queries without a new product under any
decoded prefix.

Ties are broken, never left to chance: new products at one SID point (the same codewords, e.g. differing
only in the disambiguation token, which names no codeword) rank by item id, the lower first; an open slot's
listed product keeps its slot against a new product exactly as near (``index.candidates._nearest_of``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from semid.common import DataError
from semid.config import Checks

HISTORY_WEIGHT = 0.3  # share of the latest history item in the query point (the rest: the decoded beams)
COLD_SLICE = 1 << 16  # new products ranked per slice of a larger cold pool (top_cold)
COLD_CELLS = 1 << 24  # query x product similarities per block of a slice (64 MB, plus its partition)


@dataclass
class ColdStartConfig:
    """How much of each list is open to new products, and how a query's point is made (run config
    section ``cold_start``)."""

    share: float = 0.2  # TIGER's epsilon: ceil(share * K) last slots open to new products; 0 turns it off
    history_weight: float = HISTORY_WEIGHT

    def __post_init__(self) -> None:
        Checks(self, "cold_start").within(0, 1, "share", open_high=True).within(0, 1, "history_weight")


@dataclass(frozen=True)
class ColdRanker:
    """SID token -> codeword vector (zero for tokens that name no codeword: dedup, retailer), and the
    blend of decoded beams and history that makes a query's point."""

    token_vectors: np.ndarray  # [vocab, dim] float32
    history_weight: float = HISTORY_WEIGHT

    def __post_init__(self) -> None:
        if self.token_vectors.ndim != 2:
            raise DataError(f"cold ranker: token vectors must be [vocab, dim], got {self.token_vectors.shape}")
        if not 0.0 <= self.history_weight <= 1.0:
            raise DataError(f"cold ranker: history_weight must lie in [0, 1], got {self.history_weight}")

    @classmethod
    def from_codewords(cls, codewords: Sequence[np.ndarray], level_starts: Sequence[int], vocab_size: int,
                       history_weight: float = HISTORY_WEIGHT) -> "ColdRanker":
        """From each level's codebook and the token id its code 0 has (``SIDTokenizer.level_range``)."""
        if len(codewords) != len(level_starts) or not codewords:
            raise DataError(f"cold ranker: {len(codewords)} codebooks for {len(level_starts)} token levels")
        table = np.zeros((vocab_size, codewords[0].shape[1]), np.float32)
        for book, start in zip(codewords, level_starts):
            if start + book.shape[0] > vocab_size:
                raise DataError(f"cold ranker: a codebook of {book.shape[0]} codes at token {start} overruns "
                                f"the vocabulary of {vocab_size}")
            table[start:start + book.shape[0]] = book
        return cls(table, history_weight)

    def points(self, rows: np.ndarray) -> np.ndarray:
        """Unit latent point of each SID token row [..., D] -> [..., dim] (zero rows stay zero). The codewords
        are added a level at a time (the order ``sum`` over the level axis adds them in), so no [..., D, dim]
        array is made."""
        rows = np.asarray(rows)
        total = self.token_vectors[rows[..., 0]]
        for level in range(1, rows.shape[-1]):
            total += self.token_vectors[rows[..., level]]
        return _unit(total)

    def queries(self, decoded: np.ndarray, scores: np.ndarray, last_rows: np.ndarray | None = None) -> np.ndarray:
        """Unit query points [B, dim] from decoded SIDs [B, R, D] with log-probs [B, R] (-inf: no beam) and,
        optionally, each query's latest history item as a token row [B, D] (-1 rows: none)."""
        live = np.isfinite(scores)
        logits = np.where(live, scores, -np.inf)
        top = np.max(logits, axis=1, keepdims=True, initial=-np.inf)
        weights = np.where(live, np.exp(logits - np.where(np.isfinite(top), top, 0.0)), 0.0)
        beams = _unit(np.einsum("br,brd->bd", weights, self.points(decoded)))
        if last_rows is None or self.history_weight == 0:
            return beams
        has = (last_rows >= 0).all(1)
        last = np.zeros_like(beams)
        last[has] = self.points(last_rows[has])
        return _unit((1.0 - self.history_weight) * beams + self.history_weight * last)


def top_cold(ranker: ColdRanker, queries: np.ndarray, cold_rows: np.ndarray, take: int,
             cold_ids: np.ndarray | None = None, chunk: int = 512, pool_slice: int = COLD_SLICE,
             cells: int = COLD_CELLS) -> np.ndarray:
    """The ``take`` best of ``cold_rows`` [M, D] for each query point [B, dim], best first: [B, take] row
    indices (take <= M). Equal similarity (new products at one SID point, e.g. differing only in the
    disambiguation token): the lower of ``cold_ids`` (default: the row index) comes first, so the choice
    never depends on where the products lie in the index.

    Memory stays flat in M: the pool is read ``pool_slice`` products at a time (their points, then at most
    ``chunk`` queries' similarities to them, fewer when a chunk would pass ``cells`` values), each slice's
    best ``take`` kept, and the slices' best merged by the same order. A pool of one slice is ranked in one
    pass."""
    ids = np.arange(cold_rows.shape[0]) if cold_ids is None else np.asarray(cold_ids)
    m = cold_rows.shape[0]
    if m <= pool_slice:
        return _top_of_slice(ranker.points(cold_rows), queries, ids, take, chunk, cells)[0]
    found, sims = [], []
    for s in range(0, m, pool_slice):
        part = ids[s:s + pool_slice]
        best, near = _top_of_slice(ranker.points(cold_rows[s:s + pool_slice]), queries, part,
                                   min(take, part.size), chunk, cells)
        found.append(best + s)
        sims.append(near)
    found, sims = np.concatenate(found, axis=1), np.concatenate(sims, axis=1)
    order = np.lexsort((ids[found], -sims), axis=1)[:, :take]  # the same order as _best: best first, lower id
    return np.take_along_axis(found, order, 1)


def _top_of_slice(points: np.ndarray, queries: np.ndarray, ids: np.ndarray, take: int, chunk: int,
                  cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Each query's ``take`` best of ``points`` ([B, take] row indices, best first) and their similarities."""
    step = max(1, min(chunk, cells // max(points.shape[0], 1)))
    out = np.empty((queries.shape[0], take), np.int64)
    near = np.empty((queries.shape[0], take), np.float32)
    for s in range(0, queries.shape[0], step):
        sims = queries[s:s + step] @ points.T
        out[s:s + step] = _best(sims, ids, take)
        near[s:s + step] = np.take_along_axis(sims, out[s:s + step], 1)
    return out, near


def _best(sims: np.ndarray, ids: np.ndarray, take: int) -> np.ndarray:
    """Column indices of each row's ``take`` largest ``sims``, best first, ties to the lower id."""
    if take >= sims.shape[1]:
        return np.lexsort((np.broadcast_to(ids, sims.shape), -sims), axis=1)
    part = np.argpartition(-sims, take - 1, axis=1)[:, :take]
    edge = np.take_along_axis(sims, part, 1).min(1, keepdims=True)  # each row's take-th best similarity
    # the partition kept an arbitrary subset of the columns tied at the edge: keep the lowest ids of them
    short = np.flatnonzero((sims == edge).sum(1) > (np.take_along_axis(sims, part, 1) == edge).sum(1))
    for r in short.tolist():
        above = np.flatnonzero(sims[r] > edge[r])
        tied = np.flatnonzero(sims[r] == edge[r])
        part[r] = np.r_[above, tied[np.argsort(ids[tied], kind="stable")][: take - above.size]]
    order = np.lexsort((ids[part], -np.take_along_axis(sims, part, 1)), axis=1)
    return np.take_along_axis(part, order, 1)


def _unit(v: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    norm = np.linalg.norm(v, axis=-1, keepdims=True)
    return (v / np.where(norm > 0, norm, 1.0)).astype(np.float32)
