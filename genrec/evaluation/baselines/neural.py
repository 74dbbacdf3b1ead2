"""What the neural baselines (SASRec, two-tower) share: options, histories as right-aligned model-index
matrices, length-bucketed batches, the causal encoder, the Adam training loop with validation and early
stopping (``genrec.model.validation.EarlyStopping``, the decoder's own rule), full-catalog masking and top-K,
and validation metrics over catalog columns (``column_metrics``, a view of
``genrec.evaluation.metrics.rank_metrics``, the harness's)."""
from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import fields, replace
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from genrec.data.sequences import Examples
from genrec.evaluation.metrics import Targets, rank_metrics
from genrec.model.validation import EarlyStopping
from semid.catalog import item_columns
from semid.common import DataError, ragged_rows

log = logging.getLogger(__name__)


PAD = 0  # model index of padding; catalog column c is model index c + 1


def with_options(cfg, options: dict, label: str):
    """``cfg`` (a dataclass) updated by ``options``; unknown keys raise DataError naming ``label``."""
    known = {f.name for f in fields(cfg)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise DataError(f"{label}: unknown options {unknown}; known: {sorted(known)}")
    return replace(cfg, **options)


def model_index(catalog: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
    """Model index of each item id (catalog column + 1); PAD for ids outside the catalog."""
    return item_columns(catalog, item_ids) + 1


def left_pad(offsets: np.ndarray, values: np.ndarray, width: int) -> np.ndarray:
    """The last ``width`` values of each ragged row, right-aligned in a [n, width] matrix padded with 0."""
    lengths = np.diff(offsets)
    take = np.minimum(lengths, width)
    rows = np.repeat(np.arange(lengths.size), take)
    within = np.arange(int(take.sum())) - np.repeat(np.cumsum(take) - take, take)
    out = np.zeros((lengths.size, width), dtype=values.dtype)
    out[rows, width - take[rows] + within] = values[np.repeat(offsets[1:] - take, take) + within]
    return out


def history_matrix(examples: Examples, catalog: np.ndarray, max_len: int) -> np.ndarray:
    """Each example's most recent ``max_len`` history items as model indices, right-aligned, 0-padded."""
    return left_pad(examples.history_offsets, model_index(catalog, examples.history_items), max_len)


def training_matrices(train: Examples, catalog: np.ndarray, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Next-item training pairs: inputs [n, max_len] (history + targets shifted by one, right-aligned) and
    labels of the same shape (the next item where it is a target of the example, else PAD).

    Rows without any label are dropped; items outside the catalog become PAD (never a label).
    """
    h_len, t_len = np.diff(train.history_offsets), np.diff(train.target_offsets)
    c_off = np.r_[0, np.cumsum(h_len + t_len)].astype(np.int64)
    seq = np.zeros(int(c_off[-1]), np.int64)
    is_target = np.zeros(seq.size, bool)
    h_dest = np.repeat(c_off[:-1], h_len) + np.arange(h_len.sum()) - ragged_start(train.history_offsets)
    t_dest = np.repeat(c_off[:-1] + h_len, t_len) + np.arange(t_len.sum()) - ragged_start(train.target_offsets)
    seq[h_dest] = model_index(catalog, train.history_items)
    seq[t_dest] = model_index(catalog, train.target_items)
    is_target[t_dest] = True
    full = left_pad(c_off, seq, max_len + 1)
    labelled = left_pad(c_off, is_target, max_len + 1)
    inputs = full[:, :-1]
    labels = np.where(labelled[:, 1:] & (full[:, 1:] != PAD), full[:, 1:], PAD)
    keep = (labels != PAD).any(axis=1)
    return np.ascontiguousarray(inputs[keep]), np.ascontiguousarray(labels[keep])


def ragged_start(offsets: np.ndarray) -> np.ndarray:
    """For each flat element of a ragged array, the flat index where its row starts."""
    return np.repeat(offsets[:-1], np.diff(offsets))


def first_real_column(seq: np.ndarray) -> np.ndarray:
    """Per right-aligned row, the column of its first real item (the last column for an empty row)."""
    real = seq != PAD
    return np.where(real.any(1), real.argmax(1), seq.shape[1] - 1)


def length_batches(seq: np.ndarray, batch_size: int) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """Rows of ``seq`` in batches of similar length (shortest first), each cropped to its longest row:
    yields (row indices into ``seq``, cropped batch). Scoring many short histories then costs little."""
    first = first_real_column(seq)
    order = np.argsort(-first, kind="stable")
    for start in range(0, order.size, batch_size):
        rows = order[start : start + batch_size]
        yield rows, torch.from_numpy(seq[rows, int(first[rows].min()) :])


def batches(inputs: np.ndarray, labels: np.ndarray, batch_size: int, rng: np.random.Generator,
            bucket: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled mini-batches, each cropped on the left to its longest row (right-aligned rows keep their
    position slots). With ``bucket`` > 1, rows are drawn in random pools of ``bucket`` batches and sorted
    by length inside a pool, so a batch holds similar lengths and carries little padding."""
    first_real = first_real_column(inputs)
    order = rng.permutation(inputs.shape[0])
    if bucket > 1:
        pool = batch_size * bucket
        pieces = [p[np.argsort(first_real[p], kind="stable")] for p in np.split(order, range(pool, order.size, pool))]
        order = np.concatenate(pieces)
    starts = np.arange(0, order.size, batch_size)
    if bucket > 1:
        starts = rng.permutation(starts)
    for start in starts:
        rows = order[start : start + batch_size]
        left = int(first_real[rows].min())
        yield torch.from_numpy(inputs[rows, left:]), torch.from_numpy(labels[rows, left:])


class Block(nn.Module):
    """Pre-norm transformer block: causal self-attention and a position-wise feed-forward, each residual."""

    def __init__(self, dim: int, heads: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """``x`` [B, W, D]; ``allowed`` [B, 1, W, W] bool: which keys each query may attend to."""
        b, w, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, w, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed,
                                             dropout_p=self.dropout if self.training else 0.0)
        x = x + self.drop(self.proj(att.transpose(1, 2).reshape(b, w, d)))
        return x + self.drop(self.ffn(self.norm2(x)))


class CausalEncoder(nn.Module):
    """Item + learned position embeddings through causal pre-norm blocks: a hidden state per position,
    each summarising the items up to it. Rows are right-aligned: the last column is the latest item.
    ``init_std``: std of the item embedding init (None: dim ** -0.5, the two-tower's setting)."""

    def __init__(self, n_items: int, dim: int, layers: int, heads: int, ffn: int, dropout: float,
                 max_len: int, init_std: float | None = None) -> None:
        super().__init__()
        self.max_len = max_len
        self.items = nn.Embedding(n_items + 1, dim, padding_idx=PAD)
        self.positions = nn.Embedding(max_len, dim)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(dim, heads, ffn, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        nn.init.normal_(self.items.weight, std=dim ** -0.5 if init_std is None else init_std)
        nn.init.normal_(self.positions.weight, std=dim ** -0.5)
        with torch.no_grad():
            self.items.weight[PAD].zero_()

    def forward(self, seq: torch.Tensor, embedded: torch.Tensor | None = None) -> torch.Tensor:
        """``seq`` [B, W] model indices (W <= max_len, PAD on the left) -> hidden states [B, W, D].

        ``embedded`` [B, W, D] replaces the item embeddings of ``seq`` when given (a tower with richer items).
        """
        w = seq.shape[1]
        real = seq != PAD
        embedded = self.items(seq) if embedded is None else embedded
        pos = torch.arange(self.max_len - w, self.max_len, device=seq.device)
        x = self.drop(embedded * math.sqrt(embedded.shape[-1]) + self.positions(pos)) * real[..., None]
        eye = torch.eye(w, dtype=torch.bool, device=seq.device)
        allowed = (torch.ones(w, w, dtype=torch.bool, device=seq.device).tril() & real[:, None, :]) | eye
        allowed = allowed[:, None]
        for block in self.blocks:
            x = block(x, allowed) * real[..., None]
        return self.norm(x)


def banned_pairs(queries: Examples, catalog: np.ndarray, mask_history: bool,
                 exclude: Sequence[np.ndarray] | None) -> tuple[np.ndarray, np.ndarray]:
    """(row, catalog column) pairs a ranking must skip, sorted by row, unique: each query's whole history
    (when ``mask_history``) and ``exclude[i]``; ids outside the catalog are ignored."""
    n = len(queries)
    if exclude is not None and len(exclude) != n:
        raise DataError(f"{n} queries but {len(exclude)} exclusion lists")
    rows, cols = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    if mask_history:
        rows.append(ragged_rows(queries.history_offsets))
        cols.append(item_columns(catalog, queries.history_items))
    if exclude is not None and n:
        lists = [np.asarray(e, np.int64).reshape(-1) for e in exclude]
        rows.append(np.repeat(np.arange(n), [e.size for e in lists]))
        cols.append(item_columns(catalog, np.concatenate(lists)))
    row, col = np.concatenate(rows), np.concatenate(cols)
    key = np.unique(row[col >= 0] * catalog.size + col[col >= 0])
    return key // catalog.size, key % catalog.size


def column_metrics(ranked_cols: np.ndarray, examples: Examples, catalog: np.ndarray) -> dict[str, float]:
    """Mean recall@K and NDCG@K (K = columns of ``ranked_cols``, -1 = empty slot) against each example's
    targets, by ``rank_metrics`` (the harness's): a target outside the catalog counts as missed, examples
    without targets are skipped; 0.0 when no example has one."""
    k = ranked_cols.shape[1]
    ranked = np.where(ranked_cols >= 0, catalog[np.maximum(ranked_cols, 0)], -1)
    m = rank_metrics(ranked, Targets(examples.target_offsets, examples.target_items), [k])
    return {name: (m[name] if m["count"] else 0.0) for name in (f"recall@{k}", f"ndcg@{k}")}


def train_loop(model: nn.Module, step_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
               inputs: np.ndarray, labels: np.ndarray, evaluate: Callable[[dict], float], cfg, seed: int,
               label: str) -> list[dict]:
    """Adam over shuffled batches with validation every ``cfg.eval_every`` epochs; restores the best weights.

    ``step_loss`` returns a batch's loss summed over its labelled positions; it is divided by the epoch's
    mean labels per batch (not the batch's own count), so every label weighs the same even when
    length-bucketed batches hold very different numbers of labels.

    ``cfg`` needs batch_size, bucket, lr, betas, weight_decay, max_epochs, min_epochs, patience, eval_every,
    time_budget_s. ``evaluate`` gets the epoch's log row (epoch, loss) and returns the score to maximise.
    Returns one log row per epoch (loss, validation score, seconds).
    """
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(seed)
    n_labels = max(int((labels != PAD).sum()), 1)
    per_batch = n_labels / -(-inputs.shape[0] // cfg.batch_size)  # mean labelled positions per batch
    stopper, best_state, history, start = EarlyStopping(cfg.patience), None, [], time.perf_counter()
    for epoch in range(1, cfg.max_epochs + 1):
        model.train()
        total = 0.0
        for x, y in batches(inputs, labels, cfg.batch_size, rng, cfg.bucket):
            loss = step_loss(x, y)
            opt.zero_grad(set_to_none=True)
            (loss / per_batch).backward()
            opt.step()
            total += float(loss.detach())
        row = {"epoch": epoch, "loss": total / n_labels, "seconds": time.perf_counter() - start}
        out_of_time = cfg.time_budget_s is not None and row["seconds"] > cfg.time_budget_s
        if epoch % cfg.eval_every == 0 or epoch == cfg.max_epochs or out_of_time:
            model.eval()
            with torch.no_grad():
                row["validation"] = evaluate(row)
            row["eval_seconds"] = time.perf_counter() - start - row["seconds"]
            if stopper.update(row["validation"], epoch):
                best_state = copy.deepcopy(model.state_dict())
            stop = stopper.exhausted and epoch >= cfg.min_epochs
            log.info("%s epoch %d loss %.4f validation %.5f (best %.5f @ %d) %.0fs (eval %.0fs)", label, epoch,
                     row["loss"], row["validation"], stopper.best, stopper.best_at, row["seconds"],
                     row["eval_seconds"])
        else:
            stop = False
            log.info("%s epoch %d loss %.4f %.0fs", label, epoch, row["loss"], row["seconds"])
        history.append(row)
        if stop or out_of_time:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return history


def mask_pairs(scores: torch.Tensor, rows: np.ndarray, ban_rows: np.ndarray, ban_cols: np.ndarray) -> None:
    """Set ``scores[i, c]`` to -inf for every banned pair (``rows[i]``, c); ``ban_rows`` sorted ascending."""
    lo, hi = np.searchsorted(ban_rows, rows), np.searchsorted(ban_rows, rows, side="right")
    counts = hi - lo
    pick = np.repeat(lo - np.r_[0, np.cumsum(counts)[:-1]], counts) + np.arange(int(counts.sum()))
    batch_row = np.repeat(np.arange(rows.size), counts)
    scores[torch.from_numpy(batch_row), torch.from_numpy(ban_cols[pick])] = -torch.inf


def topk_columns(scores: torch.Tensor, k: int) -> np.ndarray:
    """Best ``k`` columns per row of ``scores``, best first; -1 for -inf scores or slots beyond the catalog."""
    n = scores.shape[1]
    kk = min(k, n)
    vals, cols = torch.topk(scores, kk, dim=1, sorted=True)
    cols = torch.where(torch.isinf(vals) & (vals < 0), torch.full_like(cols, -1), cols).numpy().astype(np.int64)
    if kk < k:
        cols = np.concatenate([cols, np.full((cols.shape[0], k - kk), -1, np.int64)], axis=1)
    return cols
