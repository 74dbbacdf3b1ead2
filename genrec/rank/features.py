"""Feature columns of a candidate set: one code path for the ranker's training examples, evaluation and
serving (``genrec.retriever.Retriever.candidate_set`` calls ``compute``), so what the ranker learns from is
what it is served. NaN marks a feature that does not apply (a product the beam never reached); LightGBM
learns where such rows go.

Groups (``RankConfig.drop_features`` leaves any out):
- ``decoder``: log-prob of the candidate's first d SID tokens wherever the beam reached that prefix
  (``dec_l1`` .. ``dec_lD``: the total for products in the beam, a partial score for products another
  source proposed under a decoded prefix), its beam rank, and the query's best beam score;
- ``co``: co-purchase similarity to the history, its rank among the query's and its share of the best;
- ``again``: times the shopper bought it (and as a share of the history), items since the last time,
  time-decayed frequencies at four decays, the mean gap between re-buys (in items: the API takes no
  timestamps);
- ``popularity``: training purchases, and the share of a product's buyers who bought it again and of its
  purchases that are recent (``genrec.rank.item_stats``); ``sid``: SID prefix shared with the latest and the closest of the last
  ten history items; ``query``: history length; ``new``: launched after training; ``head``: the item head's
  log-prob, where the run has one.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from genrec.rank.memory import sparse_lookup
from genrec.rank.candidates import CandidateSet, pair_index
from genrec.rank.item_stats import ItemStats
from index.catalog_view import ProductLists
from semid.catalog import item_columns

SID_HISTORY = 10  # history items the SID overlap looks back over
AGAIN_DECAYS = (0.7, 0.9, 0.97, 0.99)  # the time-decayed frequencies of a re-buy (own_popular tunes among such)


@dataclass
class QueryContext:
    """What features read about a batch besides the candidates themselves."""

    histories: list[np.ndarray]  # item ids, oldest first (products the run knows)
    rows: np.ndarray  # [B, W, D] the beam's token rows, -1 where dead
    levels: np.ndarray  # [B, W, D] log-prob after each token
    reach: sp.csr_matrix | None  # co-purchase similarity to each history [B, n] (None: no memory)
    reach_items: np.ndarray  # the columns' item ids
    reach_ranks: np.ndarray | None = None  # each stored entry's rank in its row (``sources.row_ranks``)
    head_logp: np.ndarray | None = None  # [B, n_head] item head log-probs (None: no head)
    head_items: np.ndarray | None = None
    item_stats: ItemStats | None = None  # per-product re-buy rate and recent share (None: not built)


def feature_group(name: str) -> str:
    """The group (``RankConfig.drop_features``) a feature column belongs to."""
    prefixes = (("dec_", "decoder"), ("beam_", "decoder"), ("co_", "co"), ("again_", "again"), ("pop", "popularity"),
                ("sid_", "sid"), ("hist_", "query"), ("new", "new"), ("head", "head"))
    return next(group for prefix, group in prefixes if name.startswith(prefix))


def compute(cs: CandidateSet, ctx: QueryContext, forest: ProductLists, drop: tuple[str, ...] = ()) -> CandidateSet:
    """``cs`` with its feature matrix and names, every group but ``drop``."""
    cols: dict[str, np.ndarray] = {}
    groups = {"decoder": _decoder, "co": _co, "again": _again, "popularity": _popularity, "sid": _sid,
              "query": _query, "new": _new, "head": _head}
    for name, fn in groups.items():
        if name not in drop:
            cols.update(fn(cs, ctx, forest))
    names = tuple(cols)
    matrix = np.column_stack([cols[n] for n in names]).astype(np.float32) if names else np.zeros((len(cs), 0), np.float32)
    return CandidateSet(cs.query, cs.pos, cs.item_ids, cs.sources, cs.n_queries, matrix, names)


def _decoder(cs: CandidateSet, ctx: QueryContext, forest: ProductLists) -> dict[str, np.ndarray]:
    """Log-probs of each candidate's SID prefixes the beam reached, its beam rank, the query's best score."""
    batch, width, depth = ctx.rows.shape
    live = (ctx.rows[..., 0] >= 0).reshape(-1)
    beam_q = np.repeat(np.arange(batch), width)[live]
    beam_levels = ctx.levels.reshape(-1, depth)[live].astype(np.float64)
    ids = _prefix_ids(beam_q, ctx.rows.reshape(-1, depth)[live], cs.query, forest.rows_at(cs.pos))
    out = {f"dec_l{d + 1}": _lookup(beam, beam_levels[:, d], cand) for d, (beam, cand) in enumerate(ids)}
    ranks = np.tile(np.arange(width, dtype=np.float64), batch)[live]
    out["beam_rank"] = _lookup(ids[-1][0], ranks, ids[-1][1])
    best = np.where(ctx.rows[:, 0, 0] >= 0, ctx.levels[:, 0, -1], np.nan)
    out["dec_top"] = best[cs.query]
    return out


def _prefix_ids(beam_q: np.ndarray, beam_rows: np.ndarray, cand_q: np.ndarray,
                cand_rows: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per depth d, dense ids of (query, first d + 1 tokens) for the beam's rows and the candidates' rows,
    equal where the prefixes are: one 1-D ``np.unique`` per level, each folding a token into the ids so far."""
    n = beam_q.size
    key = np.concatenate([beam_q, cand_q]).astype(np.int64)
    rows = np.concatenate([beam_rows, cand_rows]).astype(np.int64)
    base = int(rows.max(initial=0)) + 1
    out = []
    for d in range(rows.shape[1]):
        _, key = np.unique(key * base + rows[:, d], return_inverse=True)
        key = key.reshape(-1).astype(np.int64)
        out.append((key[:n], key[n:]))
    return out


