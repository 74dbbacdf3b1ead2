"""TIFU-KNN (Hu et al., SIGIR 2020, arXiv 2006.00556): the next-basket baseline a grocery team would pick.
A shopper is a vector of time-decayed purchase frequencies; the prediction blends the shopper's own vector
with the mean vector of the ``neighbours`` shoppers nearest to it (cosine):
``alpha * own + (1 - alpha) * mean(nearest)``.

The paper decays by basket and by group of baskets; the harness's histories are item sequences without
basket boundaries, so the decay here is per item (``decay ** items since the purchase``), the one
difference from the paper. Vectors are L1-normalised, as the paper's averages are; neighbours come from
every shopper's training sequence, the query's own shopper left out. Every setting is chosen on validation
by coordinate ascent from the defaults (as item-kNN's); sparse matrices (scipy) throughout.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import scipy.sparse as sp

from genrec.data.sequences import Examples
from genrec.evaluation.baselines.base import (FitContext, coordinate_ascent, popularity_ranking, sparse_top_k,
                                              tuning_subset, validation_score)
from semid.catalog import counts_per_item, item_columns
from semid.common import DataError, ragged_rows

GRID = {"decay": (0.99, 0.97, 0.93, 0.9, 0.8), "neighbours": (10, 50, 100, 300), "alpha": (0.9, 0.7, 0.5, 0.3)}
CHUNK = 1024  # queries per dense similarity block


@dataclass(frozen=True)
class TIFUSettings:
    decay: float = 0.97  # weight of a purchase j items ago: decay ** j
    neighbours: int = 100  # nearest shoppers averaged
    alpha: float = 0.7  # weight of the shopper's own vector


class TIFUKNN:
    """Personal time-decayed frequency blended with the nearest shoppers' (item-level TIFU-KNN)."""

    name = "tifuknn"
    uses_full_history = True  # the harness gives it uncapped query histories

    def __init__(self, tune: bool = True, rounds: int = 2, **start) -> None:
        self.tune, self.rounds, self.settings = tune, rounds, TIFUSettings(**start)
        self.ctx: FitContext | None = None
        self.fallback: np.ndarray | None = None
        self.seqs: Examples | None = None
        self._pool: tuple[float, sp.csr_matrix, sp.csr_matrix] | None = None  # (decay, vectors, unit rows)
        self.choices: dict = {}

    def fit(self, train: Examples, validation: Examples, ctx: FitContext) -> "TIFUKNN":
        """Keep every shopper's training sequence (the neighbour pool), then choose settings on validation."""
        self.ctx = ctx
        self.seqs = ctx.training_sequences(train)
        self.fallback = popularity_ranking(ctx.item_ids, counts_per_item(ctx.item_ids, self.seqs.history_items))
        if self.tune:
            self.settings = self._search(tuning_subset(validation, ctx))
        self.choices = asdict(self.settings)
        return self

    def _search(self, tune: Examples) -> TIFUSettings:
        """Coordinate ascent on the validation metric over ``GRID`` from the start settings."""
        def score(s: TIFUSettings) -> float:
            self.settings = s
            return validation_score(self, tune, self.ctx)

        return coordinate_ascent(self.settings, GRID, self.rounds, score)

    def _vectors(self, offsets: np.ndarray, items: np.ndarray) -> sp.csr_matrix:
        """Ragged histories -> L1-normalised decayed frequency rows over the catalog."""
        rows = ragged_rows(offsets)
        age = offsets[1:][rows] - 1 - np.arange(rows.size)
        cols = item_columns(self.ctx.item_ids, items)
        ok = cols >= 0
        m = sp.csr_matrix((self.settings.decay ** age[ok].astype(np.float64), (rows[ok], cols[ok])),
                          shape=(offsets.size - 1, self.ctx.n_items))
        m.sum_duplicates()
        total = np.asarray(m.sum(axis=1)).ravel()
        return (sp.diags(1.0 / np.where(total > 0, total, 1.0)) @ m).tocsr()

    def _neighbour_pool(self) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        """Every shopper's vector and its unit-length row, built once per decay (tuning asks many times)."""
        if self._pool is None or self._pool[0] != self.settings.decay:
            pool = self._vectors(self.seqs.history_offsets, self.seqs.history_items)
            self._pool = (self.settings.decay, pool, _l2_rows(pool))
        return self._pool[1], self._pool[2]

    def recommend(self, queries: Examples, k: int, exclude: Sequence[np.ndarray] | None = None) -> np.ndarray:
        """Top ``k`` items of the blended vector (ties and the rest: training popularity)."""
        if self.ctx is None or self.seqs is None:
            raise DataError("tifuknn: recommend called before fit")
        pool, unit = self._neighbour_pool()
        own = self._vectors(queries.history_offsets, queries.history_items)
        s = self.settings
        parts = []
        for start in range(0, len(queries), CHUNK):
            stop = min(start + CHUNK, len(queries))
            sims = (_l2_rows(own[start:stop]) @ unit.T).toarray()
            sims[_own_rows(self.seqs.user_ids, queries.user_ids[start:stop])] = -np.inf
            parts.append(_mean_of_nearest(sims, pool, s.neighbours))
        nearest = sp.vstack(parts).tocsr() if parts else sp.csr_matrix((0, self.ctx.n_items))
        return sparse_top_k(s.alpha * own + (1 - s.alpha) * nearest, self.ctx.item_ids, k, exclude, self.fallback)


def _own_rows(pool_users: np.ndarray, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(query row, pool row) of each query whose own shopper is in the pool: left out of its neighbours."""
    order = np.argsort(pool_users, kind="stable")
    at = np.searchsorted(pool_users[order], users).clip(max=max(order.size - 1, 0))
    hit = pool_users[order][at] == users if order.size else np.zeros(users.size, bool)
    return np.flatnonzero(hit), order[at[hit]]


def _l2_rows(m: sp.csr_matrix) -> sp.csr_matrix:
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    return (sp.diags(1.0 / np.where(norms > 0, norms, 1.0)) @ m).tocsr()


def _mean_of_nearest(sims: np.ndarray, pool: sp.csr_matrix, n: int) -> sp.csr_matrix:
    """Per row of ``sims`` [Q, U], the mean of the ``n`` most similar pool rows with positive similarity."""
    n = min(n, sims.shape[1])
    top = np.argpartition(-sims, n - 1, axis=1)[:, :n]
    ok = np.take_along_axis(sims, top, 1) > 0
    rows = np.repeat(np.arange(sims.shape[0]), n).reshape(top.shape)
    w = sp.csr_matrix((np.full(int(ok.sum()), 1.0 / n), (rows[ok], top[ok])), shape=sims.shape)
    return (w @ pool).tocsr()
