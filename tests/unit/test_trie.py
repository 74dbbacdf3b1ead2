"""The tensor prefix trie: masks and transitions agree with a plain Python trie, for every node, on both
the padded-table and the CSR paths; lookups, subtree ranges, dead beams and bad input."""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
import torch

from index.trie import PrefixTrie
from semid.common import DataError


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
    dead = torch.tensor([-1, -1])
    assert not trie.allowed_mask(1, dead).any()  # deeper levels hold no node at all: nothing allowed either
    assert not PrefixTrie(np.zeros((0, 3), np.int64), vocab_size=10, pad_budget=0).allowed_mask(1, dead).any()


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


# ----- forests: one trie over many groups' rows, decoded from each group's node --------------------------------


def _grouped(seed: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Rows of 3 overlapping groups (a row may be in several), as (group ids, rows)."""
    rows = np.unique(_rows(seed=seed), axis=0)
    member = np.random.default_rng(seed).random((3, len(rows))) < 0.5
    groups = np.concatenate([np.full(int(m.sum()), g) for g, m in enumerate(member)])
    return groups, np.concatenate([rows[m] for m in member])


@pytest.mark.parametrize("pad_budget", [1 << 24, 0])
def test_a_forest_group_behaves_like_its_own_trie(pad_budget):
    groups, rows = _grouped()
    forest = PrefixTrie.forest(groups, rows, n_groups=4, vocab_size=32, pad_budget=pad_budget)
    starts = forest.group_nodes(np.arange(4))
    assert starts[3] == -1 and (starts[:3] >= 0).all()  # group 3 holds nothing
    assert forest.depth == rows.shape[1] + 1 and forest.n_leaves == len(rows)
    for g in range(3):
        own = PrefixTrie(rows[groups == g], vocab_size=32)
        for d in range(own.depth):
            prefixes = np.unique(own.leaf_rows[:, :d].numpy(), axis=0) if d else np.zeros((1, 0), np.int64)
            own_nodes = own.walk(prefixes)
            nodes = forest.walk(prefixes, starts[g].repeat(len(prefixes)), start_depth=1)
            assert torch.equal(forest.allowed_mask(d + 1, nodes), own.allowed_mask(d, own_nodes))
        lo, hi = forest.leaf_range(1, starts[g : g + 1])
        assert torch.equal(forest.leaf_rows[int(lo) : int(hi), 1:], own.leaf_rows)
        member = {tuple(r) for r in own.leaf_rows.tolist()}
        found = forest.walk(rows, starts[g].repeat(len(rows)), start_depth=1) >= 0
        assert found.tolist() == [tuple(r) in member for r in rows.tolist()]
        path = forest.path(rows[:5], starts[g].repeat(5), start_depth=1)
        assert path.shape == (5, rows.shape[1] + 1) and (path[:, 0] == starts[g]).all()


def test_a_forest_with_more_groups_than_tokens_checks_each_depth_on_its_own():
    rows = np.unique(_rows(), axis=0)
    groups = np.arange(len(rows)) % 100  # group ids up to 99; tokens below 32
    forest = PrefixTrie.forest(groups, rows, n_groups=100, vocab_size=32)
    assert forest.depth_vocab == [100, 32, 32, 32, 32] and forest.vocab_size == 100
    nodes = forest.group_nodes(np.array([0, 7, 99]))
    assert forest.allowed_mask(1, nodes).shape == (3, 32)  # token depths need only the token vocabulary
    assert forest.allowed_mask(0, forest.root(1)).shape == (1, 100)
    with pytest.raises(DataError, match="smaller than the trie's vocab 32"):
        forest.allowed_mask(1, nodes, width=20)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: PrefixTrie.forest(np.array([0, 4]), np.array([[5, 6], [5, 7]]), n_groups=4), r"in \[0, 4\)"),
        (lambda: PrefixTrie.forest(np.array([0]), np.array([[5, 6], [5, 7]]), n_groups=4), "1 group ids for 2"),
        (lambda: PrefixTrie(np.array([[5, 6]]), vocab_size=[8, 8, 8]), "3 vocab sizes for rows of 2"),
        (lambda: PrefixTrie(np.array([[5, 6]]), vocab_size=[8, 6]), r"column 1\) does not fit"),
        (lambda: PrefixTrie(np.array([[5, 6]])).walk(np.array([[6]]), torch.tensor([3]), 1), "does not exist"),
        (lambda: PrefixTrie(np.array([[5, 6]])).walk(np.array([[6]]), torch.tensor([0, 0]), 1), "2 start nodes"),
        (lambda: PrefixTrie(np.array([[5, 6]])).walk(np.array([[6, 6]]), torch.tensor([0]), 1), "only 1 deep"),
    ],
)
def test_forest_and_start_errors(call, message):
    with pytest.raises(DataError, match=message):
        call()
