"""Taxonomy-graded contrastive regularisation. The catalog tree grades every pair of products (same leaf:
strong positive, sibling leaves: moderate positive, no shared ancestor: negative). At every quantizer
level a graded InfoNCE aligns the similarity of two products' code prefixes with that grade: each prefix
is a soft (differentiable) version of the codewords chosen so far, sharp enough to equal the hard code
away from cell boundaries, so the loss moves the code choices that are actually made. Coarser levels
weigh more. Distance scales are measured once and then fixed, which keeps the gradients bounded."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

SAME_LEAF = 1.0  # strong positive: same leaf category
SIBLING = 0.5  # moderate positive: different leaves under the same parent
NEUTRAL = 0.0  # share some ancestor above the parent, or unknown: left out of the loss
NEGATIVE = -1.0  # no shared ancestor


def encode_paths(category_paths: Sequence[Sequence[str] | None] | None, n: int) -> np.ndarray:
    """(n, depth) int64 node ids, unique across the whole tree: column d names the path prefix of length
    d+1, -1 past the leaf.

    Leading levels shared by every product (a single root such as "Beauty") are dropped, since a shared
    root says nothing; a product with no path is all -1."""
    if category_paths is None:
        return np.full((n, 1), -1, np.int64)
    if len(category_paths) != n:
        raise ValueError(f"{len(category_paths)} category paths for {n} products")
    nodes = _arrow_nodes(category_paths) if isinstance(category_paths, (pa.Array, pa.ChunkedArray)) else None
    if nodes is None:
        paths = [tuple(p) if p is not None else () for p in category_paths]
        depth = max((len(p) for p in paths), default=0)
        nodes = np.full((n, max(depth, 1)), -1, np.int64)
        ids: dict[tuple, int] = {}  # one numbering for all depths: equal ids mean the same node
        for d in range(depth):
            nodes[:, d] = [ids.setdefault(p[: d + 1], len(ids)) if len(p) > d else -1 for p in paths]
    while nodes.shape[1] > 1 and _all_same(nodes[:, 0]) and (nodes[:, 1] >= 0).any():
        nodes = nodes[:, 1:]
    return nodes


def _arrow_nodes(category_paths: pa.Array | pa.ChunkedArray) -> np.ndarray | None:
    """``encode_paths``' node ids of an Arrow list<string> column without a Python object per product (a large
    catalog's paths as Python lists cost more than its codes): the same numbering, ids in order of first
    appearance depth by depth, a node being its parent's id and its own name. None where a path holds an empty
    name (the Python loop numbers those)."""
    paths = category_paths.combine_chunks() if isinstance(category_paths, pa.ChunkedArray) else category_paths
    lengths = pc.fill_null(pc.list_value_length(paths), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    flat = pc.list_flatten(paths)
    if flat.null_count:
        return None
    names = pc.dictionary_encode(flat).indices.to_numpy(zero_copy_only=False).astype(np.int64)
    starts = np.cumsum(lengths) - lengths
    depth = int(lengths.max(initial=0))
    nodes = np.full((len(paths), max(depth, 1)), -1, np.int64)
    parent, width, next_id = np.zeros(len(paths), np.int64), int(names.max(initial=0)) + 1, 0
    for d in range(depth):
        has = np.flatnonzero(lengths > d)
        key = parent[has] * width + names[starts[has] + d]  # equal keys: equal prefixes of length d + 1
        _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
        rank = np.empty(first.size, np.int64)
        rank[np.argsort(first, kind="stable")] = np.arange(first.size)
        nodes[has, d] = next_id + rank[inverse.reshape(-1)]
        parent = np.full(len(paths), -1, np.int64)
        parent[has] = nodes[has, d]
        next_id += first.size
    return nodes


def _all_same(column: np.ndarray) -> bool:
    return bool(column.size) and bool((column == column[0]).all()) and column[0] >= 0


def leaf_ids(nodes: np.ndarray) -> np.ndarray:
    """Id of each product's deepest node (its leaf), -1 where it has no path."""
    depth = (nodes >= 0).sum(1)
    return np.where(depth > 0, nodes[np.arange(len(nodes)), np.maximum(depth - 1, 0)], -1)


def parent_ids(nodes: np.ndarray) -> np.ndarray:
    """Id of each product's leaf's parent node, -1 where the leaf hangs from the root or there is no path."""
    depth = (nodes >= 0).sum(1)
    return np.where(depth > 1, nodes[np.arange(len(nodes)), np.maximum(depth - 2, 0)], -1)


def pair_labels(nodes: np.ndarray) -> np.ndarray:
    """Graded label matrix (B, B) for a batch's node ids: SAME_LEAF, SIBLING, NEGATIVE or NEUTRAL."""
    leaf, parent, top = leaf_ids(nodes), parent_ids(nodes), nodes[:, 0]
    known = (leaf >= 0)[:, None] & (leaf >= 0)[None, :]
    labels = np.full((len(nodes), len(nodes)), NEUTRAL, np.float32)
    labels[known & (top[:, None] != top[None, :])] = NEGATIVE
    labels[(parent[:, None] == parent[None, :]) & (parent >= 0)[:, None]] = SIBLING
    labels[known & (leaf[:, None] == leaf[None, :])] = SAME_LEAF
    np.fill_diagonal(labels, NEUTRAL)
    return labels


