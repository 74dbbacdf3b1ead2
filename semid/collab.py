"""Collaborative item vectors, the array part: products bought near each other in shoppers' sequences get
nearby vectors, so Semantic IDs learned from [text, collaborative] group co-purchased products (as LETTER,
LC-Rec and EAGER do). Windowed co-occurrence counts -> degree normalisation -> truncated randomized SVD, all
sparse. The sequences come in as ragged arrays (``genrec.data.copurchase`` cuts them from the training split:
validation and test targets never contribute a co-occurrence); the settings are ``EmbeddingConfig``'s
``collab_*`` fields.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

from semid.catalog import catalog_rows
from semid.common import DataError, ragged_rows
from semid.embeddings import column_vectors, half_storage, l2_normalize

OVERSAMPLE = 16  # extra random directions of the randomized SVD beyond ``dim`` (accuracy of the subspace)
IMPUTE_CELLS = 1 << 23  # similarities per chunk when imputing: 32 MB, plus 64 MB for their partition
IMPUTE_BLOCK = 16_384  # products imputed per call of impute_from_text by fill_missing
COMBINE_BLOCK = 16_384  # products joined at a time by combine (its float64 products are a block's)
POWER_ITERS = 2  # subspace iterations; 2 mixes in multi-hop co-occurrence (A^5 x): beat 4, 8 and exact top-k on Beauty


def collab_vectors(offsets: np.ndarray, items: np.ndarray, item_ids: np.ndarray, dim: int, window: int,
                   seed: int) -> np.ndarray:
    """Co-purchase vectors float32 [len(item_ids), dim] in ``item_ids`` order from the sequences
    ``items[offsets[i]:offsets[i + 1]]``, rows L2-normalised; items with no co-occurrence get zero rows.
    Deterministic for a ``seed``."""
    if dim < 1:
        raise DataError(f"collab_embeddings: dim must be at least 1, got {dim}")
    if window < 1:
        raise DataError(f"collab_embeddings: window must be at least 1, got {window}")
    item_ids = np.asarray(item_ids, dtype=np.int64)
    return spectral_vectors(cooccurrence(offsets, items, item_ids, window), dim, seed)


def spectral_vectors(counts: sp.csr_matrix, dim: int, seed: int) -> np.ndarray:
    """Co-purchase vectors float32 [n, dim] of symmetric co-occurrence counts [n, n]: degree-normalised,
    truncated randomized SVD, rows L2-normalised; zero rows where nothing co-occurs."""
    n = counts.shape[0]
    similarity = normalized_cooccurrence(counts)
    vectors = np.zeros((n, dim), dtype=np.float32)
    active = np.flatnonzero(np.diff(similarity.indptr))
    if active.size and 2 * active.size < n:
        # most of the catalog never co-occurs (a large catalog, few events): those rows and columns are zero, so
        # the SVD runs on the products that do, its scratch sized by them rather than by the catalog
        u, s = randomized_svd(similarity[active][:, active], min(dim, active.size), seed)
        vectors[active, : s.size] = u * np.sqrt(s)
    elif similarity.nnz:
        u, s = randomized_svd(similarity, min(dim, n), seed)
        vectors[:, : s.size] = u * np.sqrt(s)
    vectors[np.diff(similarity.indptr) == 0] = 0.0  # exactly zero, not round-off, where nothing co-occurs
    return l2_normalize(vectors, out=vectors)


def cooccurrence(offsets: np.ndarray, items: np.ndarray, item_ids: np.ndarray, window: int) -> sp.csr_matrix:
    """Symmetric counts [n_items, n_items] of two different items within ``window`` positions of each
    other in one sequence (``items[offsets[i]:offsets[i + 1]]``); the diagonal (repeat purchases) is left out."""
    rows = _item_rows(item_ids, items)
    owner = ragged_rows(offsets)
    src, dst = [], []
    for d in range(1, window + 1):
        a = np.arange(max(rows.size - d, 0))
        keep = (owner[a] == owner[a + d]) & (rows[a] != rows[a + d])
        src.append(rows[a[keep]])
        dst.append(rows[a[keep] + d])
    i, j = np.concatenate(src), np.concatenate(dst)
    n = item_ids.size
    pairs = sp.coo_matrix((np.ones(2 * i.size), (np.r_[i, j], np.r_[j, i])), shape=(n, n))
    return pairs.tocsr()  # duplicates summed


def normalized_cooccurrence(counts: sp.csr_matrix) -> sp.csr_matrix:
    """``D^-1/2 C D^-1/2`` (D: each item's total count): the symmetric degree normalisation of spectral
    embeddings, so popular items do not own the top singular directions (better than positive PMI on Amazon
    Beauty: docs/semantic-ids.md, "Measured reasons behind defaults")."""
    degree = np.asarray(counts.sum(axis=1)).ravel()
    scale = sp.diags(np.where(degree > 0, degree, 1.0) ** -0.5)
    out = (scale @ counts @ scale).tocsr()
    out.eliminate_zeros()
    return out


def randomized_svd(matrix: sp.csr_matrix, rank: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Top ``rank`` left singular vectors and values of a sparse matrix (Halko et al. 2011: random range,
    power iterations with re-orthonormalisation); seeded numpy randomness, so the result is reproducible."""
    n, m = matrix.shape
    width = min(rank + OVERSAMPLE, n, m)
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(matrix @ rng.standard_normal((m, width)))
    for _ in range(POWER_ITERS):
        q, _ = np.linalg.qr(matrix.T @ q)
        q, _ = np.linalg.qr(matrix @ q)
    small = (matrix.T @ q).T  # q^T A, [width, m]
    u_small, s, _ = np.linalg.svd(small, full_matrices=False)
    k = min(rank, s.size)
    return (q @ u_small[:, :k]).astype(np.float32), s[:k].astype(np.float32)


def impute_from_text(text: np.ndarray, ref_text: np.ndarray, ref_collab: np.ndarray, neighbours: int,
                     chunk: int = 2048, cells: int = IMPUTE_CELLS) -> np.ndarray:
    """Co-purchase vectors for products that have none (new, or never in a training sequence): the mean of
    the collaborative vectors of their ``neighbours`` nearest reference products by text cosine, L2-normalised.
    Left at zero, such a product's joined vector is text only and lands apart from every product the
    decoder learnt (Beauty: no cold test item shared even a level-2 prefix with a top-20 beam).
    At most ``chunk`` products at a time, fewer when the references are many: a chunk's similarities and
    their partition hold at most ``cells`` values (12 bytes each), whatever the catalog's size."""
    if neighbours < 1 or not ref_text.shape[0]:
        return np.zeros((text.shape[0], ref_collab.shape[1]), np.float32)
    return _impute(text, l2_normalize(np.asarray(ref_text, np.float32)), ref_collab, neighbours, chunk, cells)


def _impute(text: np.ndarray, ref: np.ndarray, ref_collab: np.ndarray, neighbours: int, chunk: int = 2048,
            cells: int = IMPUTE_CELLS) -> np.ndarray:
    """``impute_from_text`` with the references' text vectors L2-normalised already (``ref``)."""
    k = min(neighbours, ref.shape[0])
    step = max(1, min(chunk, cells // ref.shape[0]))
    out = np.empty((text.shape[0], ref_collab.shape[1]), np.float32)
    for start in range(0, text.shape[0], step):
        sims = l2_normalize(np.asarray(text[start:start + step], np.float32)) @ ref.T
        nearest = np.argpartition(np.negative(sims, out=sims), k - 1, axis=1)[:, :k]
        out[start:start + step] = ref_collab[nearest].mean(axis=1)
    return l2_normalize(out)


def fill_missing(text: np.ndarray, collab: np.ndarray, neighbours: int, block: int = IMPUTE_BLOCK,
                 inplace: bool = False) -> np.ndarray:
    """``collab`` with its zero rows imputed from the text neighbours among the non-zero rows, ``block`` rows
    at a time (a catalog of mostly unbought products never copies all their text vectors at once); into
    ``collab`` itself when ``inplace``."""
    missing = ~np.any(collab != 0, axis=1)
    if not missing.any() or missing.all() or neighbours < 1:
        return collab
    out = collab if inplace else collab.copy()
    ref, ref_collab = l2_normalize(text[~missing]), collab[~missing]  # the references normalised once
    rows = np.flatnonzero(missing)
    for start in range(0, rows.size, block):
        part = rows[start:start + block]
        out[part] = _impute(text[part], ref, ref_collab, neighbours)
    return out


def combine(text: np.ndarray, collab: np.ndarray, weight: float, block: int = COMBINE_BLOCK) -> np.ndarray:
    """``concat[sqrt(1 - w) * text, sqrt(w) * collab]`` with text rows L2-normalised: ``w`` is the share of
    squared norm the collaborative part gets (a zero collab row leaves the text part only)."""
    if not 0.0 <= weight < 1.0:
        raise DataError(f"embedding.collab_weight must lie in [0, 1), got {weight}")
    if text.shape[0] != collab.shape[0]:
        raise DataError(f"combine: {text.shape[0]} text vectors but {collab.shape[0]} collaborative vectors")
    width = text.shape[1]
    out = np.empty((text.shape[0], width + collab.shape[1]), np.float32)
    for start in range(0, text.shape[0], block):  # a block at a time: no catalog-sized temporaries
        end = start + block
        out[start:end, :width] = np.sqrt(1.0 - weight) * l2_normalize(np.asarray(text[start:end], np.float32))
        out[start:end, width:] = np.sqrt(weight) * np.asarray(collab[start:end], np.float32)
    return out


def combine_file(path: Path, item_ids: np.ndarray, collab: np.ndarray, weight: float,
                 block: int = IMPUTE_BLOCK) -> np.ndarray:
    """``combine`` of the text vectors in the embeddings file ``path`` (``write_embeddings``'s, rows in
    ``item_ids`` order) with ``collab``, the file read ``block`` rows at a time: the text vectors of a large
    catalog are not in memory beside the joined ones. The same values as ``combine`` on the whole arrays,
    kept in float16 for a large catalog (``semid.embeddings.half_storage``: both parts are unit length)."""
    out, row = None, 0
    with pq.ParquetFile(path, pre_buffer=False) as file:  # pre-buffering would read the whole file first
        for part in file.iter_batches(batch_size=block):
            table = pa.Table.from_batches([part])
            ids = table.column("item_id").to_numpy()
            if not np.array_equal(ids, item_ids[row:row + ids.size]):
                raise DataError(f"{path}: lists other products than the catalog, in another order")
            joined = combine(column_vectors(table, "embedding", str(path)), collab[row:row + ids.size], weight, block)
            if out is None:
                out = np.empty((len(item_ids), joined.shape[1]), half_storage(len(item_ids)))
            out[row:row + ids.size] = joined
            row += ids.size
    if out is None or row != len(item_ids):
        raise DataError(f"{path}: {row} vectors for {len(item_ids)} products")
    return out


def _item_rows(item_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Row of each of ``ids`` in the (any order) catalog ``item_ids``; an id outside it is a DataError."""
    if item_ids.size == 0:
        raise DataError("collab_embeddings: the catalog is empty")
    rows = catalog_rows(item_ids, ids)
    if (rows < 0).any():
        missing = np.unique(ids[rows < 0])
        raise DataError(f"events.parquet: {missing.size} item_id values not in the catalog, "
                        f"e.g. {missing[:5].tolist()}")
    return rows
