"""Popularity baselines: the catalog's most-bought items for everyone, and each shopper's own most-bought
items (the re-buy carousel every grocer already has), topped up with the catalog's most popular.

Popularity is counted on the training examples only (never a validation or test target)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import scipy.sparse as sp

from genrec.data.sequences import Examples
from genrec.evaluation.baselines.base import (FitContext, fixed_order_top_k, popularity_ranking, sparse_top_k,
                                              tuning_subset, validation_score)
from semid.catalog import counts_per_item, item_columns
from semid.common import DataError, ragged_rows


class MostPopular:
    """Everyone gets the items with the most training interactions (ties: lower item id first)."""

    name = "popular"

    def __init__(self) -> None:
        self.ctx: FitContext | None = None
        self.counts: np.ndarray | None = None

    def fit(self, train: Examples, validation: Examples, ctx: FitContext) -> "MostPopular":
        """Count every item's training interactions; there is nothing to tune."""
        self.ctx = ctx
        self.counts = counts_per_item(ctx.item_ids, ctx.training_sequences(train).history_items)
        return self

    def recommend(self, queries: Examples, k: int, exclude: Sequence[np.ndarray] | None = None) -> np.ndarray:
        """The ``k`` most popular items not excluded for each query."""
        ctx, counts = _fitted(self)
        return fixed_order_top_k(popularity_ranking(ctx.item_ids, counts), len(queries), k, exclude)


@dataclass
class OwnMostBoughtConfig:
    """Choices for the shopper's-own-items baseline; lists are searched on validation."""

    decays: tuple[float, ...] = (1.0, 0.99, 0.97, 0.9)  # weight of a purchase = decay ** (items since it)


class OwnMostBought:
    """The shopper's own items ranked by (recency-decayed) purchase count, then the catalog's most popular.

    Reads the shopper's whole history (``uses_full_history``); the decay is chosen on validation.
    """

    name = "own_popular"
    uses_full_history = True  # the harness gives it uncapped query histories

    def __init__(self, decays: Sequence[float] | None = None) -> None:
        self.cfg = OwnMostBoughtConfig() if decays is None else OwnMostBoughtConfig(tuple(decays))
        if not self.cfg.decays or any(not 0 < d <= 1 for d in self.cfg.decays):
            raise DataError(f"own_popular: decays must lie in (0, 1], got {self.cfg.decays}")
        self.decay = self.cfg.decays[0]
        self.ctx: FitContext | None = None
        self.counts: np.ndarray | None = None
        self.choices: dict[str, float] = {}

    def fit(self, train: Examples, validation: Examples, ctx: FitContext) -> "OwnMostBought":
        """Count training popularity for the top-up, then choose the decay on validation."""
        self.ctx = ctx
        self.counts = counts_per_item(ctx.item_ids, ctx.training_sequences(train).history_items)
        tune = tuning_subset(validation, ctx)
        scores = {}
        for decay in self.cfg.decays:
            self.decay = decay
            scores[decay] = validation_score(self, tune, ctx)
        self.decay = max(scores, key=scores.get)
        self.choices = {"decay": self.decay, f"validation_{ctx.tune_metric}": scores[self.decay]}
        return self

    def recommend(self, queries: Examples, k: int, exclude: Sequence[np.ndarray] | None = None) -> np.ndarray:
        """Own items by decayed count (ties: popularity), then popular items, excluded items removed."""
        ctx, counts = _fitted(self)
        rows = ragged_rows(queries.history_offsets)
        age = queries.history_offsets[1:][rows] - 1 - np.arange(rows.size)  # 0 for the latest item
        weight = self.decay ** age.astype(np.float64)
        cols = item_columns(ctx.item_ids, queries.history_items)
        ok = cols >= 0
        own = sp.csr_matrix((weight[ok], (rows[ok], cols[ok])), shape=(len(queries), ctx.n_items))
        return sparse_top_k(own, ctx.item_ids, k, exclude, popularity_ranking(ctx.item_ids, counts))


def _fitted(model) -> tuple[FitContext, np.ndarray]:
    if model.ctx is None or model.counts is None:
        raise DataError(f"{model.name}: recommend called before fit")
    return model.ctx, model.counts