def level_weights(levels: int, decay: float = 0.5) -> list[float]:
    """Weights per level, coarsest first: 1 for the first level, then decaying geometrically."""
    return [float(decay**level) for level in range(levels)]


@dataclass
class ContrastiveScales:
    """Distance scales per level, measured once (when the codebooks are set) and then held fixed:
    scale-free losses that renormalise by each batch's own distances blow their gradients up as the
    latent shrinks, and training then collapses."""

    assign: list[float]  # soft-assignment temperature: a share of the mean squared distance to the nearest codeword
    pair: list[float]  # mean squared distance between two products' code prefixes


@torch.no_grad()
def calibrate(
    residuals: list[torch.Tensor], codebooks: Sequence[torch.Tensor], sharpness: float = 0.1
) -> ContrastiveScales:
    """Measure the scales on a sample's residuals (as the quantizer returns them) and codebooks. The
    soft-assignment temperature is ``sharpness`` x the mean squared distance to the nearest codeword:
    sharp enough that a product's soft code is its hard code unless it sits near a boundary, so the loss
    acts on the code choices that are actually made."""
    assign = [
        float((sharpness * _sq_dist(r, c).min(1).values.mean()).clamp_min(1e-8)) for r, c in zip(residuals, codebooks)
    ]
    prefixes = soft_prefixes(residuals, codebooks, assign)
    pair = [float((2 * p.var(0).sum()).clamp_min(1e-8)) for p in prefixes]  # E||a - b||^2 = 2 tr(cov)
    return ContrastiveScales(assign, pair)


def _sq_dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ((a * a).sum(1, keepdim=True) - 2 * a @ b.T + (b * b).sum(1)).clamp_min(0.0)


def soft_prefixes(
    residuals: list[torch.Tensor], codebooks: Sequence[torch.Tensor], assign_scales: Sequence[float]
) -> list[torch.Tensor]:
    """Differentiable code prefixes: at each level the softmax-weighted codeword (temperature
    ``assign_scales[l]``), summed over the levels so far."""
    prefixes, total = [], None
    for residual, codebook, scale in zip(residuals, codebooks, assign_scales):
        soft = torch.softmax(-_sq_dist(residual, codebook) / scale, dim=1) @ codebook
        total = soft if total is None else total + soft
        prefixes.append(total)
    return prefixes


@dataclass
class PairTargets:
    """A batch's labels in the form the loss uses, built once and shared by every level."""

    bias: torch.Tensor  # (B, B) 0 where the pair takes part, a large negative number where it is neutral
    weights: torch.Tensor  # (B, B) positive grade / the anchor's total grade; zero rows for skipped anchors
    n_anchors: int  # anchors with at least one positive and one negative


def pair_targets(labels: torch.Tensor) -> PairTargets:
    """Turn graded labels into the additive mask and per-anchor positive weights of ``graded_infonce``."""
    pos = labels.clamp_min(0.0)
    total = pos.sum(1, keepdim=True)
    anchor = (total > 0) & (labels == NEGATIVE).any(1, keepdim=True)
    weights = torch.where(anchor, pos / total.clamp_min(1e-8), torch.zeros_like(pos))
    bias = torch.where(labels != NEUTRAL, 0.0, -1e9)
    return PairTargets(bias, weights, int(anchor.sum()))


def graded_infonce(x: torch.Tensor, targets: PairTargets, temperature: float, scale: float) -> torch.Tensor:
    """InfoNCE with graded positives: each anchor's loss is the label-weighted mean of -log p(positive),
    where p is a softmax of -distance / (scale * temperature) over all of its positives and negatives
    (neutral pairs left out); anchors without both are skipped."""
    if targets.n_anchors == 0:
        return x.new_zeros(())
    logits = targets.bias - _sq_dist(x, x) / (scale * temperature)
    log_p = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    return -(targets.weights * log_p).sum() / targets.n_anchors


def taxonomy_contrastive_loss(
    residuals: list[torch.Tensor],
    codebooks: Sequence[torch.Tensor],
    labels: torch.Tensor,
    weights: Sequence[float],
    scales: ContrastiveScales,
    temperature: float = 0.1,
) -> torch.Tensor:
    """Sum over levels of weight * graded InfoNCE on the soft code prefixes of a batch with graded
    ``labels`` (B, B)."""
    targets = pair_targets(labels)
    total = residuals[0].new_zeros(())
    prefixes = soft_prefixes(residuals, codebooks, scales.assign)
    for w, prefix, scale in zip(weights, prefixes, scales.pair):
        total = total + w * graded_infonce(prefix, targets, temperature, scale)
    return total


def label_tensor(nodes: np.ndarray, batch: np.ndarray) -> torch.Tensor:
    """Graded labels for the products ``batch`` (indices into ``nodes``) as a float tensor."""
    return torch.from_numpy(pair_labels(nodes[batch]))
