"""The co-purchase memory: a memorisation channel beside the decoder (LIGER-style hybrid re-scoring).

The decoder generalises over SID prefixes and loses rare products to their popular neighbours (docs/beauty.md,
"Where the gap to the baselines is"). This memory keeps what item-kNN keeps, the windowed co-purchase similarity
of the training sequences (``genrec.data.copurchase.similarity``), and re-scores the products the decoder's beam
already decoded: ``log p(SID) + weight * log(floor + sim(history, product))``, a product of experts. It never adds
a product the beam did not generate (results stay generated SIDs mapped through the index), and a product new
since training has no co-purchase, so it keeps its decoder score less a constant: cold-start products stay
reachable. Built from the training split only; saved as safetensors.
"""
from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from genrec.data.copurchase import pair_counts, query_matrix, similarity
from genrec.data.sequences import Examples, train_sequences
from genrec.rank.config import MemoryConfig
from semid.catalog import counts_per_item, item_columns
from semid.common import DataError
from semid.config import from_dict


class CoPurchaseMemory:
    """Co-purchase similarity between catalog products (``item_ids`` ascending), queried from histories."""

    def __init__(self, item_ids: np.ndarray, sim: sp.csr_matrix, cfg: MemoryConfig) -> None:
        self.item_ids, self.sim, self.cfg = np.asarray(item_ids, np.int64), sim.tocsr(), cfg

    @classmethod
    def build(cls, train: Examples, item_ids: np.ndarray, cfg: MemoryConfig) -> "CoPurchaseMemory":
        """From the decoder's training examples (held-out items never count)."""
        catalog = np.unique(np.asarray(item_ids, np.int64))
        seqs = train_sequences(train)
        counts = counts_per_item(catalog, seqs.history_items)
        sim = similarity(pair_counts(seqs, catalog, cfg.window), counts, cfg.settings)
        return cls(catalog, sim, cfg)

    def reach(self, histories: list[np.ndarray]) -> sp.csr_matrix:
        """sim(history, product) [B, n] over ``item_ids``, sparse: only co-purchased products, column indices
        sorted within each row."""
        lengths = np.array([h.size for h in histories], np.int64)
        offsets = np.r_[0, np.cumsum(lengths)]
        flat = np.concatenate(histories) if histories else np.zeros(0, np.int64)
        reach = (query_matrix(offsets, flat, self.item_ids, self.cfg.settings) @ self.sim).tocsr()
        reach.sort_indices()
        return reach

    def scores(self, histories: list[np.ndarray], candidates: np.ndarray) -> np.ndarray:
        """sim(history, candidate) [B, W] for candidate item ids [B, W] (-1 and unknown ids: 0)."""
        cols = item_columns(self.item_ids, candidates.reshape(-1)).reshape(candidates.shape)
        query = np.repeat(np.arange(candidates.shape[0]), candidates.shape[1])
        return sparse_lookup(self.reach(histories), query, cols.reshape(-1)).reshape(candidates.shape)

    def rescore(self, histories: list[np.ndarray], candidates: np.ndarray, log_probs: np.ndarray) -> np.ndarray:
        """The product of experts' log-scores [B, W] (dead candidates stay -inf)."""
        return fuse(log_probs, self.scores(histories, candidates), self.cfg.weight, self.cfg.floor)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        save_file({"item_ids": self.item_ids, "indptr": self.sim.indptr.astype(np.int64),
                   "indices": self.sim.indices.astype(np.int64), "data": self.sim.data.astype(np.float64)},
                  str(path), metadata={"config": json.dumps(asdict(self.cfg))})
        return path

    @classmethod
    def load(cls, path: str | Path, weight: float | None = None) -> "CoPurchaseMemory":
        """Read a saved memory with the settings it was built with (``weight``: another weight, e.g. to tune)."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: no co-purchase memory (train the run with memory.weight > 0)")
        t = load_file(str(path))
        with safe_open(str(path), "np") as f:
            cfg = from_dict(MemoryConfig, json.loads(f.metadata()["config"]), "memory")
        if weight is not None:
            cfg = replace(cfg, weight=float(weight))
        n = t["item_ids"].size
        sim = sp.csr_matrix((t["data"].astype(np.float64), t["indices"], t["indptr"]), shape=(n, n))
        return cls(t["item_ids"], sim, cfg)


def fuse(log_probs: np.ndarray, sim: np.ndarray, weight: float, floor: float) -> np.ndarray:
    """The product of experts in log space: ``log p(SID) + weight * log(floor + sim)``."""
    return log_probs + weight * np.log(floor + sim)


def sparse_lookup(matrix: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``matrix[rows[i], cols[i]]`` for every i, 0 where absent or ``cols[i]`` < 0; ``matrix`` must have
    sorted indices (one vectorised search, no dense row)."""
    n = max(matrix.shape[1], 1)
    row_of = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    keys = row_of * n + matrix.indices  # ascending: rows in order, sorted columns within a row
    want = np.asarray(rows, np.int64) * n + np.maximum(cols, 0)
    at = np.searchsorted(keys, want).clip(max=max(keys.size - 1, 0))
    out = np.zeros(want.size, np.float64)
    if keys.size:
        hit = (keys[at] == want) & (np.asarray(cols) >= 0)
        out[hit] = matrix.data[at[hit]]
    return out
