"""Per-product statistics of the training sequences that the ranker reads beside training popularity (which
the index holds): how often a shopper who bought the product bought it again, and how much of its buying
falls in the recent part of the shoppers' sequences (a trend without timestamps). Built from the training
split only, saved beside the ranker as safetensors (``genrec.run.layout.ITEM_STATS_FILE``)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from genrec.data.sequences import Examples
from semid.catalog import item_columns
from semid.common import DataError, atomic_write, ragged_rows

PRIOR = 2.0  # pseudo-shoppers at the catalog's mean rate, so a product bought by one shopper is not 0 or 1
RECENT = 1 / 3  # the latest share of each shopper's sequence that counts as recent


@dataclass
class ItemStats:
    item_ids: np.ndarray  # ascending
    rebuy_rate: np.ndarray  # shoppers who bought it twice or more / shoppers who bought it (smoothed)
    recent_share: np.ndarray  # share of its purchases in the recent third of their sequences (smoothed)

    @classmethod
    def build(cls, sequences: Examples, catalog: np.ndarray) -> "ItemStats":
        """From each shopper's whole training sequence (``train_sequences``)."""
        catalog = np.unique(np.asarray(catalog, np.int64))
        cols = item_columns(catalog, sequences.history_items)
        rows = ragged_rows(sequences.history_offsets)
        ok = cols >= 0
        n = catalog.size
        pairs, times = np.unique(rows[ok] * n + cols[ok], return_counts=True)
        buyers = np.bincount(pairs % n, minlength=n).astype(np.float64)
        again = np.bincount(pairs % n, weights=times > 1, minlength=n)
        mean_rate = again.sum() / max(buyers.sum(), 1.0)
        lengths = np.diff(sequences.history_offsets)
        age = sequences.history_offsets[1:][rows] - 1 - np.arange(rows.size)
        recent = age < np.ceil(RECENT * lengths[rows])
        total = np.bincount(cols[ok], minlength=n).astype(np.float64)
        late = np.bincount(cols[ok], weights=recent[ok], minlength=n)
        return cls(catalog, (again + PRIOR * mean_rate) / (buyers + PRIOR),
                   (late + PRIOR * RECENT) / (total + PRIOR))

    def lookup(self, item_ids: np.ndarray) -> dict[str, np.ndarray]:
        """The statistics of ``item_ids`` (NaN for a product the stats do not know)."""
        cols = item_columns(self.item_ids, item_ids)
        known = cols >= 0
        return {name: np.where(known, getattr(self, name)[np.maximum(cols, 0)], np.nan)
                for name in ("rebuy_rate", "recent_share")}

    def save(self, path: str | Path) -> Path:
        arrays = {"item_ids": self.item_ids, "rebuy_rate": self.rebuy_rate, "recent_share": self.recent_share}
        return atomic_write(Path(path), lambda tmp: save_file(arrays, str(tmp)))

    @classmethod
    def load(cls, path: str | Path) -> "ItemStats":
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: no item statistics (genrec train writes them with the learned ranker)")
        t = load_file(str(path))
        return cls(t["item_ids"], t["rebuy_rate"], t["recent_share"])
