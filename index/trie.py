"""A prefix trie over items' token rows, held as tensors so that constrained decoding never loops in Python
over beams or items. Nodes at depth ``d`` are the distinct length-``d`` prefixes in lexicographic order;
the children of a node are a contiguous, token-sorted range of the next depth (CSR), and the leaves (depth
``D``) are the distinct rows themselves, in sorted order, so a node's subtree is also a contiguous range of
leaves."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from semid.common import DataError

DEFAULT_PAD_BUDGET = 1 << 24  # most entries of a padded per-node child-token table; larger -> CSR path


class PrefixTrie:
    """Distinct token rows of shape (n, D) as a tensor trie: allowed-next-token masks and transitions for
    whole batches of nodes, subtree leaf ranges, and exact-row lookup."""

    def __init__(
        self,
        rows: np.ndarray | torch.Tensor,
        vocab_size: int | Sequence[int] | None = None,
        pad_budget: int = DEFAULT_PAD_BUDGET,
    ) -> None:
        """``vocab_size``: the bound on token ids, for every column or one per column (a forest's first
        column holds group ids, not tokens); None = the largest id + 1."""
        leaves = _sorted_unique_rows(_as_rows(rows))
        self.depth = int(leaves.shape[1])
        self.depth_vocab = _depth_vocab(leaves, vocab_size)  # token-id bound of each column
        self.vocab_size = max(self.depth_vocab)
        self._base = max(self.vocab_size, 1)  # transition keys are parent * base + token
        tables = _build_tables(leaves, self._base, pad_budget)
        self.device = torch.device("cpu")
        self.leaf_rows = torch.from_numpy(leaves)
        self.n_nodes: list[int] = tables["n_nodes"]
        self.child_start = [torch.from_numpy(a) for a in tables["child_start"]]  # [n_d + 1] per depth < D
        self.edge_token = [torch.from_numpy(a) for a in tables["edge_token"]]  # [n_{d+1}] per depth < D
        self.edge_key = [torch.from_numpy(a) for a in tables["edge_key"]]  # sorted parent*base+token
        self.leaf_start = [torch.from_numpy(a) for a in tables["leaf_start"]]  # [n_d + 1] per depth <= D
        self.child_table = [None if a is None else torch.from_numpy(a) for a in tables["child_table"]]
        self._copies: dict[torch.device, PrefixTrie] = {}  # this trie on other devices, made once each

    @classmethod
    def forest(
        cls,
        groups: np.ndarray,
        rows: np.ndarray | torch.Tensor,
        n_groups: int,
        vocab_size: int | None = None,
        pad_budget: int = DEFAULT_PAD_BUDGET,
    ) -> "PrefixTrie":
        """One trie over many groups' rows: row i is spelled ``[groups[i], *rows[i]]``; group ids lie in
        [0, n_groups). Decode a group from ``group_nodes`` at depth 1."""
        groups = _as_rows(np.asarray(groups).reshape(-1, 1))
        rows = _as_rows(rows)
        if groups.shape[0] != rows.shape[0]:
            raise DataError(f"prefix trie: {groups.shape[0]} group ids for {rows.shape[0]} rows")
        if groups.size and not 0 <= int(groups.min()) <= int(groups.max()) < n_groups:
            raise DataError(f"prefix trie: group ids must lie in [0, {n_groups})")
        token_vocab = vocab_size if vocab_size is not None else (int(rows.max()) + 1 if rows.size else 0)
        return cls(np.hstack([groups, rows]), [max(int(n_groups), 1)] + [int(token_vocab)] * rows.shape[1], pad_budget)

    def group_nodes(self, groups: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Depth-1 node of each group id of a forest (-1 where the group holds no rows)."""
        groups = torch.as_tensor(np.asarray(groups.cpu() if isinstance(groups, torch.Tensor) else groups),
                                 dtype=torch.long, device=self.device).reshape(-1)
        return self.step(0, self.root(groups.shape[0]), groups)

    # ----- sizes ----------------------------------------------------------------------------------------

    @property
    def n_leaves(self) -> int:
        """Number of distinct rows (items' token sequences) in the trie."""
        return int(self.leaf_rows.shape[0])

    def __len__(self) -> int:
        return self.n_leaves

    def __repr__(self) -> str:
        return f"PrefixTrie(depth={self.depth}, leaves={self.n_leaves}, nodes={self.n_nodes}, device={self.device})"

    # ----- device ---------------------------------------------------------------------------------------

    def to(self, device: str | torch.device) -> "PrefixTrie":
        """This trie with every tensor on ``device`` (self when already there; copied once per device)."""
        return copy_on_device(self, device, self._moved)

    def _moved(self, out: "PrefixTrie", device: torch.device) -> None:
        out.leaf_rows = self.leaf_rows.to(device)
        for name in ("child_start", "edge_token", "edge_key", "leaf_start", "child_table"):
            setattr(out, name, [None if t is None else t.to(device) for t in getattr(self, name)])

    # ----- batched node operations ---------------------------------------------------------------------

    def root(self, n: int) -> torch.Tensor:
        """Root node ids for ``n`` beams."""
        return torch.zeros(n, dtype=torch.long, device=self.device)

    def disallowed_mask(self, depth: int, nodes: torch.Tensor, width: int | None = None) -> torch.Tensor:
        """Bool [N, width]: True where a token may NOT follow node ``nodes[i]`` at ``depth`` (node -1 = dead
        beam, nothing allowed). Built with a single scatter from the per-node child-token table."""
        self._check_depth(depth, self.depth - 1)
        vocab = self.depth_vocab[depth]
        width = vocab if width is None else int(width)
        if width < vocab:
            raise DataError(f"prefix trie: mask width {width} is smaller than the trie's vocab {vocab}")
        nodes = nodes.reshape(-1)
        rows, cols = self._edges_of(depth, nodes, width)
        mask = torch.ones(nodes.shape[0], width + 1, dtype=torch.bool, device=nodes.device)
        if rows is None:
            mask.scatter_(1, cols, False)
        else:
            mask[rows, cols] = False
        return mask[:, :width]

    def allowed_mask(self, depth: int, nodes: torch.Tensor, width: int | None = None) -> torch.Tensor:
        """Bool [N, width]: True where a token may follow node ``nodes[i]`` at ``depth``."""
        return ~self.disallowed_mask(depth, nodes, width)

    def step(self, depth: int, nodes: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Child of each node (at ``depth``) along each token; -1 where that edge does not exist."""
        self._check_depth(depth, self.depth - 1)
        nodes, tokens = nodes.reshape(-1), tokens.reshape(-1).to(nodes.device)
        keys = self.edge_key[depth]
        if keys.numel() == 0:
            return torch.full_like(nodes, -1)
        valid = (nodes >= 0) & (tokens >= 0) & (tokens < self._base)
        query = nodes.clamp(min=0) * self._base + tokens.clamp(0, self._base - 1)
        pos = torch.searchsorted(keys, query).clamp(max=keys.numel() - 1)
        found = valid & (keys[pos] == query)
        return torch.where(found, pos, torch.full_like(pos, -1))

    def walk(
        self, rows: np.ndarray | torch.Tensor, start: torch.Tensor | None = None, start_depth: int = 0
    ) -> torch.Tensor:
        """Node reached by each row (a prefix of length <= D - start_depth) from the root, or from the
        per-row ``start`` nodes at ``start_depth``: a leaf id for full rows; -1 when absent."""
        path = self.path(rows, start, start_depth)
        return path[:, -1]

    def path(
        self, rows: np.ndarray | torch.Tensor, start: torch.Tensor | None = None, start_depth: int = 0
    ) -> torch.Tensor:
        """Nodes along each row: [n, len+1], column d the node after the row's first d tokens (-1 once
        off), starting from the root or, per row, from ``start`` (nodes at ``start_depth``)."""
        self._check_depth(start_depth, self.depth)
        rows = torch.as_tensor(_as_rows(rows, max_len=self.depth - start_depth), device=self.device)
        nodes = self.root(rows.shape[0]) if start is None else self.start_nodes(start, rows.shape[0], start_depth)
        out = [nodes]
        for d in range(rows.shape[1]):
            nodes = self.step(start_depth + d, nodes, rows[:, d])
            out.append(nodes)
        return torch.stack(out, dim=1)

    def contains(self, rows: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Bool per full row: is it one of the trie's items?"""
        rows = _as_rows(rows)
        if rows.shape[1] != self.depth:
            raise DataError(f"prefix trie: rows have {rows.shape[1]} tokens, the trie holds {self.depth}")
        return self.walk(rows) >= 0

    def leaf_range(self, depth: int, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Half-open leaf-id ranges [lo, hi) of the subtrees under ``nodes`` at ``depth`` (empty for -1)."""
        self._check_depth(depth, self.depth)
        starts = self.leaf_start[depth]
        safe = nodes.clamp(min=0)
        lo, hi = starts[safe], starts[safe + 1]
        dead = nodes < 0
        return torch.where(dead, 0, lo), torch.where(dead, 0, hi)

    # ----- internals ------------------------------------------------------------------------------------

    def _edges_of(
        self, depth: int, nodes: torch.Tensor, sink: int
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(rows, token columns) of every allowed edge; rows None means a padded [N, C] column table whose
        padding points at column ``sink``."""
        alive = nodes >= 0
        safe = nodes.clamp(min=0)
        table = self.child_table[depth]
        if table is not None and table.shape[0] == 0:  # no node at this depth (an empty trie): nothing allowed
            return None, torch.full((nodes.shape[0], 1), sink, dtype=torch.long, device=nodes.device)
        if table is not None:
            cols = table[safe]
            return None, torch.where(alive[:, None] & (cols >= 0), cols, sink)
        start = self.child_start[depth]
        counts = torch.where(alive, start[safe + 1] - start[safe], 0)
        rows = torch.repeat_interleave(torch.arange(nodes.shape[0], device=nodes.device), counts)
        first = torch.repeat_interleave(start[safe], counts)
        offset = torch.arange(rows.shape[0], device=nodes.device) - torch.repeat_interleave(
            torch.cumsum(counts, 0) - counts, counts
        )
        return rows, self.edge_token[depth][first + offset]

    def start_nodes(self, start: torch.Tensor, n: int, depth: int) -> torch.Tensor:
        """Per-query (or per-row) start nodes at ``depth`` as a long tensor on this trie's device, checked:
        one per query, each a node of that depth or -1."""
        self._check_depth(depth, self.depth)
        start = torch.as_tensor(start, dtype=torch.long).to(self.device).reshape(-1)
        if start.shape[0] != n:
            raise DataError(f"prefix trie: {start.shape[0]} start nodes, need one node per query or row ({n})")
        if start.numel() and int(start.max()) >= self.n_nodes[depth]:
            raise DataError(f"prefix trie: start node {int(start.max())} does not exist at depth {depth}")
        return start

    def _check_depth(self, depth: int, most: int) -> None:
        if not 0 <= depth <= most:
            raise DataError(f"prefix trie: depth {depth} out of range 0..{most}")


def _as_rows(rows: np.ndarray | torch.Tensor, max_len: int | None = None) -> np.ndarray:
    """Token rows as a 2-D int64 numpy array, checked."""
    if isinstance(rows, torch.Tensor):
        rows = rows.detach().cpu().numpy()
    arr = np.asarray(rows)
    if arr.ndim != 2:
        raise DataError(f"prefix trie: token rows must be 2-D (n, tokens), got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"prefix trie: token rows must be integers, got {arr.dtype}")
    if max_len is not None and arr.shape[1] > max_len:
        raise DataError(f"prefix trie: rows have {arr.shape[1]} tokens, the trie is only {max_len} deep")
    return arr.astype(np.int64, copy=False)


def _depth_vocab(leaves: np.ndarray, vocab_size: int | Sequence[int] | None) -> list[int]:
    """The token-id bound of each column, checked against the rows."""
    depth = leaves.shape[1]
    tops = leaves.max(axis=0) + 1 if leaves.size else np.zeros(depth, np.int64)
    if vocab_size is None:
        return [int(tops.max()) if depth else 0] * depth
    bounds = [int(vocab_size)] * depth if np.isscalar(vocab_size) else [int(v) for v in vocab_size]
    if len(bounds) != depth:
        raise DataError(f"prefix trie: {len(bounds)} vocab sizes for rows of {depth} tokens")
    for d, (top, bound) in enumerate(zip(tops.tolist(), bounds)):
        if top > bound:
            raise DataError(f"prefix trie: token id {top - 1} (column {d}) does not fit vocab_size {bound}")
    return bounds


def _sorted_unique_rows(rows: np.ndarray) -> np.ndarray:
    """Distinct rows in lexicographic order; negative tokens are rejected."""
    if rows.size and rows.min() < 0:
        raise DataError("prefix trie: token ids must be >= 0")
    if rows.shape[1] == 0:
        raise DataError("prefix trie: rows must hold at least one token")
    if rows.shape[0] == 0:
        return rows.copy()
    rows = rows[np.lexsort(rows.T[::-1])]
    keep = np.ones(rows.shape[0], dtype=bool)
    keep[1:] = (rows[1:] != rows[:-1]).any(axis=1)
    return np.ascontiguousarray(rows[keep])


def _build_tables(leaves: np.ndarray, base: int, pad_budget: int) -> dict:
    """Per-depth CSR tables from sorted distinct rows (see PrefixTrie for their meaning)."""
    n, depth = leaves.shape
    changed = np.zeros((n, depth), dtype=bool)  # changed[i, j]: row i differs from row i-1 at column j
    if n:
        changed[0, :] = True
    if n > 1:
        changed[1:] = leaves[1:] != leaves[:-1]
    new_prefix = np.logical_or.accumulate(changed, axis=1)  # new_prefix[i, d-1]: row i opens a depth-d node
    node_of_row = np.zeros(n, dtype=np.int64)  # depth-0 node of every row: the root
    out: dict = {"n_nodes": [1], "child_start": [], "edge_token": [], "edge_key": [], "child_table": []}
    out["leaf_start"] = [np.array([0, n], dtype=np.int64)]
    for d in range(1, depth + 1):
        firsts = np.flatnonzero(new_prefix[:, d - 1]) if n else np.zeros(0, dtype=np.int64)
        parent = node_of_row[firsts]
        token = leaves[firsts, d - 1]
        n_parent = out["n_nodes"][-1]
        start = np.searchsorted(parent, np.arange(n_parent + 1)).astype(np.int64)
        out["child_start"].append(start)
        out["edge_token"].append(token.astype(np.int64))
        out["edge_key"].append(parent * base + token)
        out["child_table"].append(_child_table(parent, token, start, pad_budget))
        out["leaf_start"].append(np.append(firsts, n).astype(np.int64))
        out["n_nodes"].append(int(firsts.size))
        node_of_row = np.cumsum(new_prefix[:, d - 1]) - 1
    return out


def _child_table(parent: np.ndarray, token: np.ndarray, start: np.ndarray, pad_budget: int) -> np.ndarray | None:
    """[n_parents, max_children] child tokens padded with -1; None when it would exceed ``pad_budget``."""
    counts = np.diff(start)
    width = int(counts.max()) if counts.size else 0
    if counts.size * width > pad_budget:
        return None
    table = np.full((counts.size, width), -1, dtype=np.int64)
    table[parent, np.arange(parent.size) - start[parent]] = token
    return table


def copy_on_device(obj, device: str | torch.device, move) -> object:
    """``obj`` on ``device``: itself when already there, else a shallow copy (made once per device and kept in
    ``obj._copies``) whose tensors ``move(copy, device)`` replaces. A bare ``cuda`` means the current GPU."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if device == obj.device:
        return obj
    if device not in obj._copies:
        out = object.__new__(type(obj))
        out.__dict__.update(obj.__dict__)
        out.device, out._copies = device, {}
        move(out, device)
        obj._copies[device] = out
    return obj._copies[device]
