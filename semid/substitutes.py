"""Substitutes read off the code itself: products ranked by how many leading SID codewords they share with a
product (a customer out of Pecorino Romano takes Parmigiano Reggiano, same level 4, before Gorgonzola, same
level 3), then by embedding cosine, within a set of allowed products (a retailer's stock)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from semid.catalog import ITEMS_FILE, read_items
from semid.common import DataError
from semid.embeddings import EMBEDDINGS_FILE, read_embeddings
from semid.intrinsic import normalize
from semid.sids import codes_matrix
from semid.store import SIDS_FILE, read_sids


def rank_substitutes(codes: np.ndarray, unit: np.ndarray, row: int, allowed: np.ndarray | None = None,
                     k: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``k`` rows (other than ``row``) sharing the longest code prefix with ``row``, ties broken by cosine
    of the unit vectors, then by row; only rows where ``allowed`` (a boolean mask) holds. Returns (rows,
    shared levels, cosine)."""
    candidates = np.flatnonzero(allowed) if allowed is not None else np.arange(len(codes))
    candidates = candidates[candidates != row]
    depth = np.cumprod(codes == codes[row], axis=1).sum(axis=1)[candidates]
    cosine = (unit @ unit[row])[candidates]  # all rows, then pick: no copy of the candidates' vectors
    if k < candidates.size:  # keep the k best and every tie of the k-th (cosine lies in [-1, 1], under 3 apart)
        score = 3.0 * depth + cosine
        kth = np.partition(score, candidates.size - k)[candidates.size - k]
        keep = np.flatnonzero(score >= kth)
        candidates, depth, cosine = candidates[keep], depth[keep], cosine[keep]
    order = np.lexsort((candidates, -cosine, -depth))[:k]
    return candidates[order], depth[order], cosine[order]


@dataclass
class Substitutes:
    """A run's products (rows sorted by item id) with their codes, SID strings, unit embeddings, titles and
    leaf categories: what ``rank_substitutes`` needs plus what to print."""

    item_ids: np.ndarray
    codes: np.ndarray
    sids: np.ndarray
    unit: np.ndarray
    titles: np.ndarray
    categories: np.ndarray  # full category path "a > b > c" ("" where none)

    @classmethod
    def from_run(cls, run: str | Path) -> "Substitutes":
        """Read ``items.parquet``, ``embeddings.parquet`` and ``sids.parquet`` of a run folder."""
        run = Path(run)
        items = read_items(run / ITEMS_FILE)
        ids, vectors = read_embeddings(run / EMBEDDINGS_FILE)
        sids = read_sids(run)
        order = np.argsort(ids, kind="stable")
        ids, vectors = ids[order], vectors[order]
        items = items.take(pa.array(_positions(items.column("item_id").to_numpy(), ids, ITEMS_FILE)))
        sids = sids.take(pa.array(_positions(sids.column("item_id").to_numpy(), ids, SIDS_FILE)))
        paths = pc.fill_null(pc.binary_join(items.column("category_path"), " > "), "")
        return cls(ids, codes_matrix(sids), np.asarray(sids.column("sid").to_pylist(), dtype=object),
                   normalize(vectors), np.asarray(items.column("title").to_pylist(), dtype=object),
                   np.asarray(paths.to_pylist(), dtype=object))

    def row_of(self, item_id: int) -> int | None:
        pos = int(np.searchsorted(self.item_ids, item_id))
        return pos if pos < self.item_ids.size and self.item_ids[pos] == item_id else None

    def allowed(self, stocked: np.ndarray | None) -> np.ndarray | None:
        """Mask of rows whose item id is in ``stocked`` (None: every product)."""
        return None if stocked is None else np.isin(self.item_ids, stocked)

    def for_item(self, item_id: int, k: int = 10, stocked: np.ndarray | None = None) -> list[dict]:
        """Ranked substitutes of ``item_id`` among ``stocked`` item ids (DataError for an unknown product)."""
        row = self.row_of(item_id)
        if row is None:
            raise DataError(f"item {item_id} has no SID and embedding in this run")
        rows, depth, cosine = rank_substitutes(self.codes, self.unit, row, self.allowed(stocked), k)
        return [{"item_id": int(self.item_ids[r]), "sid": str(self.sids[r]), "title": str(self.titles[r]),
                 "category": str(self.categories[r]), "shared_levels": int(d), "cosine": round(float(c), 4)}
                for r, d, c in zip(rows, depth, cosine)]

    def category_share(self, k: int = 5, sample: int = 2000, seed: int = 0) -> dict:
        """Over a seeded sample of products with a category: the share of their top ``k`` substitutes in the
        same leaf category, beside the top ``k`` nearest by embedding alone."""
        labelled = np.flatnonzero(self.categories != "")
        rows = np.random.default_rng(seed).choice(labelled, size=min(sample, labelled.size), replace=False)
        by_code = by_cosine = 0
        for row in rows:
            subs, _, _ = rank_substitutes(self.codes, self.unit, row, None, k)
            by_code += int((self.categories[subs] == self.categories[row]).sum())
            sims = self.unit @ self.unit[row]
            sims[row] = -np.inf
            nearest = np.argpartition(-sims, k)[:k]
            by_cosine += int((self.categories[nearest] == self.categories[row]).sum())
        total = max(rows.size * k, 1)
        return {"items": int(rows.size), "k": k, "same_category_share": by_code / total,
                "nearest_by_embedding_share": by_cosine / total}


def _positions(ids: np.ndarray, wanted: np.ndarray, what: str) -> np.ndarray:
    order = np.argsort(ids, kind="stable")
    pos = np.searchsorted(ids[order], wanted)
    pos = np.minimum(pos, ids.size - 1)
    if ids.size == 0 or not np.array_equal(ids[order][pos], wanted):
        raise DataError(f"{what}: does not hold every product of {EMBEDDINGS_FILE}")
    return order[pos]