def _lookup(keys: np.ndarray, values: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """``values`` at the key equal to each of ``wanted`` (NaN where none); equal keys carry equal values (a
    SID prefix has one log-prob)."""
    size = int(max(keys.max(initial=-1), wanted.max(initial=-1))) + 1
    table = np.full(size, np.nan)
    table[keys] = values
    return table[wanted]


def _co(cs: CandidateSet, ctx: QueryContext, forest: ProductLists) -> dict[str, np.ndarray]:
    """Co-purchase similarity to the history, its rank in the query's row (1 = best) and share of the best."""
    if ctx.reach is None:
        return {}
    cols = item_columns(ctx.reach_items, cs.item_ids)
    score = sparse_lookup(ctx.reach, cs.query, cols)
    r = ctx.reach
    ranked = sp.csr_matrix((ctx.reach_ranks, r.indices, r.indptr), shape=r.shape)
    best = np.zeros(r.shape[0])
    has = np.diff(r.indptr) > 0
    best[has] = np.maximum.reduceat(r.data, r.indptr[:-1][has]) if r.data.size else 0
    hit = score > 0
    return {"co_score": score, "co_rank": np.where(hit, sparse_lookup(ranked, cs.query, cols), np.nan),
            "co_share": np.where(hit, score / np.where(best[cs.query] > 0, best[cs.query], 1), 0.0)}


def _again(cs: CandidateSet, ctx: QueryContext, forest: ProductLists) -> dict[str, np.ndarray]:
    """The shopper's own purchases of the candidate: count, age of the last (items ago), decayed
    frequency, mean gap between re-buys."""
    lengths = np.array([h.size for h in ctx.histories], np.int64)
    flat = np.concatenate(ctx.histories).astype(np.int64) if ctx.histories else np.zeros(0, np.int64)
    query = np.repeat(np.arange(lengths.size), lengths)
    age = (np.repeat(np.cumsum(lengths), lengths) - 1 - np.arange(flat.size)).astype(np.float64)
    span = int(flat.max(initial=0)) + 1
    keys, inverse = np.unique(query * span + flat, return_inverse=True)  # one row per (query, product bought)
    first, last = np.full(keys.size, np.inf), np.full(keys.size, -np.inf)
    np.minimum.at(first, inverse, age)
    np.maximum.at(last, inverse, age)
    at = pair_index(keys // span, keys % span, cs.query, cs.item_ids)
    n = _take(np.bincount(inverse, minlength=keys.size).astype(np.float64), at, 0.0)
    out = {"again_count": n, "again_share": n / np.maximum(lengths[cs.query], 1),
           "again_age": _take(first, at, np.nan),
           "again_gap": np.where(n > 1, _take((last - first), at, np.nan) / np.maximum(n - 1, 1), np.nan)}
    for d in AGAIN_DECAYS:
        out[f"again_decay{round(100 * d)}"] = _take(np.bincount(inverse, weights=d ** age, minlength=keys.size), at, 0.0)
    return out


def _take(values: np.ndarray, at: np.ndarray, default: float) -> np.ndarray:
    """``values[at]``, ``default`` where ``at`` is -1."""
    out = np.full(at.size, default)
    out[at >= 0] = values[at[at >= 0]]
    return out


def _popularity(cs: CandidateSet, ctx: QueryContext, forest: ProductLists) -> dict[str, np.ndarray]:
    """Training purchases (log), and where the run has them, the re-buy rate and recent share."""
    out = {"pop": np.log1p(forest.popularity[cs.pos])}
    if ctx.item_stats is not None:
        out.update({f"pop_{k}": v for k, v in ctx.item_stats.lookup(cs.item_ids).items()})
    return out


def _sid(cs: CandidateSet, ctx: QueryContext, forest: ProductLists) -> dict[str, np.ndarray]:
    """SID tokens the candidate shares (as a prefix) with the latest history item, and the most it shares
    with any of the last ``SID_HISTORY``."""
    depth = forest.catalog_rows.shape[1]
    recent = np.full((len(ctx.histories), SID_HISTORY, depth), -1, np.int64)
    for b, h in enumerate(ctx.histories):
        tail = h[-SID_HISTORY:][::-1]  # latest first
        cat = item_columns(forest.catalog_ids, tail)
        recent[b, : tail.size][cat >= 0] = forest.catalog_rows[cat[cat >= 0]]
    cand = forest.rows_at(cs.pos)
    shared = np.cumprod(recent[cs.query] == cand[:, None, :], axis=2).sum(axis=2)  # [N, SID_HISTORY]
    return {"sid_last": shared[:, 0].astype(np.float64), "sid_max": shared.max(axis=1).astype(np.float64)}


def _query(cs: CandidateSet, ctx: QueryContext, forest: ProductLists) -> dict[str, np.ndarray]:
    lengths = np.array([h.size for h in ctx.histories], np.float64)
    return {"hist_len": np.log1p(lengths)[cs.query]}


def _new(cs: CandidateSet, ctx: QueryContext, forest: ProductLists) -> dict[str, np.ndarray]:
    cold = forest.cold_positions
    at = np.searchsorted(cold, cs.pos).clip(max=max(cold.size - 1, 0))
    return {"new": (cold[at] == cs.pos).astype(np.float64) if cold.size else np.zeros(len(cs))}


def _head(cs: CandidateSet, ctx: QueryContext, forest: ProductLists) -> dict[str, np.ndarray]:
    if ctx.head_logp is None:
        return {}
    cols = item_columns(ctx.head_items, cs.item_ids)
    return {"head": np.where(cols >= 0, ctx.head_logp[cs.query, np.maximum(cols, 0)], np.nan)}
