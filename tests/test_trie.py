"""The tensor prefix trie: masks and transitions agree with a plain Python trie, for every node, on both
the padded-table and the CSR paths; lookups, subtree ranges, dead beams and bad input."""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
import torch

from index.trie import PrefixTrie
from semid.catalog import DataError


def _rows(n: int = 300, seed: int = 0) -> np.ndarray:
    """Hierarchical-looking token rows: 3 code levels in their own id ranges, then a dedup token."""
    rng = np.random.default_rng(seed)
    rows = np.stack(
        [rng.integers(5, 9, n), rng.integers(9, 17, n), rng.integers(17, 29, n), np.full(n, 29)], axis=1
    )
    return rows


def _reference(rows: np.ndarray) -> dict[tuple, set]:
    """prefix -> set of next tokens, the obvious way."""
    children: dict[tuple, set] = defaultdict(set)
    for row in rows.tolist():
        for d in range(len(row)):
            children[tuple(row[:d])].add(row[d])
    return children


@pytest.mark.parametrize("pad_budget", [1 << 24, 0])
def test_masks_and_steps_match_a_python_trie(pad_budget):
    rows = _rows()
    trie = PrefixTrie(rows, vocab_size=32, pad_budget=pad_budget)
    ref = _reference(rows)
    assert (trie.child_table[1] is None) == (pad_budget == 0)
    for d in range(trie.depth):
        prefixes = sorted(p for p in ref if len(p) == d)
        nodes = trie.walk(np.array(prefixes, dtype=np.int64).reshape(len(prefixes), d))
        assert (nodes >= 0).all() and nodes.unique().numel() == len(prefixes) == trie.n_nodes[d]
        mask = trie.allowed_mask(d, nodes)
        expected = torch.zeros_like(mask)
        for i, p in enumerate(prefixes):
            expected[i, sorted(ref[p])] = True
        assert torch.equal(mask, expected)
        # every allowed token leads to a node whose prefix is the parent's plus that token
        beam, token = mask.nonzero(as_tuple=True)
        child = trie.step(d, nodes[beam], token)
        assert (child >= 0).all()
        disallowed = (~mask).nonzero(as_tuple=True)
        assert (trie.step(d, nodes[disallowed[0]], disallowed[1]) == -1).all()


def test_walk_finds_every_row_and_only_those():
    rows = _rows()
    trie = PrefixTrie(rows, vocab_size=32)
    leaves = trie.walk(rows)
    assert (leaves >= 0).all()
    assert np.array_equal(trie.leaf_rows[leaves].numpy(), rows)
    assert trie.n_leaves == len({tuple(r) for r in rows.tolist()})
    rng = np.random.default_rng(1)
    other = np.stack([rng.integers(5, 9, 500), rng.integers(9, 17, 500), rng.integers(17, 29, 500),
                      rng.integers(29, 32, 500)], axis=1)
    member = {tuple(r) for r in rows.tolist()}
    expected = torch.tensor([tuple(r) in member for r in other.tolist()])
    assert torch.equal(trie.contains(other), expected)
    assert not trie.contains(np.array([[5, 9, 17, 31], [40, 9, 17, 29], [-1, 9, 17, 29]])).any()


def test_leaf_rows_sorted_and_subtree_ranges():
    rows = _rows()
    trie = PrefixTrie(rows)
    leaf_rows = trie.leaf_rows.numpy()
    assert [tuple(r) for r in leaf_rows.tolist()] == sorted({tuple(r) for r in rows.tolist()})
    prefixes = np.unique(rows[:, :2], axis=0)
    lo, hi = trie.leaf_range(2, trie.walk(prefixes))
    for p, a, b in zip(prefixes.tolist(), lo.tolist(), hi.tolist()):
        inside = np.flatnonzero((leaf_rows[:, :2] == p).all(axis=1))
        assert list(inside) == list(range(a, b))


def test_dead_beams_allow_nothing_and_stay_dead():
    trie = PrefixTrie(_rows(), vocab_size=32)
    nodes = torch.tensor([-1, 0])
    mask = trie.allowed_mask(0, nodes)
    assert not mask[0].any() and mask[1].any()
    assert trie.step(0, nodes, torch.tensor([5, 5])).tolist()[0] == -1


def test_mask_wider_than_vocab_and_too_narrow():
    trie = PrefixTrie(_rows(), vocab_size=32)
    wide = trie.allowed_mask(0, trie.root(3), width=50)
    assert wide.shape == (3, 50) and not wide[:, 32:].any()
    assert torch.equal(wide[:, :32], trie.allowed_mask(0, trie.root(3)))
    with pytest.raises(DataError, match="smaller than the trie's vocab"):
        trie.allowed_mask(0, trie.root(1), width=20)


def test_empty_trie():
    trie = PrefixTrie(np.zeros((0, 3), np.int64), vocab_size=10)
    assert trie.n_leaves == 0 and trie.depth == 3
    assert not trie.allowed_mask(0, trie.root(2)).any()
    assert (trie.walk(np.array([[1, 2, 3]])) == -1).all()


def test_duplicates_collapse():
    rows = np.array([[1, 2], [1, 2], [1, 3]])
    trie = PrefixTrie(rows)
    assert trie.n_leaves == 2 and trie.vocab_size == 4
    assert trie.walk(rows).tolist() == [0, 0, 1]


@pytest.mark.parametrize(
    "rows, kwargs, message",
    [
        (np.array([1, 2, 3]), {}, "2-D"),
        (np.array([[1, -2]]), {}, ">= 0"),
        (np.array([[1.5, 2.0]]), {}, "integers"),
        (np.array([[1, 12]]), {"vocab_size": 10}, "does not fit vocab_size"),
        (np.zeros((3, 0), np.int64), {}, "at least one token"),
    ],
)
def test_bad_rows(rows, kwargs, message):
    with pytest.raises(DataError, match=message):
        PrefixTrie(rows, **kwargs)


def test_to_same_device_is_identity():
    trie = PrefixTrie(_rows())
    assert trie.to("cpu") is trie
