"""SASRec (Kang & McAuley 2018), pre-norm, as a baseline in the evaluation harness.

A causal self-attention encoder reads a shopper's last ``max_len`` items (item embedding + learned
position) and scores every catalog item by inner product with the tied item embedding. Two losses: the
full-softmax cross-entropy over all items at every labelled position (the strong modern recipe) or the
original paper's binary cross-entropy with one sampled negative per positive. Only real (labelled)
positions are gathered before the output projection, so padding costs nothing and contributes nothing.
Early stopping on validation NDCG@K; ranking is over the whole catalog with the history masked.
Item embeddings start small (std 0.02, as in RecBole; pmixer's Xavier init gives ~0.013): the table is
also the output layer, and a wide random init (std dim ** -0.5) leaves noise in the logits of rarely seen
items that Adam washes out only slowly (Amazon Beauty, val NDCG@10: 0.054 vs 0.046 after 10 epochs, best
0.0715 vs 0.064; test NDCG@10 0.057 vs 0.049).
"""
from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, fields, replace
from typing import Callable, Iterator, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from genrec.evaluation.baselines.base import FitContext
from semid.catalog import item_columns
from semid.common import DataError, ragged_rows, torch_threads
from genrec.data.sequences import Examples

log = logging.getLogger(__name__)

PAD = 0  # model index of padding; catalog column c is model index c + 1


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
    lr: float = 1e-3  # Adam learning rate (Beauty val NDCG@10: 0.0715 @ epoch 46; 2e-3: 0.0699 @ 22)
    betas: tuple[float, float] = (0.9, 0.98)  # Adam betas (the original's)
    weight_decay: float = 0.0  # Adam L2 penalty
    max_epochs: int = 200  # upper bound on passes over the training windows
    patience: int = 10  # evaluations without a better validation score before stopping
    eval_every: int = 1  # epochs between validation evaluations
    min_epochs: int = 1  # never stop before this many epochs
    bf16_logits: bool | None = None  # ce: item logits in bfloat16 (~1.5x faster epochs); None: where the CPU has it
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


def with_options(cfg, options: dict, label: str):
    """``cfg`` (a dataclass) updated by ``options``; unknown keys raise DataError naming ``label``."""
    known = {f.name for f in fields(cfg)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise DataError(f"{label}: unknown options {unknown}; known: {sorted(known)}")
    return replace(cfg, **options)


# ----------------------------------------------------------------------------------------------- arrays


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


# ------------------------------------------------------------------------------------------------ model


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


def native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (avx512_bf16 / AMX); emulated bf16 would be slower."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def sample_negatives(positives: torch.Tensor, n_items: int, gen: torch.Generator | None) -> torch.Tensor:
    """One uniformly drawn catalog column per positive, never the positive itself (needs n_items >= 2)."""
    if n_items < 2:
        raise DataError("SASRec bce: need at least 2 catalog items to sample negatives")
    draw = torch.randint(0, n_items - 1, positives.shape, generator=gen, device=positives.device)
    return draw + (draw >= positives).long()  # skip the positive: uniform over the other n_items - 1


# ------------------------------------------------------------------------------------ scoring & metrics


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


def ranking_metrics(ranked_cols: np.ndarray, examples: Examples, catalog: np.ndarray) -> dict[str, float]:
    """Mean recall@K and NDCG@K (K = columns of ``ranked_cols``, -1 = empty slot) against each example's
    targets; a target outside the catalog counts as missed."""
    k = ranked_cols.shape[1]
    t_cols = item_columns(catalog, examples.target_items)
    rows = ragged_rows(examples.target_offsets)
    n_t = np.diff(examples.target_offsets)
    hit = np.zeros(ranked_cols.shape, bool)
    for j in range(k):  # K is small: a loop over rank slots, vectorised over all targets
        match = (ranked_cols[rows, j] == t_cols) & (t_cols >= 0)
        hit[rows[match], j] = True
    gains = 1.0 / np.log2(np.arange(k) + 2.0)
    ideal = np.cumsum(gains)[np.minimum(n_t, k) - 1]
    valid = n_t > 0
    recall = hit.sum(1)[valid] / n_t[valid]
    ndcg = (hit * gains).sum(1)[valid] / ideal[valid]
    return {f"recall@{k}": float(recall.mean()) if valid.any() else 0.0,
            f"ndcg@{k}": float(ndcg.mean()) if valid.any() else 0.0}


# ---------------------------------------------------------------------------------------------- trainer


class EarlyStopping:
    """Keeps the best validation score and a copy of the weights that reached it; says when to stop."""

    def __init__(self, patience: int) -> None:
        self.patience, self.best, self.best_epoch, self.state, self.bad = patience, -math.inf, 0, None, 0

    def update(self, score: float, epoch: int, model: nn.Module) -> bool:
        """Record ``score`` at ``epoch``; True when patience is exhausted."""
        if score > self.best:
            self.best, self.best_epoch, self.bad = score, epoch, 0
            self.state = copy.deepcopy(model.state_dict())
        else:
            self.bad += 1
        return self.bad >= self.patience


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
    stopper, history, start = EarlyStopping(cfg.patience), [], time.perf_counter()
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
            stop = stopper.update(row["validation"], epoch, model) and epoch >= cfg.min_epochs
            log.info("%s epoch %d loss %.4f validation %.5f (best %.5f @ %d) %.0fs (eval %.0fs)", label, epoch,
                     row["loss"], row["validation"], stopper.best, stopper.best_epoch, row["seconds"],
                     row["eval_seconds"])
        else:
            stop = False
            log.info("%s epoch %d loss %.4f %.0fs", label, epoch, row["loss"], row["seconds"])
        history.append(row)
        if stop or out_of_time:
            break
    if stopper.state is not None:
        model.load_state_dict(stopper.state)
    model.eval()
    return history


# -------------------------------------------------------------------------------------------- baseline


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
        self.fit_seconds = 0.0  # wall time of the last fit

    def fit(self, train: Examples, validation: Examples, ctx: FitContext) -> "SASRec":
        """Train on every labelled position of ``train``; keep the epoch best on validation NDCG@K (K = the
        largest of ``ctx.k_values``). ``ctx.options`` override config fields (e.g. ``max_epochs``)."""
        cfg = self.config = with_options(self.config, ctx.options, "SASRec options")
        self.catalog, self.device = ctx.item_ids, ctx.device
        inputs, labels = training_matrices(train, self.catalog, cfg.max_len)
        if inputs.shape[0] == 0:
            raise DataError("SASRec: the training examples hold no item to learn from")
        k = max(ctx.k_values)
        start = time.perf_counter()
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
                return ranking_metrics(ranked, validation, self.catalog)[f"ndcg@{k}"]

            self.history = train_loop(self.model, step, inputs, labels, evaluate, cfg, ctx.seed, self.name)
        self.fit_seconds = time.perf_counter() - start
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


__all__ = ["SASRec", "SASRecConfig", "SASRecModel", "CausalEncoder", "EarlyStopping", "training_matrices",
           "history_matrix", "left_pad", "banned_pairs", "mask_pairs", "length_batches", "ranking_metrics",
           "train_loop", "with_options", "topk_columns"]
