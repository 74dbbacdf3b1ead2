"""A two-tower retriever served by faiss: the approximate-nearest-neighbour alternative to generation.

The item tower is an id embedding plus, when the run has item text embeddings, a learned projection of
them, so items with little traffic still get a meaningful vector. The query tower is a small causal
transformer over the history's item-tower vectors. Both outputs are L2-normalised; training is the
in-batch sampled softmax over the batch's positives with the logQ correction (subtracting each
candidate's log sampling frequency, so popular items are not over-penalised as negatives). Serving puts
every item vector in a faiss inner-product index (exact ``flat`` or approximate ``hnsw``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal, Sequence

import faiss
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from genrec.data.sequences import Examples
from genrec.evaluation.baselines.base import FitContext, run_text_embeddings_path
from genrec.evaluation.baselines.neural import (PAD, CausalEncoder, banned_pairs, history_matrix, length_batches,
                                                mask_pairs, column_metrics, topk_columns, train_loop, training_matrices,
                                                with_options)
from semid.catalog import item_columns
from semid.common import DataError, torch_threads
from semid.embeddings import l2_normalize, read_embeddings

log = logging.getLogger(__name__)



@dataclass
class TwoTowerConfig:
    """Towers, in-batch softmax training and faiss serving settings of the two-tower retriever."""

    dim: int = 64  # output (and hidden) size of both towers
    layers: int = 2  # causal transformer blocks of the query tower
    heads: int = 1  # attention heads (dim must divide evenly)
    dropout: float = 0.3  # query tower dropout
    max_len: int = 50  # most recent history items the query tower reads
    text: bool = True  # add the run's item text embeddings (projected) to the item tower, if the run has them
    temperature: float = 0.05  # softmax temperature over cosine similarities
    logq: bool = True  # subtract log sampling frequency of in-batch negatives (Yi et al. 2019)
    batch_size: int = 256  # training sequences per step (their labelled positions are the in-batch candidates)
    bucket: int = 32  # batches per length-sorted pool (little padding per batch); 0: plain shuffling
    lr: float = 1e-3  # Adam learning rate
    betas: tuple[float, float] = (0.9, 0.98)  # Adam betas
    weight_decay: float = 0.0  # Adam L2 penalty
    max_epochs: int = 100  # upper bound on passes over the training windows
    patience: int = 5  # evaluations without a better validation score before stopping
    eval_every: int = 1  # epochs between validation evaluations (exact scores, no index)
    min_epochs: int = 1  # never stop before this many epochs
    index: Literal["flat", "hnsw"] = "flat"  # faiss index: exact inner product or an HNSW graph
    hnsw_m: int = 32  # HNSW neighbours per node
    hnsw_ef_search: int = 128  # HNSW search breadth (recall vs speed)
    mask_history: bool = True  # never recommend an item already in the query history
    eval_batch: int = 1024  # queries encoded at once
    threads: int | None = 1  # torch and faiss CPU threads while fitting / searching; None: as is
    time_budget_s: float | None = None  # stop training after this many seconds (best checkpoint kept)

    def __post_init__(self) -> None:
        if self.dim < 1 or self.dim % self.heads:
            raise DataError(f"TwoTowerConfig: dim {self.dim} must be positive and divisible by heads {self.heads}")
        if self.index not in ("flat", "hnsw"):
            raise DataError(f"TwoTowerConfig.index must be 'flat' or 'hnsw', got {self.index!r}")
        if self.temperature <= 0:
            raise DataError(f"TwoTowerConfig.temperature must be > 0, got {self.temperature}")
        for name in ("max_len", "batch_size", "max_epochs", "patience", "eval_every", "eval_batch", "hnsw_m"):
            if getattr(self, name) < 1:
                raise DataError(f"TwoTowerConfig.{name} must be >= 1, got {getattr(self, name)}")


class TwoTowerModel(nn.Module):
    """Item tower (id embedding + projected text) and query tower (causal encoder over item vectors)."""

    def __init__(self, n_items: int, cfg: TwoTowerConfig, text: np.ndarray | None) -> None:
        super().__init__()
        self.query = CausalEncoder(n_items, cfg.dim, cfg.layers, cfg.heads, cfg.dim, cfg.dropout, cfg.max_len)
        self.temperature = cfg.temperature
        if text is not None:  # row 0 is PAD: zeros
            padded = np.vstack([np.zeros((1, text.shape[1])), text]).astype(np.float32)
            self.register_buffer("text", torch.from_numpy(padded), persistent=False)  # fixed input, not a weight
            self.text_proj = nn.Linear(text.shape[1], cfg.dim, bias=False)
        else:
            self.text, self.text_proj = None, None

    def item_vectors(self, index: torch.Tensor) -> torch.Tensor:
        """Raw (unnormalised) item-tower vectors of model indices (PAD gives a zero vector)."""
        v = self.query.items(index)
        if self.text_proj is not None:
            v = v + self.text_proj(self.text[index]) * (index != PAD)[..., None]
        return v

    def encode_items(self) -> torch.Tensor:
        """Unit item vectors of the whole catalog [n_items, D] (row c = catalog column c)."""
        index = torch.arange(1, self.query.items.num_embeddings, device=self.query.items.weight.device)
        return F.normalize(self.item_vectors(index), dim=-1)

    def encode_queries(self, seq: torch.Tensor) -> torch.Tensor:
        """Unit query vectors [B, D] from right-aligned histories (the state after the latest item)."""
        return F.normalize(self.query(seq, self.item_vectors(seq))[:, -1], dim=-1)

    def loss(self, inputs: torch.Tensor, labels: torch.Tensor, log_q: torch.Tensor | None) -> torch.Tensor:
        """In-batch sampled softmax over the batch's labelled positions, summed over them; a candidate equal
        to the row's own positive (a repeated item) is not counted as a negative."""
        hidden = self.query(inputs, self.item_vectors(inputs))
        where = labels != PAD
        q = F.normalize(hidden[where], dim=-1)
        y = labels[where]
        v = F.normalize(self.item_vectors(y), dim=-1)
        logits = q @ v.T / self.temperature
        if log_q is not None:
            logits = logits - log_q[y][None, :]
        same = (y[:, None] == y[None, :]) & ~torch.eye(y.numel(), dtype=torch.bool, device=y.device)
        logits = logits.masked_fill(same, -torch.inf)
        return F.cross_entropy(logits, torch.arange(y.numel(), device=y.device), reduction="sum")


