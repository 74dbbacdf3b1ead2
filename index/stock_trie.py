"""One catalog-wide prefix trie plus, per retailer, a bit per trie node ("something under this node is in
stock"), walked by constrained decoding as if it were the pair forest of ``index.forest``: same slots
(0 the whole catalog, retailer i in ascending order i + 1), same start depth, same allowed tokens at every
step, so the same beams come out. What it saves: the pair forest holds one trie row per (retailer,
product) pair (about 200M rows at 5M products and 100 retailers, tens of GB as int64 tensors); this holds
the catalog trie once (one row per product) and a bit per (retailer, node), about 100 x 11M bits = 140 MB
at 5M products.

A node of the view at depth ``d >= 1`` is ``slot * n_nodes[d - 1] + node`` of the catalog trie at depth
``d - 1`` (depth 1: the slot itself; -1: dead), so ``constrained_beam_search`` needs no change: it calls
``disallowed_mask``, ``step`` and ``path`` on this object as on a ``PrefixTrie``."""
from __future__ import annotations

import numpy as np
import torch

from index.stock import StockBits
from index.trie import DEFAULT_PAD_BUDGET, PrefixTrie, copy_on_device
from semid.common import DataError

START_DEPTH = 1  # queries start at their slot's node, as in the pair forest


class StockTrie:
    """The catalog trie and per-slot node bits, with the decoding interface of a trie forest."""

    def __init__(self, catalog: PrefixTrie, node_bits: list[torch.Tensor], slot_alive: torch.Tensor,
                 leaf_of_pos: np.ndarray, by_leaf: np.ndarray, leaf_first: np.ndarray) -> None:
        self.catalog = catalog
        self.node_bits = node_bits  # per catalog depth 1..D: uint8 [n_slots, ceil(n_nodes / 8)], little bit order
        self.slot_alive = slot_alive  # bool [n_slots]: the slot holds at least one product
        self.leaf_of_pos = leaf_of_pos  # catalog trie leaf of each catalog position
        self.by_leaf = by_leaf  # catalog positions in leaf order
        self.leaf_first = leaf_first  # [n_leaves + 1]: leaf j holds by_leaf[leaf_first[j]:leaf_first[j + 1]]
        self.n_slots = int(slot_alive.shape[0])
        self.depth = catalog.depth + START_DEPTH
        self.depth_vocab = [max(self.n_slots, 1)] + list(catalog.depth_vocab)
        self.vocab_size = max(self.depth_vocab)
        self.n_nodes = [1] + [self.n_slots * n for n in catalog.n_nodes]
        self.device = catalog.device
        self._copies: dict[torch.device, StockTrie] = {}

    @classmethod
    def build(cls, rows: np.ndarray, stock: StockBits | None, retailers: np.ndarray,
              vocab_size: int | None = None, pad_budget: int = DEFAULT_PAD_BUDGET) -> "StockTrie":
        """From the catalog's token rows (catalog positions) and who stocks what: slot 0 holds the whole
        catalog, slot i + 1 what ``retailers[i]`` stocks (nothing when ``stock`` has no row for it).
        ``pad_budget``: as ``PrefixTrie``'s (depths whose padded child table would be larger walk CSR)."""
        rows = np.asarray(rows, np.int64)
        catalog = PrefixTrie(rows, vocab_size=vocab_size, pad_budget=pad_budget)
        n, n_slots = rows.shape[0], 1 + int(np.asarray(retailers).size)
        leaf_of_pos = catalog.walk(rows).numpy() if n else np.zeros(0, np.int64)
        by_leaf = np.argsort(leaf_of_pos, kind="stable")  # positions in leaf order
        first = np.searchsorted(leaf_of_pos[by_leaf], np.arange(catalog.n_leaves))  # first position of each leaf
        bits = [np.zeros((n_slots, -(-catalog.n_nodes[d] // 8)), np.uint8) for d in range(1, catalog.depth + 1)]
        alive = np.zeros(n_slots, bool)
        for slot in range(n_slots):
            held = np.ones(n, bool) if slot == 0 else (
                stock.mask(int(retailers[slot - 1])) if stock is not None else np.zeros(n, bool))
            if not held.any():
                continue
            alive[slot] = True
            in_order = held[by_leaf]
            for d in range(1, catalog.depth + 1):
                node_first = first[catalog.leaf_start[d].numpy()[:-1]]  # first position of each node, leaf order
                any_held = np.logical_or.reduceat(in_order, node_first) if node_first.size else in_order[:0]
                bits[d - 1][slot] = np.packbits(any_held, bitorder="little")
        return cls(catalog, [torch.from_numpy(b) for b in bits], torch.from_numpy(alive), leaf_of_pos, by_leaf,
                   np.append(first, n).astype(np.int64))

    # ----- sizes and device -----------------------------------------------------------------------------

    @property
    def nbytes(self) -> int:
        """Bytes of every array this holds (the catalog trie, the node bits, the leaf of each product)."""
        trie = self.catalog
        tensors = [trie.leaf_rows, *trie.child_start, *trie.edge_token, *trie.edge_key, *trie.leaf_start,
                   *(t for t in trie.child_table if t is not None), *self.node_bits]
        arrays = self.leaf_of_pos.nbytes + self.by_leaf.nbytes + self.leaf_first.nbytes
        return int(sum(t.numel() * t.element_size() for t in tensors) + arrays)

    def __repr__(self) -> str:
        return f"StockTrie(slots={self.n_slots}, catalog={self.catalog!r})"

    def to(self, device: str | torch.device) -> "StockTrie":
        """This view with every tensor on ``device`` (self when already there; copied once per device)."""
        return copy_on_device(self, device, self._moved)

    def _moved(self, out: "StockTrie", device: torch.device) -> None:
        out.catalog = self.catalog.to(device)
        out.node_bits = [b.to(device) for b in self.node_bits]
        out.slot_alive = self.slot_alive.to(device)

    # ----- the decoding interface (that of ``PrefixTrie``) ---------------------------------------------

    def root(self, n: int) -> torch.Tensor:
        return torch.zeros(n, dtype=torch.long, device=self.device)

    def start(self, slots: np.ndarray) -> torch.Tensor:
        """Depth-1 node of each slot: the slot itself, -1 where it holds nothing."""
        slots = torch.as_tensor(np.asarray(slots), dtype=torch.long)
        return torch.where(self.slot_alive.cpu()[slots], slots, torch.full_like(slots, -1))

    def start_nodes(self, start: torch.Tensor, n: int, depth: int) -> torch.Tensor:
        """Per-query start nodes at ``depth``, checked as ``PrefixTrie.start_nodes`` checks them."""
        self._check_depth(depth, self.depth)
        start = torch.as_tensor(start, dtype=torch.long).to(self.device).reshape(-1)
        if start.shape[0] != n:
            raise DataError(f"prefix trie: {start.shape[0]} start nodes, need one node per query or row ({n})")
        if start.numel() and int(start.max()) >= self.n_nodes[depth]:
            raise DataError(f"prefix trie: start node {int(start.max())} does not exist at depth {depth}")
        return start

    def disallowed_mask(self, depth: int, nodes: torch.Tensor, width: int | None = None) -> torch.Tensor:
        """Bool [N, width]: True where a token may NOT follow ``nodes`` at ``depth``: a catalog edge whose
        child holds nothing the node's slot stocks is disallowed too."""
        self._check_depth(depth, self.depth - 1)
        vocab = self.depth_vocab[depth]
        width = vocab if width is None else int(width)
        if width < vocab:
            raise DataError(f"prefix trie: mask width {width} is smaller than the trie's vocab {vocab}")
        nodes = nodes.reshape(-1)
        mask = torch.ones(nodes.shape[0], width + 1, dtype=torch.bool, device=nodes.device)
        if depth == 0:
            alive = self.slot_alive.to(nodes.device)
            cols = torch.where(alive, torch.arange(self.n_slots, device=nodes.device), width)
            mask[:, :] = True
            mask[:, cols] = False
            mask[nodes < 0] = True
            return mask[:, :width]
        slot, node = self._split(depth, nodes)
        cat_depth = depth - START_DEPTH
        start = self.catalog.child_start[cat_depth]
        table = self.catalog.child_table[cat_depth]
        live = nodes >= 0
        safe = node.clamp(min=0)
        if table is not None and table.shape[0] == 0:
            return mask[:, :width]
        if table is not None:
            cols = table[safe]  # [N, C] child tokens, -1 padding
            child = start[safe][:, None] + torch.arange(cols.shape[1], device=nodes.device)
            ok = live[:, None] & (cols >= 0)
            ok &= self._held(cat_depth + 1, slot[:, None].expand_as(child), torch.where(ok, child, 0))
            mask.scatter_(1, torch.where(ok, cols, width), False)
        else:
            counts = torch.where(live, start[safe + 1] - start[safe], 0)
            rows = torch.repeat_interleave(torch.arange(nodes.shape[0], device=nodes.device), counts)
            first = torch.repeat_interleave(start[safe], counts)
            offset = torch.arange(rows.shape[0], device=nodes.device) - torch.repeat_interleave(
                torch.cumsum(counts, 0) - counts, counts)
            child = first + offset
            ok = self._held(cat_depth + 1, slot[rows], child)
            mask[rows[ok], self.catalog.edge_token[cat_depth][child[ok]]] = False
        return mask[:, :width]

    def allowed_mask(self, depth: int, nodes: torch.Tensor, width: int | None = None) -> torch.Tensor:
        return ~self.disallowed_mask(depth, nodes, width)

    def step(self, depth: int, nodes: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Child of each node along each token; -1 where the edge does not exist or leads to nothing the
        node's slot stocks."""
        self._check_depth(depth, self.depth - 1)
        nodes, tokens = nodes.reshape(-1), tokens.reshape(-1).to(nodes.device)
        if depth == 0:
            ok = (nodes == 0) & (tokens >= 0) & (tokens < self.n_slots)
            ok &= self.slot_alive.to(nodes.device)[tokens.clamp(0, max(self.n_slots - 1, 0))]
            return torch.where(ok, tokens, torch.full_like(tokens, -1))
        slot, node = self._split(depth, nodes)
        child = self.catalog.step(depth - START_DEPTH, torch.where(nodes >= 0, node, -1), tokens)
        ok = child >= 0
        ok &= self._held(depth - START_DEPTH + 1, slot, child.clamp(min=0))
        return torch.where(ok, slot * self.catalog.n_nodes[depth - START_DEPTH + 1] + child, torch.full_like(child, -1))

    def walk(self, rows, start: torch.Tensor | None = None, start_depth: int = 0) -> torch.Tensor:
        return self.path(rows, start, start_depth)[:, -1]

    def path(self, rows, start: torch.Tensor | None = None, start_depth: int = 0) -> torch.Tensor:
        """Nodes along each row from the root or from per-row ``start`` nodes at ``start_depth``."""
        self._check_depth(start_depth, self.depth)
        rows = torch.as_tensor(np.asarray(rows.cpu() if isinstance(rows, torch.Tensor) else rows),
                               dtype=torch.long, device=self.device)
        if rows.ndim != 2 or rows.shape[1] > self.depth - start_depth:
            raise DataError(f"prefix trie: rows of shape {tuple(rows.shape)} do not fit below depth {start_depth}")
        nodes = self.root(rows.shape[0]) if start is None else self.start_nodes(start, rows.shape[0], start_depth)
        out = [nodes]
        for d in range(rows.shape[1]):
            nodes = self.step(start_depth + d, nodes, rows[:, d])
            out.append(nodes)
        return torch.stack(out, dim=1)

    # ----- products ---------------------------------------------------------------------------------------

    def leaves(self, rows: np.ndarray, slots: np.ndarray) -> np.ndarray:
        """Catalog trie leaf of each full token row under its slot (-1 where the slot holds none of it)."""
        path = self.path(rows, torch.from_numpy(self.start(slots).numpy()), START_DEPTH)
        leaf = path[:, -1].numpy()
        n = max(self.catalog.n_leaves, 1)
        return np.where(leaf >= 0, leaf % n, -1)

    def leaf_positions(self, leaf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Half-open ranges into ``by_leaf`` of the catalog positions under each leaf (empty for -1)."""
        ok = leaf >= 0
        safe = np.where(ok, leaf, 0)
        return np.where(ok, self.leaf_first[safe], 0), np.where(ok, self.leaf_first[safe + 1], 0)

    # ----- internals ----------------------------------------------------------------------------------------

    def _split(self, depth: int, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(slot, catalog node) of view nodes at ``depth >= 1`` (both 0 for dead nodes; callers mask them)."""
        per = max(self.catalog.n_nodes[depth - START_DEPTH], 1)
        safe = nodes.clamp(min=0)
        return safe // per, torch.where(nodes >= 0, safe % per, -1)

    def _held(self, cat_depth: int, slot: torch.Tensor, node: torch.Tensor) -> torch.Tensor:
        """Whether anything under catalog ``node`` (at ``cat_depth >= 1``) is stocked by ``slot``."""
        bits = self.node_bits[cat_depth - 1]
        byte = bits[slot, node >> 3].long()
        return ((byte >> (node & 7)) & 1).bool()

    def _check_depth(self, depth: int, most: int) -> None:
        if not 0 <= depth <= most:
            raise DataError(f"prefix trie: depth {depth} out of range 0..{most}")
