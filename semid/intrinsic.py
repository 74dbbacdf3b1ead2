"""Intrinsic evaluation of a Semantic-ID codebook from plain arrays: codebook health (utilisation,
perplexity, collisions), how well shared code prefixes track embedding similarity (over a fixed, seeded pair
sample so figures compare across runs), and how well code groups line up with the catalog taxonomy."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from semid.common import DataError
from semid.text_table import column_blocks


@dataclass(frozen=True)
class PairProtocol:
    """The fixed pair sample behind the similarity metrics."""

    n_queries: int = 5000  # random products whose nearest neighbours are paired with them
    k_neighbours: int = 10  # nearest neighbours by cosine per query product (self excluded)
    n_random_pairs: int = 50000  # uniformly random pairs i != j, the background of the correlation
    cos_threshold: float = 0.9  # "near duplicate" pairs for share_level_at_cos90


@dataclass(frozen=True)
class PairSample:
    """Sampled product pairs (indices into the catalog) and their embedding cosine."""

    left: np.ndarray
    right: np.ndarray
    cosine: np.ndarray


# ----- pair sample ---------------------------------------------------------------------------------------


def normalize(embeddings: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32); zero rows stay zero."""
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def nearest_neighbours(unit: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Indices (len(queries), k) of each query row's k most cosine-similar rows of ``unit``, self excluded."""
    k = min(k, unit.shape[0] - 1)
    if k <= 0:
        return np.zeros((len(queries), 0), np.int64)
    found = _inner_product_search(unit, unit[queries], k + 1)
    keep = found != queries[:, None]
    no_self = keep.all(axis=1)  # self tied with duplicates and pushed out: drop the last hit instead
    keep[no_self, -1] = False
    return found[keep].reshape(len(queries), k)


def _inner_product_search(base: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    try:
        import faiss
    except ImportError:  # faiss is an optional extra: exact numpy search in blocks
        return _numpy_search(base, queries, k)
    index = faiss.IndexFlatIP(base.shape[1])
    index.add(base)
    return index.search(queries, k)[1].astype(np.int64)


def _numpy_search(base: np.ndarray, queries: np.ndarray, k: int, block: int = 1024) -> np.ndarray:
    out = np.empty((len(queries), k), np.int64)
    for start in range(0, len(queries), block):
        sims = queries[start : start + block] @ base.T
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1, kind="stable")
        out[start : start + block] = np.take_along_axis(top, order, axis=1)
    return out


def sample_pairs(
    embeddings: np.ndarray, seed: int = 0, protocol: PairProtocol = PairProtocol()
) -> PairSample:
    """The fixed pair sample: each of ``n_queries`` seeded random products with its k nearest neighbours
    (exact inner product on normalised vectors), plus ``n_random_pairs`` seeded uniform pairs i != j."""
    unit = normalize(embeddings)
    n = unit.shape[0]
    if n < 2:
        raise DataError(f"intrinsic: need at least 2 products to sample pairs, got {n}")
    rng = np.random.default_rng(seed)
    queries = np.sort(rng.choice(n, size=min(protocol.n_queries, n), replace=False))
    nn = nearest_neighbours(unit, queries, protocol.k_neighbours)
    i_rand = rng.integers(0, n, size=protocol.n_random_pairs)
    j_rand = (i_rand + rng.integers(1, n, size=protocol.n_random_pairs)) % n
    left = np.concatenate([np.repeat(queries, nn.shape[1]), i_rand])
    right = np.concatenate([nn.ravel(), j_rand])
    cosine = np.einsum("ij,ij->i", unit[left], unit[right])
    return PairSample(left, right, cosine)


# ----- small statistics ----------------------------------------------------------------------------------


def average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (as Spearman's rho needs)."""
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    counts = np.diff(np.r_[starts, x.size])
    mean_rank = starts + (counts + 1) / 2.0  # ranks of a tie group starts+1 .. starts+counts
    ranks = np.empty(x.size, np.float64)
    ranks[order] = np.repeat(mean_rank, counts)
    return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    """Spearman rank correlation with average ranks for ties; None when either side is constant."""
    rx, ry = average_ranks(np.asarray(x)), average_ranks(np.asarray(y))
    rx -= rx.mean()
    ry -= ry.mean()
    denom = np.sqrt((rx * rx).sum() * (ry * ry).sum())
    return float((rx * ry).sum() / denom) if denom > 0 else None


def shared_depth(codes: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Number of leading codewords the two products of each pair share (0..L)."""
    equal = codes[left] == codes[right]
    return np.cumprod(equal, axis=1).sum(axis=1)


def prefix_groups(codes: np.ndarray, depth: int) -> np.ndarray:
    """Dense group id (0..g-1, in code order) of each product's first ``depth`` codewords."""
    return all_prefix_groups(codes[:, :depth])[-1] if depth > 0 else np.zeros(len(codes), np.int64)


def all_prefix_groups(codes: np.ndarray) -> list[np.ndarray]:
    """Prefix group ids at every depth 1..L in one pass (each depth re-encoded densely, so no overflow)."""
    out, group = [], np.zeros(len(codes), np.int64)
    for level in range(codes.shape[1]):
        column = codes[:, level].astype(np.int64)
        group = np.unique(group * (int(column.max()) + 1) + column, return_inverse=True)[1].reshape(-1)
        out.append(group)
    return out


def _perplexity(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(np.exp(-(p * np.log(p)).sum()))


def pair_agreement(groups: np.ndarray, labels: np.ndarray) -> float | None:
    """Exact share of same-label pairs among all unordered pairs of distinct products within each group
    (from counts: sum C(n_gl, 2) / sum C(n_g, 2)); products with label < 0 are left out."""
    keep = labels >= 0
    groups, labels = groups[keep], labels[keep]
    if groups.size == 0:
        return None
    group_n = np.bincount(groups).astype(np.float64)
    cell_n = np.unique(groups * (labels.max() + 1) + labels, return_counts=True)[1].astype(np.float64)
    total = (group_n * (group_n - 1) / 2).sum()
    return float((cell_n * (cell_n - 1) / 2).sum() / total) if total > 0 else None


def label_ids(
    category_paths: Sequence | pa.Array | pa.ChunkedArray | None, n: int, depth: int | None
) -> np.ndarray:
    """Integer id per product of its path's first ``depth`` parts (None = the whole path, the leaf);
    -1 where the path is missing or shorter than ``depth``."""
    if category_paths is None:
        return np.full(n, -1, np.int64)
    paths = as_paths(category_paths, n)
    lengths = pc.fill_null(pc.list_value_length(paths), 0).to_numpy(zero_copy_only=False)
    if depth is not None:
        paths = pc.list_slice(paths, 0, depth)
    keys = pc.binary_join(paths, "\x1f")
    valid = lengths >= (depth or 1)
    ids = pc.fill_null(pc.dictionary_encode(keys).indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    return np.where(valid, ids, -1)


def as_paths(category_paths: Sequence | pa.Array | pa.ChunkedArray, n: int) -> pa.Array:
    """Category paths (lists of strings, or an arrow list array) as one list<string> array of length n."""
    if isinstance(category_paths, pa.ChunkedArray):
        category_paths = category_paths.combine_chunks()
    if not isinstance(category_paths, pa.Array):
        category_paths = pa.array(category_paths, pa.list_(pa.string()))
    arr = category_paths
    if len(arr) != n:
        raise DataError(f"category paths: {len(arr)} paths for {n} products")
    return arr.cast(pa.list_(pa.string()))


# ----- the metrics ---------------------------------------------------------------------------------------


def _check_inputs(embeddings: np.ndarray, codes: np.ndarray, dedup, codebook_sizes: Sequence[int]) -> None:
    if codes.ndim != 2 or codes.shape[1] != len(codebook_sizes):
        raise DataError(f"intrinsic: codes must be (n, {len(codebook_sizes)}), got {codes.shape}")
    if embeddings.ndim != 2 or embeddings.shape[0] != codes.shape[0]:
        raise DataError(f"intrinsic: embeddings {embeddings.shape} do not match {codes.shape[0]} code rows")
    if dedup is not None and np.asarray(dedup).shape != (codes.shape[0],):
        raise DataError(f"intrinsic: dedup must have shape ({codes.shape[0]},)")
    sizes = np.asarray(codebook_sizes)
    if codes.size and (codes.min() < 0 or (codes.max(axis=0) >= sizes).any()):
        raise DataError(f"intrinsic: codes out of range for codebook sizes {list(codebook_sizes)}")


def codebook_health(codes: np.ndarray, codebook_sizes: Sequence[int]) -> dict:
    """Per-level utilisation (share of codewords used) and perplexity (exp entropy of code usage)."""
    counts = [np.bincount(codes[:, lvl], minlength=size) for lvl, size in enumerate(codebook_sizes)]
    return {
        "utilization": [float((c > 0).mean()) for c in counts],
        "perplexity": [_perplexity(c) for c in counts],
        "used_codes": [int((c > 0).sum()) for c in counts],
    }


def collisions(codes: np.ndarray, dedup: np.ndarray | None) -> dict:
    """Collisions of the L-code SID before disambiguation (and whether the full SID is unique)."""
    group = prefix_groups(codes, codes.shape[1])
    sizes = np.bincount(group)
    n = len(codes)
    out = {
        "n_distinct_sids": int(sizes.size),
        "collision_rate": float(1 - sizes.size / n),  # share of products that need a dedup token > 0
        "unique_fraction": float((sizes[group] == 1).mean()),
        "max_group": int(sizes.max()),
    }
    if dedup is not None:
        full = np.unique(np.column_stack([group, np.asarray(dedup)]), axis=0).shape[0]
        out["full_sid_unique"] = bool(full == n)
    return out


def similarity_depth(codes: np.ndarray, pairs: PairSample, cos_threshold: float) -> dict:
    """Spearman(cosine, shared prefix depth) over the pair sample, and the level shares of near pairs."""
    depth = shared_depth(codes, pairs.left, pairs.right)
    near = pairs.cosine >= cos_threshold
    n_near = int(near.sum())
    levels = range(1, codes.shape[1] + 1)
    return {
        "spearman_similarity_depth": spearman(pairs.cosine, depth),
        "share_level_at_cos90": [float((depth[near] >= lvl).mean()) if n_near else None for lvl in levels],
        "n_pairs": int(depth.size),
        "n_pairs_cos90": n_near,
        "mean_shared_depth": float(depth.mean()),
    }


def taxonomy_alignment(codes: np.ndarray, category_paths) -> dict:
    """Share of same-category pairs among product pairs sharing a code prefix, at every prefix depth,
    against the top-level category and the leaf; ``..._chance`` is the same over all pairs."""
    n, levels = codes.shape
    top = label_ids(category_paths, n, 1)
    leaf = label_ids(category_paths, n, None)
    groups = all_prefix_groups(codes)
    top_by_level = [pair_agreement(g, top) for g in groups]
    return {
        "taxonomy_alignment_l1": top_by_level[0],
        "taxonomy_alignment_top": top_by_level,
        "taxonomy_alignment_leaf": [pair_agreement(g, leaf) for g in groups],
        "taxonomy_alignment_chance": pair_agreement(np.zeros(n, np.int64), top),
    }


def copurchase_sharing(codes: np.ndarray, left: np.ndarray, right: np.ndarray, seed: int = 0) -> dict:
    """Share of (previous product, next product) pairs whose SIDs agree on the first 1..L codewords, beside
    the same products paired at random (``..._chance``, popularity kept). SIDs that put what is bought next
    under the prefix of what was bought before leave the decoder less to learn per product. A product
    followed by itself (a re-buy) says nothing about the codebook and is left out."""
    left, right = np.asarray(left, np.int64), np.asarray(right, np.int64)
    keep = left != right
    left, right = left[keep], right[keep]
    levels = range(1, codes.shape[1] + 1)
    if left.size == 0:
        return {"copurchase_share": None, "copurchase_share_chance": None, "n_copurchase_pairs": 0}
    depth = shared_depth(codes, left, right)
    chance = shared_depth(codes, left, np.random.default_rng(seed).permutation(right))
    return {
        "copurchase_share": [float((depth >= lvl).mean()) for lvl in levels],
        "copurchase_share_chance": [float((chance >= lvl).mean()) for lvl in levels],
        "n_copurchase_pairs": int(left.size),
    }


def intrinsic_metrics(
    embeddings: np.ndarray,
    codes: np.ndarray,
    dedup: np.ndarray | None,
    category_paths,
    codebook_sizes: Sequence[int],
    reconstruction_error: float | None = None,
    seed: int = 0,
    protocol: PairProtocol = PairProtocol(),
    pairs: PairSample | None = None,
) -> dict:
    """All intrinsic metrics of one codebook as a JSON-ready dict. Pass ``pairs`` (from sample_pairs on
    the same embeddings) to reuse one sample across runs; otherwise it is drawn with ``seed``."""
    embeddings = np.asarray(embeddings)
    codes = np.asarray(codes, dtype=np.int64)
    _check_inputs(embeddings, codes, dedup, codebook_sizes)
    if pairs is None:
        pairs = sample_pairs(embeddings, seed, protocol)
    dedup_size = int(np.max(dedup)) + 1 if dedup is not None and len(dedup) else 1
    vocab = int(sum(codebook_sizes)) + dedup_size
    metrics = {
        **codebook_health(codes, codebook_sizes),
        **collisions(codes, dedup),
        **similarity_depth(codes, pairs, protocol.cos_threshold),
        **taxonomy_alignment(codes, category_paths),
        "reconstruction_error": None if reconstruction_error is None else float(reconstruction_error),
        "n_items": int(len(codes)),
        "codebook_sizes": [int(s) for s in codebook_sizes],
        "vocab_size": vocab,  # SID tokens: every level's codewords plus the disambiguation range
        "compression_ratio": float(len(codes) / vocab),  # catalog x dim / vocabulary x dim
    }
    return metrics


# ----- reporting -----------------------------------------------------------------------------------------

_ROWS = [  # (label, key, format)
    ("items", "n_items", "{:d}"),
    ("codebook sizes", "codebook_sizes", "{:d}"),
    ("utilisation", "utilization", "{:.3f}"),
    ("perplexity", "perplexity", "{:.1f}"),
    ("distinct SIDs", "n_distinct_sids", "{:d}"),
    ("collision rate", "collision_rate", "{:.4f}"),
    ("unique before dedup", "unique_fraction", "{:.4f}"),
    ("largest SID group", "max_group", "{:d}"),
    ("full SID unique", "full_sid_unique", "{}"),
    ("spearman sim-depth", "spearman_similarity_depth", "{:.4f}"),
    ("share at cos>=0.9 (l1..)", "share_level_at_cos90", "{:.3f}"),
    ("pairs (cos>=0.9)", "n_pairs_cos90", "{:d}"),
    ("taxonomy align l1", "taxonomy_alignment_l1", "{:.4f}"),
    ("taxonomy align top (l1..)", "taxonomy_alignment_top", "{:.3f}"),
    ("taxonomy align leaf (l1..)", "taxonomy_alignment_leaf", "{:.3f}"),
    ("taxonomy align chance", "taxonomy_alignment_chance", "{:.4f}"),
    ("co-purchase share (l1..)", "copurchase_share", "{:.3f}"),
    ("co-purchase chance (l1..)", "copurchase_share_chance", "{:.4f}"),
    ("co-purchase pairs", "n_copurchase_pairs", "{:d}"),
    ("reconstruction error", "reconstruction_error", "{:.5f}"),
    ("vocab size", "vocab_size", "{:d}"),
    ("compression ratio", "compression_ratio", "{:.1f}"),
]


def _cell(value, fmt: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, (list, tuple)):
        return " / ".join(_cell(v, fmt) for v in value)
    return fmt.format(value)


def compare_intrinsic(runs: Mapping[str, Mapping]) -> str:
    """Several runs' metrics side by side as a text table (rows = metrics, columns = runs), split into
    blocks of runs (each repeating the metric names) where it would be wider than ``text_table.WIDTH``."""
    names = list(runs)
    rows = [("metric", *names)]
    for label, key, fmt in _ROWS:
        if any(key in m for m in runs.values()):
            rows.append((label, *(_cell(runs[name].get(key), fmt) for name in names)))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    blocks = []
    for block in column_blocks(widths[0], [2 + w for w in widths[1:]]):
        cols = [0, *(1 + i for i in block)]
        lines = ["  ".join(row[c].ljust(widths[c]) for c in cols).rstrip() for row in rows]
        lines.insert(1, "  ".join("-" * widths[c] for c in cols))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def format_intrinsic(metrics: Mapping) -> str:
    """One run's metrics as a readable two-column table."""
    return compare_intrinsic({"value": metrics})
