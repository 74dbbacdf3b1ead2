"""Semantic-kNN: recommend the items whose embeddings are nearest (cosine) to the shopper's latest items.

It needs no interaction with an item to recommend it, so it is the reference for cold-start items. The
embeddings are the run's ``embeddings.parquet`` (the vectors its Semantic IDs were learned from); search is
exact inner product over L2-normalised vectors with faiss. The query vector is the recency-weighted sum of
the last ``last_n`` history items' vectors; ``last_n`` and the weight are chosen on validation.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import faiss
import numpy as np

from genrec.data.sequences import Examples
from genrec.evaluation.baselines.base import (FitContext, run_text_embeddings_path, excluded_mask, first_k_allowed,
                                              fixed_order_top_k, popularity_ranking, tuning_subset, validation_score)
from semid.catalog import counts_per_item, item_columns
from semid.common import DataError, ragged_rows
from semid.embeddings import l2_normalize, read_embeddings


@dataclass
class SemanticKNNConfig:
    """Query construction choices searched on validation."""

    last_n: tuple[int, ...] = (1, 2, 3)  # history items the query vector is built from
    recency: tuple[float, ...] = (1.0, 0.5)  # weight of the j-th most recent of them = recency ** j
    embeddings: str | None = None  # an embeddings parquet; None: the run's embeddings.parquet


class SemanticKNN:
    """Nearest catalog items to the latest history items by embedding cosine (empty history: popular)."""

    name = "semantic_knn"

    def __init__(self, last_n: Sequence[int] = (1, 2, 3), recency: Sequence[float] = (1.0, 0.5),
                 embeddings: str | None = None) -> None:
        self.cfg = SemanticKNNConfig(tuple(last_n), tuple(recency), embeddings)
        self.last_n, self.recency = self.cfg.last_n[0], self.cfg.recency[0]
        self.ctx: FitContext | None = None
        self.vectors: np.ndarray | None = None  # (n_items, dim) float32, zero rows for items without one
        self.index: faiss.Index | None = None
        self.index_cols: np.ndarray | None = None  # catalog column of each faiss row
        self.popular: np.ndarray | None = None
        self.choices: dict = {}

    def fit(self, train: Examples, validation: Examples, ctx: FitContext) -> "SemanticKNN":
        """Load and index the embeddings; choose ``last_n`` and ``recency`` on validation."""
        self.ctx = ctx
        path = Path(self.cfg.embeddings) if self.cfg.embeddings else run_text_embeddings_path(ctx.run)
        if path is None:
            raise DataError("semantic_knn: needs a run folder (its embeddings.parquet) or an embeddings path")
        ids, vecs = read_embeddings(path)
        cols = item_columns(ctx.item_ids, ids)
        ok = cols >= 0
        if not ok.any():
            raise DataError(f"{path}: no embedding belongs to a catalog item")
        self.vectors = np.zeros((ctx.n_items, vecs.shape[1]), np.float32)
        self.vectors[cols[ok]] = l2_normalize(vecs[ok].astype(np.float32))
        self.index_cols = cols[ok]
        self.index = faiss.IndexFlatIP(vecs.shape[1])
        self.index.add(np.ascontiguousarray(self.vectors[self.index_cols]))
        counts = counts_per_item(ctx.item_ids, ctx.training_sequences(train).history_items)
        self.popular = popularity_ranking(ctx.item_ids, counts)
        tune = tuning_subset(validation, ctx)
        scores = {}
        for n in self.cfg.last_n:
            for r in (self.cfg.recency if n > 1 else self.cfg.recency[:1]):
                self.last_n, self.recency = n, r
                scores[(n, r)] = validation_score(self, tune, ctx)
        self.last_n, self.recency = max(scores, key=scores.get)
        self.choices = {"last_n": self.last_n, "recency": self.recency,
                        f"validation_{ctx.tune_metric}": scores[(self.last_n, self.recency)]}
        return self

    def recommend(self, queries: Examples, k: int, exclude: Sequence[np.ndarray] | None = None) -> np.ndarray:
        """The ``k`` nearest items to each query vector, excluded items skipped; popular for empty queries."""
        if self.ctx is None or self.index is None:
            raise DataError("semantic_knn: recommend called before fit")
        ctx = self.ctx
        query, has = self._query_vectors(queries)
        extra = 0 if exclude is None else max((len(e) for e in exclude), default=0)
        fetch = min(k + extra, self.index.ntotal)
        _, rows = self.index.search(query, fetch)
        cand = np.where(rows >= 0, ctx.item_ids[self.index_cols[np.maximum(rows, 0)]], -1)
        out = first_k_allowed(cand, ~excluded_mask(cand, exclude), k)
        if (~has).any():
            empty = np.flatnonzero(~has)
            out[empty] = fixed_order_top_k(self.popular, empty.size, k,
                                           None if exclude is None else [exclude[i] for i in empty])
        return out

    def _query_vectors(self, queries: Examples) -> tuple[np.ndarray, np.ndarray]:
        """Recency-weighted sums of the last ``last_n`` known history vectors, normalised; and which exist."""
        rows = ragged_rows(queries.history_offsets)
        age = queries.history_offsets[1:][rows] - 1 - np.arange(rows.size)
        cols = item_columns(self.ctx.item_ids, queries.history_items)
        keep = (age < self.last_n) & (cols >= 0)
        query = np.zeros((len(queries), self.vectors.shape[1]), np.float32)
        weight = (self.recency ** age[keep]).astype(np.float32)[:, None]
        np.add.at(query, rows[keep], self.vectors[cols[keep]] * weight)
        norms = np.linalg.norm(query, axis=1)
        has = norms > 0
        query[has] /= norms[has, None]
        return np.ascontiguousarray(query), has