def label_log_frequency(labels: np.ndarray, n_items: int) -> torch.Tensor:
    """log of each model index's share of the training labels (add-one smoothed): the logQ correction."""
    counts = np.bincount(labels[labels != PAD], minlength=n_items + 1).astype(np.float64) + 1.0
    counts[PAD] = 1.0
    return torch.from_numpy(np.log(counts / counts[1:].sum())).float()


def run_text_embeddings(ctx: FitContext) -> np.ndarray | None:
    """The run's item text embeddings aligned to catalog columns (zeros for items without one), L2
    normalised; None when there is no run or it holds no embeddings file."""
    path = run_text_embeddings_path(ctx.run)
    if path is None or not path.is_file():
        return None
    ids, vectors = read_embeddings(path)
    cols = item_columns(ctx.item_ids, ids)
    out = np.zeros((ctx.n_items, vectors.shape[1]), np.float32)
    out[cols[cols >= 0]] = l2_normalize(vectors[cols >= 0])
    return out


def build_index(vectors: np.ndarray, cfg: TwoTowerConfig) -> faiss.Index:
    """A faiss inner-product index over ``vectors`` [n, D] float32 (id = row = catalog column)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if cfg.index == "hnsw":
        index = faiss.IndexHNSWFlat(vectors.shape[1], cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = max(cfg.hnsw_ef_search, 1)
    else:
        index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    return index


def search_excluding(index: faiss.Index, queries: np.ndarray, k: int, ban_rows: np.ndarray,
                     ban_cols: np.ndarray) -> np.ndarray:
    """Top ``k`` index rows per query, best first, skipping the (query, row) pairs ``ban_rows, ban_cols``
    (unique); -1 pads a short row. Asks faiss for ``k`` plus the most bans of any query, so that enough
    allowed rows remain after filtering."""
    b = queries.shape[0]
    out = np.full((b, k), -1, np.int64)
    if b == 0 or k == 0:
        return out
    extra = int(np.bincount(ban_rows, minlength=b).max()) if ban_rows.size else 0
    depth = min(k + extra, index.ntotal)
    _, found = index.search(np.ascontiguousarray(queries, dtype=np.float32), depth)
    n = index.ntotal + 1
    keys = np.arange(b)[:, None] * n + found
    keep = (found >= 0) & ~np.isin(keys, ban_rows * n + ban_cols)
    rank = np.cumsum(keep, axis=1) - 1
    r, c = np.nonzero(keep & (rank < k))
    out[r, rank[r, c]] = found[r, c]
    return out


class FaissThreads:
    """Context manager setting faiss's OpenMP thread count (None: unchanged) and restoring it after."""

    def __init__(self, threads: int | None) -> None:
        self.threads, self.saved = threads, None

    def __enter__(self) -> None:
        if self.threads is not None:
            self.saved = faiss.omp_get_max_threads()
            faiss.omp_set_num_threads(self.threads)

    def __exit__(self, *exc) -> None:
        if self.saved is not None:
            faiss.omp_set_num_threads(self.saved)


