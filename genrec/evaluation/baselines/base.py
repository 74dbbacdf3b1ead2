"""The contract every baseline recommender meets, so the evaluation harness treats them all alike.

A baseline is fitted on the training examples of a split (``genrec.data.sequences.make_splits``), tunes its own
hyper-parameters and early stopping on the validation examples, then returns, per query history, its top-K
item ids as an int64 ``[B, K]`` array padded with -1. The ranking universe is ``FitContext.item_ids`` (the
whole catalog: full ranking). Helpers here map item ids to score columns and pick top K from dense,
sparse or shared scores, with ties broken deterministically.

Optional attributes a baseline may set, read by the harness: ``uses_full_history = True`` (its queries
and validation examples then carry the shopper's whole history instead of the last ``max_items``) and
``choices`` (a dict of the settings validation picked, reported in the result JSON).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol, Sequence, runtime_checkable

import numpy as np
import pyarrow as pa
import scipy.sparse as sp
import torch

from genrec.data.sequences import Examples, train_sequences
from genrec.run.layout import EMBEDDINGS_FILE, TEXT_EMBEDDINGS_FILE
from semid.catalog import item_columns
from semid.common import DataError, ragged_rows

PAD_ITEM = -1  # item id filling a row of recommendations shorter than K


@dataclass
class FitContext:
    """What a baseline may know besides the examples: the catalog, the run, the seed, how to tune."""

    item_ids: np.ndarray  # (n_items,) int64, ascending: every item a model may recommend (score columns)
    items: pa.Table | None = None  # items.parquet rows (brand, category_path, ...), for content baselines
    run: Path | None = None  # the generative run folder (embeddings.parquet, sids.parquet), None without one
    seed: int = 0  # seeds every random choice of the baseline
    device: str = "cpu"  # torch device for neural baselines
    k_values: tuple[int, ...] = (10,)  # cut-offs the harness reports
    tune_metric: str = "ndcg@10"  # the validation metric every baseline maximises when choosing settings
    tune_examples: int | None = 5000  # validation examples used for choosing settings (None: all)
    tune_with_exclusion: bool = True  # score each setting with and without the history excluded, keep the better
    max_items: int = 50  # history cap of the training windows and queries it is given
    options: dict = field(default_factory=dict)  # per-baseline overrides, e.g. {"max_epochs": 5} in quick runs
    sequences: Examples | None = None  # each shopper's full training sequence (history only); None: rebuilt

    def training_sequences(self, train: Examples) -> Examples:
        """Each shopper's whole training sequence (oldest first): ``sequences`` if the harness gave them,
        else rebuilt from the training windows (``train_sequences``)."""
        return self.sequences if self.sequences is not None else train_sequences(train)

    def __post_init__(self) -> None:
        self.item_ids = np.asarray(self.item_ids, dtype=np.int64)
        if self.item_ids.ndim != 1 or self.item_ids.size == 0:
            raise DataError("FitContext.item_ids: need a non-empty 1-D array of item ids")
        if (np.diff(self.item_ids) <= 0).any():
            raise DataError("FitContext.item_ids: item ids must be unique and ascending")

    @property
    def n_items(self) -> int:
        """Size of the ranking universe."""
        return int(self.item_ids.size)

    def columns(self, item_ids: np.ndarray) -> np.ndarray:
        """Score column of each item id; -1 for ids outside the catalog."""
        return item_columns(self.item_ids, item_ids)


@runtime_checkable
class Recommender(Protocol):
    """A baseline: ``fit`` on train (tuning on validation), then ``recommend`` top-K item ids per query."""

    name: str

    def fit(self, train: Examples, validation: Examples, ctx: FitContext) -> "Recommender":
        """Learn from ``train``; choose hyper-parameters / stop early on ``validation``; return self."""
        ...

    def recommend(self, queries: Examples, k: int, exclude: Sequence[np.ndarray] | None = None) -> np.ndarray:
        """Top ``k`` item ids per query history, best first, int64 [len(queries), k], -1 padded; items in
        ``exclude[i]`` (if given) never appear in row i."""
        ...


def _resolve_ties(scores: np.ndarray, kth: np.ndarray, part: np.ndarray, secondary: np.ndarray, kk: int
                  ) -> np.ndarray:
    """The kk best columns by (score, secondary) of rows whose kk-th best score is shared beyond the cut."""
    n = scores.shape[1]
    strict = np.take_along_axis(scores, part, 1) > kth  # the columns beating the tie: all kept
    tie_key = np.where(scores == kth, secondary[None, :], -np.inf)
    ties = np.argpartition(tie_key, n - kk, axis=1)[:, n - kk:] if kk < n else np.tile(np.arange(n), (len(scores), 1))
    tie_vals = np.take_along_axis(tie_key, ties, 1)
    cand = np.concatenate([part, ties], axis=1)
    primary = np.concatenate([np.where(strict, 1.0, -np.inf), np.where(tie_vals > -np.inf, 0.0, -np.inf)], axis=1)
    rank2 = np.concatenate([np.take_along_axis(scores, part, 1), tie_vals], axis=1)
    order = np.lexsort((-rank2, -primary), axis=1)  # strict columns (by score) first, then ties by secondary
    return np.take_along_axis(cand, order, 1)[:, :kk]


def tuning_subset(validation: Examples, ctx: FitContext) -> Examples:
    """A seeded random subset of ``ctx.tune_examples`` validation examples (all when fewer), kept in order."""
    n = len(validation)
    if ctx.tune_examples is None or n <= ctx.tune_examples:
        return validation
    rng = np.random.default_rng(ctx.seed)
    return validation.subset(np.sort(rng.choice(n, ctx.tune_examples, replace=False)))


def validation_score(model: Recommender, validation: Examples, ctx: FitContext,
                     exclude: Sequence[np.ndarray] | None = None) -> float:
    """``ctx.tune_metric`` (e.g. ``ndcg@10``) of ``model`` on ``validation``: the number tuning maximises.
    Without ``exclude`` and with ``ctx.tune_with_exclusion``, the better of keeping and excluding the
    query's history items (the harness chooses that mode per model on validation afterwards)."""
    from genrec.evaluation.metrics import Targets, rank_metrics

    name, _, k = ctx.tune_metric.partition("@")
    if name not in ("recall", "ndcg") or not k.isdigit():
        raise DataError(f"tune_metric must look like recall@K or ndcg@K, got {ctx.tune_metric!r}")
    targets = Targets(validation.target_offsets, validation.target_items)
    options = [exclude]
    if exclude is None and ctx.tune_with_exclusion:  # the harness later picks the better mode per model
        options.append([validation.history(i) for i in range(len(validation))])
    best = 0.0
    for ex in options:
        value = rank_metrics(model.recommend(validation, int(k), ex), targets, [int(k)])[ctx.tune_metric]
        best = max(best, float(value) if value == value else 0.0)
    return best


