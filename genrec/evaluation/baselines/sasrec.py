"""SASRec (Kang & McAuley 2018), pre-norm, as a baseline in the evaluation harness.

A causal self-attention encoder reads a shopper's last ``max_len`` items (item embedding + learned
position) and scores every catalog item by inner product with the tied item embedding. Two losses: the
full-softmax cross-entropy over all items at every labelled position (the strong modern recipe) or the
original paper's binary cross-entropy with one sampled negative per positive. Only real (labelled)
positions are gathered before the output projection, so padding costs nothing and contributes nothing.
Early stopping on validation NDCG@K; ranking is over the whole catalog with the history masked.
Item embeddings start small (std 0.02, as in RecBole): the table is also the output layer, and a wide random
init leaves noise in the logits of rarely seen items that Adam washes out only slowly (docs/beauty.md,
"SASRec's settings").
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from genrec.data.sequences import Examples
from genrec.evaluation.baselines.base import FitContext
from genrec.evaluation.baselines.neural import (PAD, CausalEncoder, banned_pairs, column_metrics, history_matrix,
                                                length_batches, mask_pairs, topk_columns, train_loop, training_matrices,
                                                with_options)
from genrec.model.precision import native_bf16
from semid.common import DataError, torch_threads

log = logging.getLogger(__name__)


@dataclass
class SASRecConfig:
    """Architecture, optimisation and evaluation settings of SASRec (defaults: the issue's recipe)."""

    loss: Literal["ce", "bce"] = "ce"  # ce: softmax over all items; bce: one sampled negative per positive
    dim: int = 64  # embedding and hidden size
    layers: int = 2  # self-attention blocks
    heads: int = 1  # attention heads (dim must divide evenly)
    ffn_mult: int = 1  # feed-forward hidden size = ffn_mult * dim (the original uses 1)
    dropout: float = 0.5  # on embeddings, attention weights and residual branches
    init_std: float | None = 0.02  # std of the item embedding init (positions: dim ** -0.5); None: dim ** -0.5
    max_len: int = 50  # most recent items read per history
    batch_size: int = 128  # training sequences (windows) per step
    bucket: int = 32  # batches per length-sorted pool (little padding per batch); 0: plain shuffling
    lr: float = 1e-3  # Adam learning rate (docs/beauty.md, "SASRec's settings")
    betas: tuple[float, float] = (0.9, 0.98)  # Adam betas (the original's)
    weight_decay: float = 0.0  # Adam L2 penalty
    max_epochs: int = 200  # upper bound on passes over the training windows
    patience: int = 10  # evaluations without a better validation score before stopping
    eval_every: int = 1  # epochs between validation evaluations
    min_epochs: int = 1  # never stop before this many epochs
    bf16_logits: bool | None = None  # ce: item logits in bfloat16 (faster epochs); None: where the CPU has it
    mask_history: bool = True  # never recommend an item already in the query history (Amazon protocol)
    eval_batch: int = 1024  # queries scored at once at validation and recommendation
    threads: int | None = 1  # torch CPU threads in fit / scoring (1: fastest on a busy 2-core box); None: as is
    time_budget_s: float | None = None  # stop training after this many seconds (best checkpoint kept)

    def __post_init__(self) -> None:
        if self.loss not in ("ce", "bce"):
            raise DataError(f"SASRecConfig.loss must be 'ce' or 'bce', got {self.loss!r}")
        if self.dim < 1 or self.layers < 0 or self.heads < 1 or self.dim % self.heads:
            raise DataError(f"SASRecConfig: dim {self.dim} must be positive and divisible by heads {self.heads}")
        if self.init_std is not None and not self.init_std > 0:
            raise DataError(f"SASRecConfig.init_std must be positive or None, got {self.init_std}")
        if not 0.0 <= self.dropout < 1.0:
            raise DataError(f"SASRecConfig.dropout must lie in [0, 1), got {self.dropout}")
        for name in ("max_len", "batch_size", "max_epochs", "patience", "eval_every", "eval_batch", "ffn_mult"):
            if getattr(self, name) < 1:
                raise DataError(f"SASRecConfig.{name} must be >= 1, got {getattr(self, name)}")


# ------------------------------------------------------------------------------------------------ model


class SASRecModel(nn.Module):
    """The encoder plus the tied output layer: scores of all items from a hidden state."""

    def __init__(self, n_items: int, cfg: SASRecConfig) -> None:
        super().__init__()
        self.encoder = CausalEncoder(n_items, cfg.dim, cfg.layers, cfg.heads, cfg.ffn_mult * cfg.dim,
                                     cfg.dropout, cfg.max_len, cfg.init_std)
        self.bf16_logits = native_bf16() if cfg.bf16_logits is None else cfg.bf16_logits

    def item_table(self) -> torch.Tensor:
        """Output vectors of the catalog items [n_items, D] (row c = catalog column c)."""
        return self.encoder.items.weight[1:]

    def last_hidden(self, seq: torch.Tensor) -> torch.Tensor:
        """Hidden state after each row's latest item [B, D]."""
        return self.encoder(seq)[:, -1]

    def loss(self, inputs: torch.Tensor, labels: torch.Tensor, kind: str, gen: torch.Generator | None) -> torch.Tensor:
        """Summed loss over the labelled positions only (padding and context positions are never projected)."""
        hidden = self.encoder(inputs)
        where = labels != PAD
        h, y = hidden[where], labels[where] - 1
        table = self.item_table()
        if kind == "ce":
            if self.bf16_logits:
                return F.cross_entropy((h.to(torch.bfloat16) @ table.to(torch.bfloat16).T).float(), y, reduction="sum")
            return F.cross_entropy(h @ table.T, y, reduction="sum")
        neg = sample_negatives(y, table.shape[0], gen)
        pos_s, neg_s = (h * table[y]).sum(-1), (h * table[neg]).sum(-1)
        return (F.softplus(-pos_s) + F.softplus(neg_s)).sum()


def sample_negatives(positives: torch.Tensor, n_items: int, gen: torch.Generator | None) -> torch.Tensor:
    """One uniformly drawn catalog column per positive, never the positive itself (needs n_items >= 2)."""
    if n_items < 2:
        raise DataError("SASRec bce: need at least 2 catalog items to sample negatives")
    draw = torch.randint(0, n_items - 1, positives.shape, generator=gen, device=positives.device)
    return draw + (draw >= positives).long()  # skip the positive: uniform over the other n_items - 1


class SASRec:
    """The SASRec baseline: ``fit`` (train, early-stop on validation) then full-catalog ``recommend``."""

    def __init__(self, config: SASRecConfig | None = None, **overrides) -> None:
        self.config = with_options(config or SASRecConfig(), overrides, "SASRec")
        self.name = f"sasrec_{self.config.loss}"
        self.model: SASRecModel | None = None
        self.catalog: np.ndarray | None = None
        self.device = "cpu"
        self.history: list[dict] = []  # per-epoch training log of the last fit
        self.best_epoch = 0  # epoch whose weights were kept

    def fit(self, train: Examples, validation: Examples, ctx: FitContext) -> "SASRec":
        """Train on every labelled position of ``train``; keep the epoch best on validation NDCG@K (K = the
        largest of ``ctx.k_values``). ``ctx.options`` override config fields (e.g. ``max_epochs``)."""
        cfg = self.config = with_options(self.config, ctx.options, "SASRec options")
        self.catalog, self.device = ctx.item_ids, ctx.device
        inputs, labels = training_matrices(train, self.catalog, cfg.max_len)
        if inputs.shape[0] == 0:
            raise DataError("SASRec: the training examples hold no item to learn from")
        k = max(ctx.k_values)
        with torch_threads(cfg.threads), torch.random.fork_rng(devices=[]):
            torch.manual_seed(ctx.seed)
            gen = torch.Generator(device=ctx.device).manual_seed(ctx.seed + 1)
            self.model = SASRecModel(ctx.n_items, cfg).to(ctx.device)

            def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
                return self.model.loss(x.to(self.device), y.to(self.device), cfg.loss, gen)

            def evaluate(row: dict) -> float:
                if len(validation) == 0:  # nothing to validate on: the lowest training loss wins
                    return -row["loss"]
                ranked = self._ranked_columns(validation, k, None)
                return column_metrics(ranked, validation, self.catalog)[f"ndcg@{k}"]

            self.history = train_loop(self.model, step, inputs, labels, evaluate, cfg, ctx.seed, self.name)
        scored = [r for r in self.history if "validation" in r]
        self.best_epoch = max(scored, key=lambda r: r["validation"])["epoch"] if scored else len(self.history)
        return self

    def recommend(self, queries: Examples, k: int, exclude: Sequence[np.ndarray] | None = None) -> np.ndarray:
        """Top ``k`` catalog item ids per query, best first, int64 [B, k] (-1 padded); history items are
        masked when ``mask_history`` and ``exclude[i]`` never appears in row i."""
        if self.model is None:
            raise DataError("SASRec: recommend called before fit")
        cols = self._ranked_columns(queries, k, exclude)
        return np.where(cols >= 0, self.catalog[np.maximum(cols, 0)], -1).astype(np.int64)

    def score(self, queries: Examples) -> np.ndarray:
        """Raw scores of every catalog item per query, float32 [B, n_items] (no masking)."""
        if self.model is None:
            raise DataError("SASRec: score called before fit")
        seq = history_matrix(queries, self.catalog, self.config.max_len)
        out = np.zeros((len(queries), self.catalog.size), np.float32)
        with torch_threads(self.config.threads), torch.no_grad():
            self.model.eval()
            for rows, part in length_batches(seq, self.config.eval_batch):
                out[rows] = self._scores(part).cpu().numpy()
        return out

    def _scores(self, seq: torch.Tensor) -> torch.Tensor:
        """Scores [B, n_items] of right-aligned histories; an empty history scores from padding alone."""
        return self.model.last_hidden(seq.to(self.device)) @ self.model.item_table().T

    def _ranked_columns(self, queries: Examples, k: int, exclude: Sequence[np.ndarray] | None) -> np.ndarray:
        """Top-``k`` catalog columns per query (-1 where fewer than k items are allowed), in batches."""
        cfg = self.config
        out = np.full((len(queries), k), -1, np.int64)
        seq = history_matrix(queries, self.catalog, cfg.max_len)
        ban_rows, ban_cols = banned_pairs(queries, self.catalog, cfg.mask_history, exclude)
        with torch_threads(cfg.threads), torch.no_grad():
            self.model.eval()
            for rows, part in length_batches(seq, cfg.eval_batch):
                scores = self._scores(part).float().cpu()
                mask_pairs(scores, rows, ban_rows, ban_cols)
                out[rows] = topk_columns(scores, k)
        return out


__all__ = ["SASRec", "SASRecConfig", "SASRecModel"]
