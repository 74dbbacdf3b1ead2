"""Hierarchical batch sampler: every batch picks one parent category, fills about half of itself with
several products from each of a few of that parent's leaves (strong and moderate positives for the
taxonomy loss), and the rest with products from unrelated categories (its negatives). Given the embeddings,
part of the rest comes from the unrelated products that look most like the parent category: the hard
negatives that would otherwise share its codes. Seeded."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from semid.contrastive import leaf_ids, parent_ids

HARD_ROWS = 1 << 16  # products scored per slice when a parent's hard-negative pool is built


@dataclass
class SamplerConfig:
    """How a hierarchical batch is composed."""

    batch_size: int = 512  # products per batch
    parent_share: float = 0.5  # share of the batch drawn from one parent category's leaves
    per_leaf: int = 8  # products per leaf in that share, so each leaf brings several strong positives
    hard_share: float = 0.5  # share of the rest drawn from the unrelated products most similar to the parent
    hard_pool: float = 0.05  # those "most similar" products: this share of the unrelated ones (dot product with the parent mean)


class HierarchicalSampler:
    """Yields batches of product indices; ``len(sampler)`` batches make one epoch (about n products)."""

    def __init__(self, nodes: np.ndarray, cfg: SamplerConfig, seed: int = 0, embeddings: np.ndarray | None = None):
        self.cfg = cfg
        self.n = len(nodes)
        self.top = nodes[:, 0]
        self.embeddings = embeddings
        self._hard: dict[int, np.ndarray] = {}  # parent position -> its hard-negative pool, built on first use
        self.rng = np.random.default_rng(seed)
        leaf, parent = leaf_ids(nodes), parent_ids(nodes)
        self.known = np.flatnonzero(leaf >= 0)
        order = np.lexsort((np.arange(self.n), leaf))  # products grouped by leaf, leaves ascending
        order = order[leaf[order] >= 0]
        leaves, starts, counts = np.unique(leaf[order], return_index=True, return_counts=True)
        self.leaf_members = np.split(order, starts[1:]) if len(order) else []
        leaf_parent = parent[order[starts]] if len(order) else np.zeros(0, np.int64)
        self.parents = np.unique(leaf_parent)
        self.parent_leaves = [np.flatnonzero(leaf_parent == p) for p in self.parents]  # leaf positions
        sizes = np.array([counts[ls].sum() for ls in self.parent_leaves], np.float64)
        self.parent_p = sizes / sizes.sum() if sizes.size else sizes  # pick parents by product count
        self.product_parent_pos = np.full(self.n, -1, np.int64)  # which of self.parents a product is under
        if len(order):
            leaf_pos = np.searchsorted(leaves, leaf[order])
            self.product_parent_pos[order] = np.searchsorted(self.parents, leaf_parent[leaf_pos])

    def __len__(self) -> int:
        return max(1, -(-self.n // self.cfg.batch_size))

    def __iter__(self) -> Iterator[np.ndarray]:
        for _ in range(len(self)):
            yield self.batch()

    def batch(self) -> np.ndarray:
        """One batch: about ``parent_share`` from a random parent's leaves, the rest from outside it."""
        size = min(self.cfg.batch_size, self.n)
        if len(self.parents) < 2:  # no tree to exploit: a uniform batch
            return self.rng.choice(self.n, size, replace=False)
        p = self.rng.choice(len(self.parents), p=self.parent_p)
        inside = self._from_parent(p, int(round(size * self.cfg.parent_share)))
        outside = self._unrelated(p)
        want = min(size - len(inside), len(outside))
        hard = np.zeros(0, np.int64)
        if self.embeddings is not None and self.cfg.hard_share > 0:
            pool = self._hard_pool(p, outside)
            hard = self.rng.choice(pool, min(int(round(want * self.cfg.hard_share)), len(pool)), replace=False)
        rest = self.rng.choice(np.setdiff1d(outside, hard, assume_unique=True), want - len(hard), replace=False)
        return np.concatenate([inside, hard, rest])

    def _unrelated(self, p: int) -> np.ndarray:
        """Products sharing no ancestor with parent ``p`` (else, in a single-rooted tree, all outside it)."""
        members = self.product_parent_pos == p
        tops = np.unique(self.top[members])
        outside = np.flatnonzero(~np.isin(self.top, tops))
        return outside if len(outside) else np.flatnonzero(~members)

    def _hard_pool(self, p: int, outside: np.ndarray) -> np.ndarray:
        """The ``hard_pool`` share of ``outside`` most aligned with parent ``p``'s mean embedding."""
        if p not in self._hard:
            members = np.flatnonzero(self.product_parent_pos == p)
            centre = self.embeddings[members].mean(0)
            scores = np.concatenate([self.embeddings[outside[s:s + HARD_ROWS]] @ centre  # no catalog-sized copy
                                     for s in range(0, len(outside), HARD_ROWS)])
            k = max(1, int(round(len(outside) * self.cfg.hard_pool)))
            self._hard[p] = np.sort(outside[np.argpartition(-scores, k - 1)[:k]])
        return self._hard[p]

    def _from_parent(self, p: int, want: int) -> np.ndarray:
        """About ``want`` products from parent ``p``: up to want/per_leaf random leaves, sharing the quota
        equally (so each brings at least ``per_leaf`` where it has them); fewer if the parent is small."""
        leaves = self.rng.permutation(self.parent_leaves[p])
        leaves = leaves[: max(1, want // self.cfg.per_leaf)]
        quota = -(-want // len(leaves))
        picked = [self.rng.choice(m, min(quota, len(m)), replace=False) for m in (self.leaf_members[i] for i in leaves)]
        return np.concatenate(picked)[:want]
