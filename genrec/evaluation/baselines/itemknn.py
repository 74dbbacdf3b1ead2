"""Item-kNN over windowed co-occurrence: items bought within a few steps of each other in a training
sequence are neighbours; a query is scored from its last few history items' neighbours.

sim(a, b) = sum over training pairs (a then b, d steps apart, d <= window) of decay^(d-1), plus
``backward`` times the same for b then a, divided by count(a)^alpha * count(b)^gamma. score(b | history)
= sum over the last ``last_n`` history items h_j (j = 0 latest) of recency^j * sim(h_j, b); items with
equal scores (e.g. no neighbour at all) follow training popularity. Every setting is chosen on
validation by coordinate ascent from the defaults; sparse matrices (scipy) throughout.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np
import scipy.sparse as sp

from genrec.data.copurchase import KNNSettings, pair_counts, query_matrix, similarity
from genrec.data.sequences import Examples
from genrec.evaluation.baselines.base import (FitContext, coordinate_ascent, popularity_ranking, sparse_top_k,
                                              tuning_subset, validation_score)
from semid.catalog import counts_per_item
from semid.common import DataError


@dataclass
class ItemKNNConfig:
    """Start point and the values coordinate ascent tries for each setting."""

    start: KNNSettings = field(default_factory=KNNSettings)  # where the search begins
    grid: dict = field(default_factory=lambda: {  # candidate values per setting
        "window": (1, 2, 3, 4, 5),
        "decay": (1.0, 0.7, 0.5),
        "backward": (0.0, 0.1, 0.25, 0.5, 1.0),
        "alpha": (0.0, 0.25, 0.5, 0.75),
        "gamma": (0.0, 0.25, 0.5, 0.75),
        "last_n": (1, 2, 3, 5),
        "recency": (1.0, 0.7, 0.5, 0.4, 0.3, 0.2),
    })
    rounds: int = 2  # passes of coordinate ascent over all settings
    tune: bool = True  # False: use ``start`` as is


class ItemKNN:
    """Windowed co-occurrence item-kNN, tuned on validation."""

    name = "itemknn"

    def __init__(self, tune: bool = True, rounds: int = 2, **start) -> None:
        self.cfg = ItemKNNConfig(start=KNNSettings(**start), rounds=rounds, tune=tune)
        self.settings = self.cfg.start
        self.ctx: FitContext | None = None
        self.counts: np.ndarray | None = None
        self.fallback: np.ndarray | None = None  # item ids by training popularity: the order of zero scores
        self.pairs: list[sp.csr_matrix] = []
        self.sim: sp.csr_matrix | None = None
        self.choices: dict = {}

    def fit(self, train: Examples, validation: Examples, ctx: FitContext) -> "ItemKNN":
        """Count windowed pairs in the training sequences, then choose the settings on validation."""
        self.ctx = ctx
        seqs = ctx.training_sequences(train)
        self.counts = counts_per_item(ctx.item_ids, seqs.history_items)
        self.fallback = popularity_ranking(ctx.item_ids, self.counts)
        max_window = max([self.cfg.start.window, *self.cfg.grid.get("window", ())]) if self.cfg.tune \
            else self.cfg.start.window
        self.pairs = pair_counts(seqs, ctx.item_ids, max_window)
        self.settings = self._search(tuning_subset(validation, ctx)) if self.cfg.tune else self.cfg.start
        self.sim = self._similarity(self.settings)
        self.choices = asdict(self.settings)
        return self

    def _search(self, tune: Examples) -> KNNSettings:
        """Coordinate ascent on the validation metric over ``cfg.grid``, from ``cfg.start``."""
        def score(s: KNNSettings) -> float:
            self.settings, self.sim = s, self._similarity(s)
            return validation_score(self, tune, self.ctx)

        return coordinate_ascent(self.cfg.start, self.cfg.grid, self.cfg.rounds, score)

    def _similarity(self, s: KNNSettings) -> sp.csr_matrix:
        """The normalised similarity matrix of settings ``s`` (rows: source item, columns: candidate)."""
        return similarity(self.pairs, self.counts, s)

    def recommend(self, queries: Examples, k: int, exclude: Sequence[np.ndarray] | None = None) -> np.ndarray:
        """Top ``k`` items by summed neighbour similarity of the last history items (ties: popularity)."""
        if self.ctx is None or self.sim is None:
            raise DataError("itemknn: recommend called before fit")
        query = query_matrix(queries.history_offsets, queries.history_items, self.ctx.item_ids, self.settings)
        return sparse_top_k(query @ self.sim, self.ctx.item_ids, k, exclude, self.fallback)