def coordinate_ascent(start, grid: dict, rounds: int, score: Callable[[object], float]):
    """Settings (a frozen dataclass) chosen from ``start`` by coordinate ascent: each pass tries every value
    of ``grid`` for each setting in turn and keeps a change that raises ``score``; stops after ``rounds``
    passes or one that changes nothing. ``score`` is called once per distinct settings (cached here)."""
    cache: dict = {}

    def cached(s) -> float:
        if s not in cache:
            cache[s] = score(s)
        return cache[s]

    best = start
    for _ in range(rounds):
        before = best
        for name, values in grid.items():
            for v in values:
                cand = dataclasses.replace(best, **{name: v})
                if cached(cand) > cached(best):
                    best = cand
        if best == before:
            break
    return best


def top_k(scores: np.ndarray, catalog: np.ndarray, k: int, exclude: Sequence[np.ndarray] | None = None,
          tiebreak: np.ndarray | None = None) -> np.ndarray:
    """Top ``k`` item ids per row of dense ``scores`` [B, n_items] (columns = ``catalog``), best first.

    Excluded items and -inf scores never appear (-1 fills the row instead). Equal scores are ordered by
    ``tiebreak`` (higher first), then by column (lower first), so results are deterministic.
    """
    scores = np.array(scores, dtype=np.float64, copy=True)
    b, n = scores.shape
    if exclude is not None:
        if len(exclude) != b:
            raise DataError(f"top_k: {b} score rows but {len(exclude)} exclusion lists")
        lengths = np.array([len(e) for e in exclude], dtype=np.int64)
        flat = np.concatenate([np.asarray(e, np.int64).reshape(-1) for e in exclude]) if b else np.zeros(0, np.int64)
        cols = item_columns(catalog, flat)
        rows = np.repeat(np.arange(b), lengths)
        ok = cols >= 0
        scores[rows[ok], cols[ok]] = -np.inf
    kk = min(k, n)
    out = np.full((b, k), PAD_ITEM, dtype=np.int64)
    if b == 0 or kk == 0:
        return out
    secondary = -np.arange(n, dtype=np.float64)  # strict order of equal scores: tiebreak desc, then column
    if tiebreak is not None:
        secondary[np.lexsort((np.arange(n), -np.asarray(tiebreak, np.float64)))] = -np.arange(n, dtype=np.float64)
    part = np.argpartition(scores, n - kk, axis=1)[:, n - kk:] if kk < n else np.tile(np.arange(n), (b, 1))
    vals = np.take_along_axis(scores, part, 1)
    kth = vals.min(axis=1, keepdims=True)
    # rows where more columns than fit score exactly the kk-th best: ``tiebreak`` decides which survive
    tied = np.flatnonzero((scores >= kth).sum(axis=1) > kk)
    if tied.size:
        part[tied] = _resolve_ties(scores[tied], kth[tied], part[tied], secondary, kk)
        vals = np.take_along_axis(scores, part, 1)
    order = np.lexsort((-secondary[part], -vals), axis=1)
    best = np.take_along_axis(part, order, 1)
    best_vals = np.take_along_axis(vals, order, 1)
    out[:, :kk] = np.where(best_vals > -np.inf, catalog[best], PAD_ITEM)
    return out


