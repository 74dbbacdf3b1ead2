"""Catalog audit: products whose Semantic-ID neighbourhood disagrees with their category label (the protein
bar filed under candy), ranked for human review.

A product's neighbourhood is every other labelled product sharing its deepest well-populated code prefix
(the longest prefix shared with at least ``min_support`` others). Neighbours vote for their leaf label,
each with weight 1, or, given embeddings, with its cosine to the product (clipped at 0) so the closest
neighbours count most. With n neighbours casting total vote W, W_maj for the majority label and W_own for
the product's own label:

    confidence = (W_maj - W_own) / W  *  n / (n + min_support)

the majority's margin over the product's own label as a share of the vote, times a support factor that
shrinks small neighbourhoods (as if ``min_support`` more neighbours had voted without evidence). It lies in
[0, 1): near 1 means a large neighbourhood that almost never carries the product's label."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from semid.common import DataError
from semid.intrinsic import all_prefix_groups, as_paths, label_ids, normalize
from semid.tokenizer import format_codes

AUDIT_SCHEMA = pa.schema(
    [
        pa.field("item_id", pa.int64()),
        pa.field("title", pa.string()),
        pa.field("label", pa.string()),
        pa.field("majority_label", pa.string()),
        pa.field("confidence", pa.float64()),
        pa.field("n_neighbours", pa.int32()),
        pa.field("example_neighbours", pa.list_(pa.string())),
        pa.field("sid", pa.string()),
        pa.field("depth", pa.int32()),  # code prefix length that defined the neighbourhood
    ]
)
BLOCK_ELEMENTS = 4_000_000  # bounds memory: query x neighbour weights held at once
PACK_MEMBERS = 256  # small groups are voted together in blocks of about this many members (fewer BLAS calls)


@dataclass
class _Verdicts:
    """Per product (indexed like the catalog): the neighbourhood vote, filled group by group."""

    n: int
    majority: np.ndarray = field(init=False)  # majority label id among its neighbours (-1: not audited)
    w_major: np.ndarray = field(init=False)
    w_own: np.ndarray = field(init=False)
    w_total: np.ndarray = field(init=False)
    n_neighbours: np.ndarray = field(init=False)
    examples: dict = field(default_factory=dict)  # flagged product -> closest majority-label neighbours

    def __post_init__(self) -> None:
        self.majority = np.full(self.n, -1, np.int64)
        self.w_major, self.w_own, self.w_total = (np.zeros(self.n) for _ in range(3))
        self.n_neighbours = np.zeros(self.n, np.int64)


def deepest_support(codes: np.ndarray, labelled: np.ndarray, min_support: int) -> tuple[np.ndarray, list]:
    """Per product, the longest code prefix shared with >= ``min_support`` other labelled products
    (0 where none is), and the prefix group ids at every depth 1..L."""
    n, levels = codes.shape
    depth = np.zeros(n, np.int64)
    groups = all_prefix_groups(codes)
    for d in range(levels, 0, -1):
        g = groups[d - 1]
        others = np.bincount(g, weights=labelled.astype(np.float64))[g] - labelled
        depth = np.where((depth == 0) & (others >= min_support), d, depth)
    return depth, groups


def _vote_block(queries, members, groups, labels, unit, n_examples, out: _Verdicts) -> None:
    """Neighbourhood vote for a block of queries against the labelled members of their groups (members
    sorted by group, then index); pairs across groups get no vote."""
    same = groups[queries][:, None] == groups[members][None, :]
    neighbour = same & (queries[:, None] != members[None, :])  # a product does not vote for itself
    if unit is None:
        weight = neighbour.astype(np.float32)
    else:
        weight = np.where(neighbour, np.clip(unit[queries] @ unit[members].T, 0.0, None), np.float32(0))
    classes, member_class = np.unique(labels[members], return_inverse=True)
    one_hot = np.eye(classes.size, dtype=np.float32)[member_class]
    votes = (weight @ one_hot).astype(np.float64)  # (queries, labels present in the block)
    rows = np.arange(queries.size)
    own = np.searchsorted(classes, labels[queries])
    best = votes.argmax(axis=1)  # ties: the lowest label id ...
    best = np.where(votes[rows, own] >= votes[rows, best], own, best)  # ... unless the product's own label
    out.majority[queries] = classes[best]
    out.w_major[queries] = votes[rows, best]
    out.w_own[queries] = votes[rows, own]
    out.w_total[queries] = votes.sum(axis=1)
    out.n_neighbours[queries] = neighbour.sum(axis=1)
    flagged = np.flatnonzero(best != own)
    if flagged.size:
        majority_member = (member_class[None, :] == best[flagged, None]) & neighbour[flagged]
        score = np.where(majority_member, weight[flagged], -1.0)
        top = np.argsort(-score, axis=1, kind="stable")[:, :n_examples]
        for k, (row, picks) in enumerate(zip(flagged, top)):
            out.examples[int(queries[row])] = members[picks[score[k, picks] >= 0]]


def _blocks(member_counts: np.ndarray) -> np.ndarray:
    """Block id per group: a large group alone, consecutive small groups packed up to PACK_MEMBERS."""
    big = member_counts >= PACK_MEMBERS // 4
    small_before = np.cumsum(np.where(big, 0, member_counts)) - np.where(big, 0, member_counts)
    bucket = small_before // PACK_MEMBERS
    new = np.r_[True, big[1:] | big[:-1] | (bucket[1:] != bucket[:-1])]
    return np.cumsum(new) - 1


def _vote_depth(groups: np.ndarray, queries: np.ndarray, labelled: np.ndarray, labels, unit, n_examples, out):
    """Run the vote for every group (at one depth) that holds queries, in memory-bounded blocks."""
    query_groups = np.unique(groups[queries])
    members = np.flatnonzero(labelled & np.isin(groups, query_groups))
    members = members[np.argsort(groups[members], kind="stable")]
    queries = queries[np.argsort(groups[queries], kind="stable")]
    m_end = np.searchsorted(groups[members], query_groups, side="right")
    q_end = np.searchsorted(groups[queries], query_groups, side="right")
    block = _blocks(np.diff(np.r_[0, m_end]))
    last = np.r_[np.flatnonzero(np.diff(block)), block.size - 1]  # last group of each block
    m_bounds, q_bounds = np.r_[0, m_end[last]], np.r_[0, q_end[last]]
    for m0, m1, q0, q1 in zip(m_bounds[:-1], m_bounds[1:], q_bounds[:-1], q_bounds[1:]):
        step = max(1, BLOCK_ELEMENTS // (m1 - m0))
        for i in range(q0, q1, step):
            _vote_block(queries[i : min(i + step, q1)], members[m0:m1], groups, labels, unit, n_examples, out)


def _leaves(paths: pa.Array) -> pa.Array:
    """Leaf name of every path (null where the path is empty or missing)."""
    lengths = pc.fill_null(pc.list_value_length(paths), 0).to_numpy(zero_copy_only=False)
    flat = pc.list_flatten(paths)
    if len(flat) == 0:
        return pa.nulls(len(paths), pa.string())
    leaf = flat.take(pa.array(np.maximum(np.cumsum(lengths) - 1, 0)))
    return pc.if_else(pa.array(lengths > 0), leaf, pa.scalar(None, pa.string()))


def audit_catalog(
    item_ids: Sequence[int] | np.ndarray,
    titles: Sequence[str],
    category_paths,
    codes: np.ndarray,
    embeddings: np.ndarray | None = None,
    min_support: int = 5,
    top: int | None = None,
    sids: Sequence[str] | None = None,
    unlabelled: Sequence[str] = (),
    n_examples: int = 5,
) -> pa.Table:
    """Products whose code neighbourhood's majority leaf label differs from their own, ranked by
    confidence (see the module docstring); ``unlabelled`` leaf names count as no label."""
    codes = np.asarray(codes, dtype=np.int64)
    item_ids = np.asarray(item_ids, dtype=np.int64)
    n = len(item_ids)
    if codes.ndim != 2 or codes.shape[0] != n or len(titles) != n:
        raise DataError(f"audit: codes {codes.shape}, {len(titles)} titles and {n} item ids do not line up")
    if min_support < 1:
        raise DataError(f"audit: min_support must be >= 1, got {min_support}")
    if n == 0:
        return AUDIT_SCHEMA.empty_table()
    paths = as_paths(category_paths, n)
    labels = label_ids(paths, n, None)
    if unlabelled:
        ignored = pc.is_in(_leaves(paths), value_set=pa.array(list(unlabelled), pa.string()))
        labels = np.where(ignored.to_numpy(zero_copy_only=False), -1, labels)
    names = np.asarray(pc.binary_join(paths, " > ").to_pylist(), dtype=object)
    unit = None if embeddings is None else normalize(np.asarray(embeddings))
    if unit is not None and unit.shape[0] != n:
        raise DataError(f"audit: {unit.shape[0]} embeddings for {n} products")
    labelled = labels >= 0
    depth, groups = deepest_support(codes, labelled, min_support)
    verdicts = _Verdicts(n)
    for d in range(codes.shape[1], 0, -1):
        queries = np.flatnonzero((depth == d) & labelled)
        if queries.size:
            _vote_depth(groups[d - 1], queries, labelled, labels, unit, n_examples, verdicts)
    return _table(verdicts, labels, names, item_ids, titles, codes, depth, sids, min_support, top)


def _table(v: _Verdicts, labels, names, item_ids, titles, codes, depth, sids, min_support, top) -> pa.Table:
    """Flagged products (majority label differs from their own) ranked by confidence, then item id."""
    margin = np.divide(v.w_major - v.w_own, v.w_total, out=np.zeros(v.n), where=v.w_total > 0)
    confidence = margin * v.n_neighbours / (v.n_neighbours + min_support)
    flagged = np.flatnonzero((v.majority >= 0) & (v.majority != labels) & (confidence > 0))
    rows = flagged[np.lexsort((item_ids[flagged], -confidence[flagged]))][:top]
    labelled = np.flatnonzero(labels >= 0)
    example_of_label = np.zeros(max(int(labels.max()) + 1, 1), np.int64)  # any product carrying each label
    example_of_label[labels[labelled]] = labelled
    titles = np.asarray(titles, dtype=object)
    sid_text = np.asarray(sids if sids is not None else format_codes(codes), dtype=object)
    return pa.table(
        {
            "item_id": item_ids[rows],
            "title": titles[rows].tolist(),
            "label": names[rows].tolist(),
            "majority_label": names[example_of_label[v.majority[rows]]].tolist(),
            "confidence": confidence[rows],
            "n_neighbours": v.n_neighbours[rows].astype(np.int32),
            "example_neighbours": [titles[v.examples[int(i)]].tolist() for i in rows],
            "sid": sid_text[rows].tolist(),
            "depth": depth[rows].astype(np.int32),
        },
        schema=AUDIT_SCHEMA,
    )
