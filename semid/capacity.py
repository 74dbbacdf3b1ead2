"""A cap on how many products share one code tuple.

Greedy nearest-codeword assignment leaves large catalogs with big collision groups: on the generated 5M
catalog (docs/scaling.md, "The 5M bars") 32,808 products share one code tuple, because every product of a
leaf sits near the same codewords at the deeper levels. The disambiguation level must then be as wide as the
largest group, and that widens the decoder's vocabulary (34,637 tokens instead of about 2,000) and every
decoding step with it.

With a capacity C, the last level is reassigned inside every prefix (the first L-1 codes) whose products would
put more than C on one tuple: the prefix's products are split into m = ceil(g / C) balanced cells by a k-d
tree over their last-level residuals (each split at the median of the widest coordinate, so a cell holds
products that are near each other), and the cells take distinct last-level codewords by a minimum-cost
assignment of the cells' mean residuals to the codebook (``scipy.optimize.linear_sum_assignment``). No tuple
then holds more than max(C, ceil(g / K)) products (K the last codebook's size), and the last code still says
where in the prefix a product lies. Prefixes below the cap keep their nearest codewords.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from semid.common import DataError

Residuals = Callable[[np.ndarray], np.ndarray]  # row indices -> (rows, D) float32 residuals before the last level


def cap_last_level(codes: np.ndarray, residuals: Residuals, last_codebook: np.ndarray, capacity: int) -> np.ndarray:
    """``codes`` (n, L) with the last column reassigned so that no code tuple holds more than
    max(``capacity``, ceil(g / K)) products, g being the products of its prefix. ``residuals(rows)`` gives the
    residuals the last codebook quantises, for the products at ``rows`` (only prefixes over the cap ask)."""
    codes = np.array(codes, dtype=np.int64, copy=True)
    book = np.asarray(last_codebook, dtype=np.float32)
    _check(codes, book, capacity)
    k = book.shape[0]
    group = prefix_groups(codes)
    load = np.bincount(group * k + codes[:, -1])
    over = np.zeros(int(group.max()) + 1, bool)
    over[np.flatnonzero(load > capacity) // k] = True
    rows = np.flatnonzero(over[group])
    if rows.size == 0:
        return codes
    rows = rows[np.argsort(group[rows], kind="stable")]
    starts, sizes = _segments(group[rows])
    parts = -(-sizes // np.maximum(capacity, -(-sizes // k)))  # cells per prefix
    res = np.asarray(residuals(rows), dtype=np.float32)
    if res.shape != (rows.size, book.shape[1]):
        raise DataError(f"cap_last_level: residuals must be ({rows.size}, {book.shape[1]}), got {res.shape}")
    perm, cell_start = kd_cells(res, starts, sizes, parts)
    codes[rows[perm], -1] = _cell_codes(res[perm], cell_start, starts, parts, book)
    return codes


def place_new(codes: np.ndarray, residuals: np.ndarray, last_codebook: np.ndarray, existing: np.ndarray,
              capacity: int) -> np.ndarray:
    """Codes for new products next to ``existing`` codes of a capped table: a new product whose tuple is full
    (``capacity`` or more products, the prefix's own cap where that is larger) takes the nearest last-level
    codeword whose tuple still has room. New products do not count against each other."""
    codes = np.array(codes, dtype=np.int64, copy=True)
    book = np.asarray(last_codebook, dtype=np.float32)
    _check(codes, book, capacity)
    if codes.shape[0] == 0:
        return codes
    k = book.shape[0]
    existing = np.asarray(existing, dtype=np.int64)
    _, inverse = np.unique(np.concatenate([existing[:, :-1], codes[:, :-1]]), axis=0, return_inverse=True)
    group = inverse.reshape(-1)
    old, new = group[: len(existing)], group[len(existing):]
    load = np.bincount(old * k + existing[:, -1], minlength=(int(group.max()) + 1) * k).reshape(-1, k)
    cap = np.maximum(capacity, -(-load.sum(1) // k))  # a prefix split wider than the cap keeps its own
    full = load[new] >= cap[new, None]  # (n_new, K)
    dist = (residuals.astype(np.float32) ** 2).sum(1, keepdims=True) - 2 * residuals @ book.T + (book ** 2).sum(1)
    dist[full] = np.inf
    room = ~full.all(1)  # where every tuple of the prefix is full, the nearest codeword (its group grows)
    codes[room, -1] = dist[room].argmin(1)
    return codes


def prefix_groups(codes: np.ndarray) -> np.ndarray:
    """Group id per row of its first L-1 codes (one group for every row when L is 1)."""
    if codes.shape[1] == 1:
        return np.zeros(codes.shape[0], np.int64)
    _, inverse = np.unique(codes[:, :-1], axis=0, return_inverse=True)
    return inverse.reshape(-1).astype(np.int64)


def kd_cells(x: np.ndarray, starts: np.ndarray, sizes: np.ndarray, parts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split each segment [start, start + size) of ``x``'s rows into ``parts`` balanced cells, halving the parts
    at every round at the median of the cell's widest coordinate. Returns (a permutation of the rows in which
    every cell is contiguous, the start of every cell in it, sorted). No cell holds more than
    ceil(size / parts) rows: a cell of s rows and p parts gives its left half floor(s x (p // 2) / p) rows,
    so s <= p x c holds for both halves whenever it holds for the cell. Per-cell sums run on torch's
    ``index_add_`` (numpy's ``reduceat`` over rows is many times slower on millions of rows)."""
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    perm = torch.arange(xt.shape[0])
    start, size, part = (np.asarray(a, np.int64) for a in (starts, sizes, parts))
    while (part > 1).any():
        xs = xt[perm]
        cell = torch.from_numpy(np.repeat(np.arange(start.size), size))
        widest = torch.from_numpy(cell_spread(xs, cell, size).argmax(1))
        key = xs.gather(1, widest[cell][:, None]).squeeze(1)
        key[torch.from_numpy(part)[cell] <= 1] = 0.0
        by_key = torch.sort(key, stable=True).indices
        perm = perm[by_key[torch.sort(cell[by_key], stable=True).indices]]  # by cell, then key within it
        split = part > 1
        left_part = part // 2
        left = size * left_part // np.maximum(part, 1)
        start, size, part = _halve(start, size, part, split, left, left_part)
    return perm.numpy(), start


def cell_means(xs: torch.Tensor, cell: torch.Tensor, size: np.ndarray) -> torch.Tensor:
    """Mean row of each cell, (cells, D); ``cell`` names each row's cell."""
    sums = torch.zeros(size.size, xs.shape[1]).index_add_(0, cell, xs)
    return sums / torch.from_numpy(size).to(sums.dtype)[:, None]


def cell_spread(xs: torch.Tensor, cell: torch.Tensor, size: np.ndarray) -> np.ndarray:
    """Sum of squared deviations from the cell's mean, per cell and coordinate (cells, D)."""
    dev = xs - cell_means(xs, cell, size)[cell]
    return torch.zeros(size.size, xs.shape[1]).index_add_(0, cell, dev * dev).numpy()


def _halve(start, size, part, split, left, left_part):
    """Cells after one round: each split cell becomes (left rows, left parts) and the rest, in order."""
    s2 = np.stack([start, start + left], 1)
    z2 = np.stack([left, size - left], 1)
    p2 = np.stack([left_part, part - left_part], 1)
    keep = np.stack([np.ones_like(split), split], 1)  # an unsplit cell keeps only its first slot...
    z2[~split, 0], p2[~split, 0] = size[~split], part[~split]  # ...which is the whole cell
    return s2[keep], z2[keep], p2[keep]


def _cell_codes(x: np.ndarray, cell_start: np.ndarray, starts: np.ndarray, parts: np.ndarray,
                book: np.ndarray) -> np.ndarray:
    """Per row (in cell order), the codeword its cell takes: within each prefix, distinct codewords by a
    minimum-cost assignment of cell means to the codebook."""
    sizes = np.diff(np.r_[cell_start, x.shape[0]])
    cell = torch.from_numpy(np.repeat(np.arange(sizes.size), sizes))
    means = cell_means(torch.from_numpy(np.ascontiguousarray(x)), cell, sizes).numpy()
    norms = (book ** 2).sum(1)
    first_cell = np.r_[0, np.cumsum(parts)[:-1]]
    code = np.empty(cell_start.size, np.int64)
    for first, n in zip(first_cell.tolist(), parts.tolist()):
        m = means[first:first + n]
        cells, chosen = linear_sum_assignment(norms - 2 * m @ book.T)  # squared distance less |mean|^2
        code[first + cells] = chosen
    return np.repeat(code, sizes)


def _segments(sorted_group: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start, size) of each run of equal values in a sorted array."""
    first = np.flatnonzero(np.r_[True, sorted_group[1:] != sorted_group[:-1]])
    return first, np.diff(np.r_[first, sorted_group.size])


def _check(codes: np.ndarray, book: np.ndarray, capacity: int) -> None:
    if isinstance(capacity, bool) or not isinstance(capacity, (int, np.integer)) or capacity < 1:
        raise DataError(f"last-level capacity must be a whole number >= 1, got {capacity!r}")
    if codes.ndim != 2 or codes.shape[1] < 1:
        raise DataError(f"codes must be (n, L), got shape {codes.shape}")
    if book.ndim != 2 or book.shape[0] < 1:
        raise DataError(f"the last codebook must be (K, D), got shape {book.shape}")
    if codes.size and (codes[:, -1].min() < 0 or codes[:, -1].max() >= book.shape[0]):
        raise DataError(f"last-level codes must lie in 0..{book.shape[0] - 1}")
