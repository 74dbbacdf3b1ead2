"""Who stocks what, one bit per (retailer, catalog position): a (retailers, ceil(n / 8)) byte matrix in
little bit order, rows in ascending retailer id. At 100 retailers and 5M products that is 62.5 MB, where the
same stock as (retailer, item) int64 pairs is 3.2 GB (about 200M pairs); the pairs are made on demand
(``pairs``) for the files and the pair forest. Positions index the catalog as the index holds it (ascending
item id), so a catalog that gains or loses products remaps the columns (``remap``, ``keep``)."""
from __future__ import annotations

import numpy as np

from semid.common import DataError


class StockBits:
    """Stock as bits: ``retailers`` (ascending) and ``bits`` [R, ceil(n_items / 8)] uint8."""

    def __init__(self, n_items: int = 0) -> None:
        self.n_items = int(n_items)
        self.retailers = np.zeros(0, np.int64)
        self.bits = np.zeros((0, _width(self.n_items)), np.uint8)

    # ----- reading --------------------------------------------------------------------------------------

    @property
    def n_pairs(self) -> int:
        """How many (retailer, product) pairs are set."""
        return int(np.bitwise_count(self.bits).sum())

    @property
    def nbytes(self) -> int:
        return int(self.bits.nbytes + self.retailers.nbytes)

    def row_of(self, retailer: int) -> int:
        """The bit row of ``retailer``, -1 when it has none."""
        at = int(np.searchsorted(self.retailers, retailer))
        return at if at < self.retailers.size and self.retailers[at] == retailer else -1

    def mask(self, retailer: int) -> np.ndarray:
        """Bool [n_items]: which catalog positions ``retailer`` stocks (all False for an unknown one)."""
        row = self.row_of(retailer)
        if row < 0:
            return np.zeros(self.n_items, bool)
        return np.unpackbits(self.bits[row], count=self.n_items, bitorder="little").astype(bool)

    def positions(self, retailer: int) -> np.ndarray:
        """Ascending catalog positions ``retailer`` stocks."""
        return np.flatnonzero(self.mask(retailer))

    def has(self, retailers: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Whether each retailer stocks the catalog position beside it (unknown retailers stock nothing)."""
        retailers, positions = np.asarray(retailers, np.int64), np.asarray(positions, np.int64)
        if not self.retailers.size or not positions.size:
            return np.zeros(positions.shape, bool)
        row = np.searchsorted(self.retailers, retailers).clip(max=self.retailers.size - 1)
        known = self.retailers[row] == retailers
        byte = self.bits[row, positions >> 3]
        return known & (((byte >> (positions & 7).astype(np.uint8)) & 1) == 1)

    def pairs(self) -> np.ndarray:
        """[m, 2] int64 (retailer_id, catalog position), ascending by retailer then position."""
        parts = [np.stack([np.full(p.size, r, np.int64), p], axis=1)
                 for r, p in ((int(r), self.positions(int(r))) for r in self.retailers)]
        return np.concatenate(parts) if parts else np.zeros((0, 2), np.int64)

    # ----- writing --------------------------------------------------------------------------------------

    def add(self, retailers: np.ndarray, positions: np.ndarray) -> None:
        """Set the (retailer, position) pairs, adding rows for retailers not seen before."""
        retailers, positions = np.asarray(retailers, np.int64), np.asarray(positions, np.int64)
        self._check(positions)
        self.ensure(np.unique(retailers))
        for r, pos in _by_retailer(retailers, positions):
            row = self.row_of(r)
            mask = np.unpackbits(self.bits[row], count=self.n_items, bitorder="little").astype(bool)
            mask[pos] = True
            self.bits[row] = np.packbits(mask, bitorder="little")

    def clear(self, retailer: int, positions: np.ndarray) -> int:
        """Unset ``retailer``'s bits at ``positions``; returns how many were set."""
        positions = np.unique(np.asarray(positions, np.int64))
        self._check(positions)
        row = self.row_of(retailer)
        if row < 0 or not positions.size:
            return 0
        mask = np.unpackbits(self.bits[row], count=self.n_items, bitorder="little").astype(bool)
        gone = int(mask[positions].sum())
        mask[positions] = False
        self.bits[row] = np.packbits(mask, bitorder="little")
        return gone

    def ensure(self, retailers: np.ndarray) -> None:
        """Rows (empty) for every retailer of ``retailers`` that has none yet."""
        new = np.setdiff1d(np.asarray(retailers, np.int64), self.retailers)
        if not new.size:
            return
        all_ids = np.concatenate([self.retailers, new])
        order = np.argsort(all_ids, kind="stable")
        bits = np.concatenate([self.bits, np.zeros((new.size, self.bits.shape[1]), np.uint8)])
        self.retailers, self.bits = all_ids[order], np.ascontiguousarray(bits[order])

    def remap(self, n_items: int, new_position: np.ndarray) -> None:
        """The catalog grew to ``n_items``: old position p is now ``new_position[p]``; new columns are unset."""
        new_position = np.asarray(new_position, np.int64)
        if new_position.size != self.n_items:
            raise DataError(f"stock: {new_position.size} new positions for {self.n_items} products")
        bits = np.zeros((self.retailers.size, _width(n_items)), np.uint8)
        for row in range(self.retailers.size):
            old = np.unpackbits(self.bits[row], count=self.n_items, bitorder="little").astype(bool)
            mask = np.zeros(n_items, bool)
            mask[new_position[old]] = True
            bits[row] = np.packbits(mask, bitorder="little")
        self.n_items, self.bits = int(n_items), bits

    def keep(self, kept: np.ndarray) -> None:
        """The catalog lost the positions where ``kept`` is False; the rest close up in order."""
        kept = np.asarray(kept, bool)
        if kept.size != self.n_items:
            raise DataError(f"stock: a keep mask of {kept.size} for {self.n_items} products")
        n = int(kept.sum())
        bits = np.zeros((self.retailers.size, _width(n)), np.uint8)
        for row in range(self.retailers.size):
            old = np.unpackbits(self.bits[row], count=self.n_items, bitorder="little").astype(bool)
            bits[row] = np.packbits(old[kept], bitorder="little")
        self.n_items, self.bits = n, bits

    def _check(self, positions: np.ndarray) -> None:
        if positions.size and not 0 <= int(positions.min()) <= int(positions.max()) < self.n_items:
            raise DataError(f"stock: positions must lie in [0, {self.n_items})")


def _width(n: int) -> int:
    return -(-int(n) // 8)


def _by_retailer(retailers: np.ndarray, positions: np.ndarray):
    """(retailer, its positions) groups; no sort when the retailers already come in runs (saved stock does)."""
    if not retailers.size:
        return
    if not (retailers[1:] >= retailers[:-1]).all():
        order = np.argsort(retailers, kind="stable")
        retailers, positions = retailers[order], positions[order]
    cuts = np.flatnonzero(retailers[1:] != retailers[:-1]) + 1
    starts, ends = np.r_[0, cuts], np.r_[cuts, retailers.size]
    for s, e in zip(starts.tolist(), ends.tolist()):
        yield int(retailers[s]), positions[s:e]