class TwoTower:
    """The two-tower baseline: ``fit`` (in-batch softmax, early stopping), then faiss ``recommend``."""

    def __init__(self, config: TwoTowerConfig | None = None, **overrides) -> None:
        self.config = with_options(config or TwoTowerConfig(), overrides, "TwoTower")
        self.name = "two_tower"
        self.model: TwoTowerModel | None = None
        self.catalog: np.ndarray | None = None
        self.index: faiss.Index | None = None
        self.device = "cpu"
        self.history: list[dict] = []  # per-epoch training log of the last fit
        self.best_epoch = 0  # epoch whose weights were kept

    def fit(self, train: Examples, validation: Examples, ctx: FitContext) -> "TwoTower":
        """Train both towers on every labelled position of ``train``, keep the epoch best on validation
        NDCG@K (exact scores), then index the item vectors. ``ctx.options`` override config fields."""
        cfg = self.config = with_options(self.config, ctx.options, "TwoTower options")
        self.catalog, self.device = ctx.item_ids, ctx.device
        inputs, labels = training_matrices(train, self.catalog, cfg.max_len)
        if inputs.shape[0] == 0:
            raise DataError("TwoTower: the training examples hold no item to learn from")
        text = run_text_embeddings(ctx) if cfg.text else None
        log_q = label_log_frequency(labels, ctx.n_items).to(ctx.device) if cfg.logq else None
        k = max(ctx.k_values)
        with torch_threads(cfg.threads), torch.random.fork_rng(devices=[]):
            torch.manual_seed(ctx.seed)
            self.model = TwoTowerModel(ctx.n_items, cfg, text).to(ctx.device)

            def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
                return self.model.loss(x.to(self.device), y.to(self.device), log_q)

            def evaluate(row: dict) -> float:
                if len(validation) == 0:  # nothing to validate on: the lowest training loss wins
                    return -row["loss"]
                ranked = self._exact_columns(validation, k)
                return column_metrics(ranked, validation, self.catalog)[f"ndcg@{k}"]

            self.history = train_loop(self.model, step, inputs, labels, evaluate, cfg, ctx.seed, self.name)
            self.index = build_index(self.item_matrix(), cfg)
        scored = [r for r in self.history if "validation" in r]
        self.best_epoch = max(scored, key=lambda r: r["validation"])["epoch"] if scored else len(self.history)
        return self

    def item_matrix(self) -> np.ndarray:
        """Unit item vectors of the catalog, float32 [n_items, D] (what the index holds)."""
        self._check_fitted()
        with torch.no_grad():
            self.model.eval()
            return self.model.encode_items().cpu().numpy()

    def query_matrix(self, queries: Examples) -> np.ndarray:
        """Unit query vectors, float32 [B, D]."""
        self._check_fitted()
        seq = history_matrix(queries, self.catalog, self.config.max_len)
        out = np.zeros((len(queries), self.config.dim), np.float32)
        with torch_threads(self.config.threads), torch.no_grad():
            self.model.eval()
            for rows, part in length_batches(seq, self.config.eval_batch):
                out[rows] = self.model.encode_queries(part.to(self.device)).cpu().numpy()
        return out

    def recommend(self, queries: Examples, k: int, exclude: Sequence[np.ndarray] | None = None) -> np.ndarray:
        """Top ``k`` catalog item ids per query from the faiss index, best first, int64 [B, k] (-1 padded);
        history items are skipped when ``mask_history`` and ``exclude[i]`` never appears in row i."""
        self._check_fitted()
        ban_rows, ban_cols = banned_pairs(queries, self.catalog, self.config.mask_history, exclude)
        vectors = self.query_matrix(queries)
        with FaissThreads(self.config.threads):
            cols = search_excluding(self.index, vectors, k, ban_rows, ban_cols)
        return np.where(cols >= 0, self.catalog[np.maximum(cols, 0)], -1).astype(np.int64)

    def _exact_columns(self, queries: Examples, k: int) -> np.ndarray:
        """Top-``k`` columns by exact inner product (validation: no index needed), history masked."""
        items = torch.from_numpy(self.item_matrix())
        q = torch.from_numpy(self.query_matrix(queries))
        ban_rows, ban_cols = banned_pairs(queries, self.catalog, self.config.mask_history, None)
        out, step = np.full((len(queries), k), -1, np.int64), self.config.eval_batch
        with torch_threads(self.config.threads):
            for start in range(0, len(queries), step):
                rows = np.arange(start, min(start + step, len(queries)))
                scores = q[rows] @ items.T
                mask_pairs(scores, rows, ban_rows, ban_cols)
                out[rows] = topk_columns(scores, k)
        return out

    def _check_fitted(self) -> None:
        if self.model is None:
            raise DataError("TwoTower: call fit before recommending")


__all__ = ["TwoTower", "TwoTowerConfig", "TwoTowerModel", "build_index", "search_excluding", "label_log_frequency"]
