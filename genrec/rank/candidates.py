"""A batch's candidates as flat arrays: one row per (query, product) any source proposed, the sources that
proposed it as bits, and its feature columns. No per-candidate Python objects: sources, features and rankers
all work on these arrays (``genrec.rank.sources``, ``genrec.rank.features``, ``genrec.rank.rankers``)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from index.candidates import SOURCE_AGAIN, SOURCE_BEAM, SOURCE_CO, SOURCE_FILL, SOURCE_NEW

SOURCE_BITS = {"beam": SOURCE_BEAM, "again": SOURCE_AGAIN, "co": SOURCE_CO, "new": SOURCE_NEW, "fill": SOURCE_FILL}
# what a person is shown, in order of precedence: a re-buy is "buy again" even when the decoder also wrote it
SOURCE_LABELS = ((SOURCE_AGAIN, "buy again"), (SOURCE_BEAM, "generated"), (SOURCE_CO, "co-purchase"),
                 (SOURCE_NEW, "new product"), (SOURCE_FILL, "similar"))


def source_label(bits: int) -> str:
    """The one word a list shows for a product proposed by the sources ``bits`` ("" for none)."""
    return next((label for bit, label in SOURCE_LABELS if int(bits) & bit), "")


def source_names(bits: int) -> list[str]:
    """Every source in ``bits``, by config name (``beam``, ``again``, ...)."""
    return [name for name, bit in SOURCE_BITS.items() if int(bits) & bit]


@dataclass
class CandidateSet:
    """Candidates of a batch of B queries, sorted by query then position (``index.catalog_view``)."""

    query: np.ndarray  # [N] int64 query of each candidate
    pos: np.ndarray  # [N] int64 the product's position in the index's catalog view
    item_ids: np.ndarray  # [N] int64
    sources: np.ndarray  # [N] uint8 SOURCE_* bits
    n_queries: int
    features: np.ndarray | None = None  # [N, F] float32, NaN where a feature does not apply
    names: tuple[str, ...] = ()  # the feature columns' names

    def __len__(self) -> int:
        return int(self.query.size)

    def counts(self) -> np.ndarray:
        """Candidates per query [B]."""
        return np.bincount(self.query, minlength=self.n_queries)

    def subset(self, keep: np.ndarray) -> "CandidateSet":
        """The candidates where ``keep`` (a bool mask) holds; queries keep their numbers."""
        feats = None if self.features is None else self.features[keep]
        return CandidateSet(self.query[keep], self.pos[keep], self.item_ids[keep], self.sources[keep],
                            self.n_queries, feats, self.names)

    def columns(self, names: tuple[str, ...]) -> np.ndarray:
        """The feature matrix with exactly ``names``, in that order (a ranker's columns)."""
        missing = [n for n in names if n not in self.names]
        if missing:
            raise ValueError(f"rank: the candidates lack features {missing} (have {list(self.names)})")
        at = [self.names.index(n) for n in names]
        return self.features[:, at]


def pair_index(query: np.ndarray, items: np.ndarray, want_query: np.ndarray, want_items: np.ndarray) -> np.ndarray:
    """For each wanted (query, item) pair, the index of an equal pair among (``query``, ``items``), -1 where
    there is none: the one join of candidates with targets, histories and each other."""
    query, items = np.asarray(query, np.int64), np.asarray(items, np.int64)
    want_query, want_items = np.asarray(want_query, np.int64), np.asarray(want_items, np.int64)
    span = int(max(items.max(initial=0), want_items.max(initial=0))) + 1
    keys = query * span + items
    order = np.argsort(keys, kind="stable")
    want = want_query * span + want_items
    at = np.searchsorted(keys[order], want).clip(max=max(keys.size - 1, 0))
    hit = keys[order][at] == want if keys.size else np.zeros(want.size, bool)
    return np.where(hit, order[at] if keys.size else 0, -1)


def union(parts: list[tuple[np.ndarray, np.ndarray, int]], item_of_pos: np.ndarray, n_queries: int,
          n_positions: int) -> CandidateSet:
    """One candidate per (query, position) from sources' ``(query, pos, bit)`` parts, its bits OR-ed."""
    if not parts:
        empty = np.zeros(0, np.int64)
        return CandidateSet(empty, empty, empty, np.zeros(0, np.uint8), n_queries)
    keys = np.concatenate([q * n_positions + p for q, p, _ in parts])
    bits = np.concatenate([np.full(q.size, bit, np.uint8) for q, _, bit in parts])
    uniq, inverse = np.unique(keys, return_inverse=True)
    merged = np.zeros(uniq.size, np.uint8)
    np.bitwise_or.at(merged, inverse, bits)
    query, pos = uniq // n_positions, uniq % n_positions
    return CandidateSet(query, pos, item_of_pos[pos], merged, n_queries)
