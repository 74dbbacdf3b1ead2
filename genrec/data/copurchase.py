"""Co-purchase statistics of the shoppers' training sequences, shared by the layers above: the
collaborative item vectors the SID stage adds to text embeddings (``collab_embeddings``, the arrays in
``semid.collab``) and the windowed co-occurrence similarity of item-kNN (``KNNSettings``, ``pair_counts``,
``similarity``, ``query_matrix``), which both the item-kNN baseline and the decoder's co-purchase memory use.

Only the training part of each shopper's sequence counts, exactly what the decoder trains on
(``make_splits``): validation and test targets never contribute a co-occurrence.

sim(a, b) = sum over training pairs (a then b, d steps apart, d <= window) of decay^(d-1), plus
``backward`` times the same for b then a, divided by count(a)^alpha * count(b)^gamma. score(b | history)
= sum over the last ``last_n`` history items h_j (j = 0 latest) of recency^j * sim(h_j, b).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

from genrec.data.dataset import events_path, read_events
from genrec.data.outofcore import copurchase_counts, resolve_engine
from genrec.data.sequences import Examples, SequenceConfig, build_histories, make_splits, train_sequences
from semid.catalog import item_columns
from semid.collab import collab_vectors, spectral_vectors
from semid.common import DataError, ragged_rows

EVENT_COLUMNS = ("user_id", "session_id", "ts", "item_id", "position")  # what the training sequences read


def collab_embeddings(events: pa.Table, item_ids: np.ndarray, seq_cfg: SequenceConfig, dim: int, window: int,
                      seed: int) -> np.ndarray:
    """Co-purchase vectors float32 [len(item_ids), dim] in ``item_ids`` order, rows L2-normalised; items
    with no co-occurrence in the training sequences get zero rows. Deterministic for a ``seed``."""
    seqs = training_sequences(events, seq_cfg)
    return collab_vectors(seqs.history_offsets, seqs.history_items, item_ids, dim, window, seed)


def collab_embeddings_from_dataset(data: str | Path, item_ids: np.ndarray, seq_cfg: SequenceConfig, dim: int,
                                   window: int, seed: int) -> tuple[np.ndarray, dict]:
    """``collab_embeddings`` of the dataset folder ``data``'s events, read as ``seq_cfg.counts_engine`` says:
    ``memory`` reads the whole event table, ``duckdb`` counts the co-purchases out of core
    (``genrec.data.outofcore``), ``auto`` picks by the number of events. The vectors are identical either way.
    Returns them with {"engine", "events"}."""
    path = events_path(data)
    n_events = pq.ParquetFile(path).metadata.num_rows
    engine = resolve_engine(seq_cfg.counts_engine, n_events)
    if engine == "memory":
        return collab_embeddings(read_events(data), item_ids, seq_cfg, dim, window, seed), \
            {"engine": engine, "events": n_events}
    if dim < 1:
        raise DataError(f"collab_embeddings: dim must be at least 1, got {dim}")
    names = pq.read_schema(path).names
    for name in EVENT_COLUMNS:
        if name not in names:
            raise DataError(f"events.parquet: missing required column {name!r} (has: {names})")
    counts = copurchase_counts(path, item_ids, seq_cfg.split, window, memory_limit=seq_cfg.counts_memory_limit)
    return spectral_vectors(counts, dim, seed), {"engine": engine, "events": n_events}


def training_sequences(events: pa.Table, seq_cfg: SequenceConfig) -> Examples:
    """Each shopper's training sequence (as ``history``), cut by ``make_splits`` exactly as for the decoder:
    the held-out validation and test items are not in it. The span does not depend on the decoder's
    history cap, so one window per shopper (cap = longest history) keeps it whole and small."""
    histories = build_histories(events)
    longest = max(int(histories.lengths.max()), 1)
    seq = dataclasses.replace(seq_cfg, train_stride=longest)
    return train_sequences(make_splits(histories, longest, seq).train)


@dataclass(frozen=True)
class KNNSettings:
    """One point of the item-kNN search space."""

    window: int = 3  # co-occurrence window in steps
    decay: float = 1.0  # weight of a pair d steps apart = decay ** (d - 1)
    backward: float = 1.0  # weight of "b before a" relative to "a before b"
    alpha: float = 0.5  # exponent of count(source item) in the normalisation
    gamma: float = 0.5  # exponent of count(candidate item) in the normalisation
    last_n: int = 3  # history items the query is scored from
    recency: float = 0.7  # weight of the j-th most recent of them = recency ** j


def pair_counts(seqs: Examples, catalog: np.ndarray, max_window: int) -> list[sp.csr_matrix]:
    """For d = 1..max_window, the sparse count matrix of (item, item d steps later) in the sequences."""
    cols = item_columns(catalog, seqs.history_items)
    rows = ragged_rows(seqs.history_offsets)
    n = catalog.size
    out = []
    for d in range(1, max_window + 1):
        a = np.arange(max(cols.size - d, 0))
        ok = (rows[a] == rows[a + d]) & (cols[a] >= 0) & (cols[a + d] >= 0)
        src, dst = cols[a[ok]], cols[a[ok] + d]
        out.append(sp.csr_matrix((np.ones(src.size), (src, dst)), shape=(n, n)))
    return out


def similarity(pairs: list[sp.csr_matrix], counts: np.ndarray, s: KNNSettings) -> sp.csr_matrix:
    """The normalised similarity matrix of settings ``s`` from ``pair_counts`` (rows: source item, columns:
    candidate) and each item's training count."""
    if s.window < 1 or s.window > len(pairs):
        raise DataError(f"itemknn: window {s.window} outside 1..{len(pairs)}")
    fwd = pairs[0].copy()
    for d in range(2, s.window + 1):
        fwd = fwd + (s.decay ** (d - 1)) * pairs[d - 1]
    sim = fwd + s.backward * fwd.T if s.backward else fwd
    c = np.maximum(counts, 1.0)
    return (sp.diags(c ** -s.alpha) @ sim @ sp.diags(c ** -s.gamma)).tocsr()


def query_matrix(offsets: np.ndarray, items: np.ndarray, catalog: np.ndarray, s: KNNSettings) -> sp.csr_matrix:
    """Queries (ragged histories) as sparse rows over ``catalog``: the last ``s.last_n`` items of each,
    the j-th most recent weighted ``s.recency ** j``; ids outside the catalog are skipped."""
    rows = ragged_rows(offsets)
    age = offsets[1:][rows] - 1 - np.arange(rows.size)
    cols = item_columns(catalog, items)
    keep = (age < s.last_n) & (cols >= 0)
    weight = s.recency ** age[keep].astype(np.float64)
    return sp.csr_matrix((weight, (rows[keep], cols[keep])), shape=(offsets.size - 1, catalog.size))