def popularity_ranking(catalog: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Catalog item ids by descending ``counts``, equal counts by ascending id."""
    return catalog[np.lexsort((np.arange(counts.size), -counts))]


def ragged_exclusions(exclude: Sequence[np.ndarray] | None, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-row exclusion lists flattened: (row of each excluded id, the id)."""
    if exclude is None:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if len(exclude) != n_rows:
        raise DataError(f"{n_rows} query rows but {len(exclude)} exclusion lists")
    arrays = [np.asarray(e, np.int64).reshape(-1) for e in exclude]
    lengths = np.array([a.size for a in arrays], dtype=np.int64)
    flat = np.concatenate(arrays) if arrays else np.zeros(0, np.int64)
    return np.repeat(np.arange(n_rows), lengths), flat


def fixed_order_top_k(ranking: np.ndarray, n_rows: int, k: int,
                      exclude: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """The first ``k`` items of one shared ``ranking`` (item ids, best first) per row, skipping each row's
    excluded items; -1 fills rows that run out. Equivalent to ``top_k`` on identical score rows, without
    materialising them."""
    rows, flat = ragged_exclusions(exclude, n_rows)
    return _fill_from_ranking(np.asarray(ranking, np.int64), n_rows, k, rows, flat,
                              np.full((n_rows, k), PAD_ITEM, dtype=np.int64), np.zeros(n_rows, np.int64))


def _fill_from_ranking(ranking: np.ndarray, n_rows: int, k: int, ban_rows: np.ndarray, ban_items: np.ndarray,
                       out: np.ndarray, filled: np.ndarray) -> np.ndarray:
    """Fill slots ``filled[r]..k-1`` of each row of ``out`` with ``ranking``'s items in order, skipping the
    banned (row, item) pairs; returns ``out``."""
    need = k - filled
    per_row_bans = np.bincount(ban_rows, minlength=n_rows)
    cand = ranking[: k + int(per_row_bans.max(initial=0))]  # enough that every row finds its k
    banned = np.zeros((n_rows, cand.size), dtype=bool)
    if cand.size and ban_items.size:
        order = np.argsort(cand, kind="stable")
        pos = np.minimum(np.searchsorted(cand[order], ban_items), cand.size - 1)
        found = cand[order][pos] == ban_items
        banned[ban_rows[found], order[pos[found]]] = True
    rank = np.cumsum(~banned, axis=1) - 1  # position among the row's surviving candidates
    keep = ~banned & (rank < need[:, None])
    r, c = np.nonzero(keep)
    out[r, filled[r] + rank[r, c]] = cand[c]
    return out


def _keep_row_top(csr: "sp.csr_matrix", k: int, max_cells: int = 2 ** 24) -> "sp.csr_matrix":
    """Drop, per row, the stored entries below its k-th largest value (entries tied with it stay), so the
    exact ordering that follows sorts a few entries per row instead of all of them."""
    counts = np.diff(csr.indptr)
    heavy = np.flatnonzero(counts > k)
    if heavy.size == 0:
        return csr
    b, n = csr.shape
    threshold = np.zeros(b)
    order = heavy[np.argsort(counts[heavy], kind="stable")]  # rows of similar length share a padded block
    start = 0
    while start < order.size:
        fits = (np.arange(order.size - start) + 1) * counts[order[start:]] <= max_cells  # monotone: a prefix
        stop = start + max(1, int(fits.sum()))
        block = csr[order[start:stop]]
        lengths = np.diff(block.indptr)
        padded = np.full((lengths.size, int(lengths.max())), -np.inf)
        padded[ragged_rows(block.indptr), np.arange(block.nnz) - np.repeat(block.indptr[:-1], lengths)] = block.data
        threshold[order[start:stop]] = torch.from_numpy(padded).topk(k, dim=1).values[:, -1].numpy()
        start = stop
    keep = csr.data >= np.repeat(threshold, counts)
    kept_before = np.r_[0, np.cumsum(keep)]
    return sp.csr_matrix((csr.data[keep], csr.indices[keep], kept_before[csr.indptr]), shape=(b, n))


def sparse_top_k(scores: "sp.spmatrix", catalog: np.ndarray, k: int, exclude: Sequence[np.ndarray] | None,
                 fallback: np.ndarray) -> np.ndarray:
    """Top ``k`` per row of sparse, positive ``scores`` [B, n_items]: stored entries by score (equal scores
    by ``fallback`` order), then, where a row has fewer than k, the ``fallback`` ranking (item ids, best
    first: what zero scores fall back to), never an excluded item. Same result as ``top_k`` on the dense
    scores with ``tiebreak`` = the fallback order, at a fraction of the cost."""
    csr = sp.csr_matrix(scores, dtype=np.float64)
    csr.sum_duplicates()
    b, n = csr.shape
    if (csr.data < 0).any():
        raise DataError("sparse_top_k: scores must be non-negative")
    ban_rows, ban_items = ragged_exclusions(exclude, b)
    ban_cols = item_columns(catalog, ban_items)
    ok = ban_cols >= 0
    banned = sp.csr_matrix((np.ones(int(ok.sum())), (ban_rows[ok], ban_cols[ok])), shape=(b, n))
    banned.sum_duplicates()
    banned.data[:] = 1.0
    csr = csr - csr.multiply(banned)  # excluded entries become explicit zeros, dropped next
    csr.eliminate_zeros()
    csr = _keep_row_top(csr, k)
    coo = csr.tocoo()
    rows, cols, vals = coo.row.astype(np.int64), coo.col.astype(np.int64), coo.data
    fb_rank = np.full(n, n, np.int64)
    fb_cols = item_columns(catalog, fallback)
    fb_rank[fb_cols[fb_cols >= 0]] = np.arange(int((fb_cols >= 0).sum()))
    order = np.lexsort((fb_rank[cols], -vals, rows))
    rows, cols = rows[order], cols[order]
    first = np.searchsorted(rows, np.arange(b))
    rank = np.arange(rows.size) - first[rows]
    top = rank < k
    out = np.full((b, k), PAD_ITEM, dtype=np.int64)
    out[rows[top], rank[top]] = catalog[cols[top]]
    filled = np.bincount(rows[top], minlength=b).astype(np.int64)
    chosen = out[rows[top], rank[top]]
    all_rows = np.concatenate([ban_rows, rows[top]])
    all_items = np.concatenate([ban_items, chosen])
    return _fill_from_ranking(np.asarray(fallback, np.int64), b, k, all_rows, all_items, out, filled)


def first_k_allowed(cand: np.ndarray, allowed: np.ndarray, k: int) -> np.ndarray:
    """Per row, the first ``k`` candidates (item ids, best first) whose ``allowed`` flag is set; -1 pads."""
    cand = np.asarray(cand, dtype=np.int64)
    allowed = np.asarray(allowed, dtype=bool) & (cand != PAD_ITEM)
    rank = np.cumsum(allowed, axis=1) - 1
    keep = allowed & (rank < k)
    out = np.full((cand.shape[0], k), PAD_ITEM, dtype=np.int64)
    r, c = np.nonzero(keep)
    out[r, rank[r, c]] = cand[r, c]
    return out


def excluded_mask(cand: np.ndarray, exclude: Sequence[np.ndarray] | None) -> np.ndarray:
    """bool [B, L]: candidate ``cand[i, j]`` is in ``exclude[i]``."""
    cand = np.asarray(cand, dtype=np.int64)
    if exclude is None:
        return np.zeros(cand.shape, dtype=bool)
    rows, items = ragged_exclusions(exclude, cand.shape[0])
    if items.size == 0:
        return np.zeros(cand.shape, dtype=bool)
    codes, inverse = np.unique(np.concatenate([cand.reshape(-1), items]), return_inverse=True)
    c_keys = np.repeat(np.arange(cand.shape[0]), cand.shape[1]) * codes.size + inverse[: cand.size]
    e_keys = rows * codes.size + inverse[cand.size:]
    return np.isin(c_keys, e_keys).reshape(cand.shape)


def run_text_embeddings_path(run: Path | None) -> Path | None:
    """The run's item *text* embeddings file: ``text_embeddings.parquet`` when the run's codebook was trained
    on text + collaborative vectors (genrec.run.semids writes both), else ``embeddings.parquet``; None without
    a run. Content baselines must not see the collaborative part."""
    if run is None:
        return None
    text_only = Path(run) / TEXT_EMBEDDINGS_FILE
    return text_only if text_only.is_file() else Path(run) / EMBEDDINGS_FILE
