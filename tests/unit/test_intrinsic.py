"""Intrinsic codebook metrics on small hand-made cases with known answers (the real Instacart
taxonomy: ``tests/integration/test_instacart.py``)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from semid.common import DataError
from semid.intrinsic import (
    PairProtocol,
    PairSample,
    average_ranks,
    compare_intrinsic,
    copurchase_sharing,
    format_intrinsic,
    intrinsic_metrics,
    nearest_neighbours,
    normalize,
    pair_agreement,
    sample_pairs,
    spearman,
)

SMALL = PairProtocol(n_queries=200, k_neighbours=5, n_random_pairs=2000)


def nested_world(branching=(4, 3, 3), weights=(8.0, 4.0, 2.0)) -> tuple[np.ndarray, np.ndarray]:
    """Codes from a nested partition, and embeddings built from it: one one-hot direction per prefix
    group and level, so two products' cosine depends only (and strictly increasingly) on shared depth."""
    axes = np.meshgrid(*[np.arange(b) for b in branching], indexing="ij")
    grids = np.stack(axes, -1).reshape(-1, len(branching))
    codes = np.repeat(grids, 2, axis=0)  # two products per full code
    blocks = []
    for level, w in enumerate(weights):
        group = np.unique(codes[:, : level + 1], axis=0, return_inverse=True)[1].reshape(-1)
        block = np.zeros((len(codes), group.max() + 1))
        block[np.arange(len(codes)), group] = np.sqrt(w)
        blocks.append(block)
    leaf = np.eye(len(codes)) * 0.5  # products sharing a full code are near, not identical
    return np.hstack(blocks + [leaf]), codes


def test_utilisation_and_perplexity_uniform_vs_collapsed():
    codes = np.column_stack([np.tile(np.arange(4), 25), np.zeros(100, int), np.arange(100) % 2])
    emb = np.random.default_rng(0).normal(size=(100, 8))
    m = intrinsic_metrics(emb, codes, None, None, [4, 8, 4], protocol=SMALL)
    assert m["utilization"] == [1.0, 1 / 8, 0.5]
    assert m["perplexity"][0] == pytest.approx(4.0)  # uniform over 4
    assert m["perplexity"][1] == pytest.approx(1.0)  # collapsed onto one code
    assert m["perplexity"][2] == pytest.approx(2.0)
    assert m["used_codes"] == [4, 1, 2]


def test_collisions_and_max_group():
    codes = np.array([[0, 0], [0, 0], [0, 0], [0, 1], [1, 0], [1, 1], [1, 1]])
    dedup = np.array([0, 1, 2, 0, 0, 0, 1])
    m = intrinsic_metrics(np.eye(7), codes, dedup, None, [2, 2], protocol=SMALL)
    assert m["n_distinct_sids"] == 4
    assert m["max_group"] == 3
    assert m["unique_fraction"] == pytest.approx(2 / 7)
    assert m["collision_rate"] == pytest.approx(1 - 4 / 7)
    assert m["full_sid_unique"] is True
    bad = intrinsic_metrics(np.eye(7), codes, np.zeros(7, int), None, [2, 2], protocol=SMALL)
    assert bad["full_sid_unique"] is False


def test_spearman_is_perfect_for_a_nested_partition():
    emb, codes = nested_world()
    m = intrinsic_metrics(emb, codes, None, None, [4, 3, 3], protocol=SMALL)
    assert m["spearman_similarity_depth"] == pytest.approx(1.0, abs=1e-9)
    shuffled = codes[np.random.default_rng(0).permutation(len(codes))]
    m_bad = intrinsic_metrics(emb, shuffled, None, None, [4, 3, 3], protocol=SMALL)
    assert abs(m_bad["spearman_similarity_depth"]) < 0.2


def test_share_at_cos90_from_a_known_pair_sample():
    codes = np.array([[0, 0, 0], [0, 0, 1], [0, 1, 0], [1, 0, 0], [0, 0, 0]])
    pairs = PairSample(  # depths: (0,1)=2, (0,2)=1, (0,3)=0, (0,4)=3, (1,2)=1
        left=np.array([0, 0, 0, 0, 1]),
        right=np.array([1, 2, 3, 4, 2]),
        cosine=np.array([0.95, 0.91, 0.90, 0.5, 0.2]),
    )
    m = intrinsic_metrics(np.eye(5), codes, None, None, [2, 2, 2], pairs=pairs)
    assert m["n_pairs_cos90"] == 3
    assert m["share_level_at_cos90"] == pytest.approx([2 / 3, 1 / 3, 0.0])
    none_near = PairSample(pairs.left, pairs.right, pairs.cosine * 0.5)
    far = intrinsic_metrics(np.eye(5), codes, None, None, [2, 2, 2], pairs=none_near)
    assert far["share_level_at_cos90"] == [None, None, None]


def test_taxonomy_alignment_hand_computed():
    # level-1 group 0: tops x, x, y (3 pairs, 1 same); group 1: y, y (1 pair, 1 same); unlabelled ignored
    codes = np.array([[0, 0], [0, 0], [0, 1], [1, 0], [1, 1], [1, 1]])
    paths = [["x", "a"], ["x", "b"], ["y", "c"], ["y", "c"], ["y", "c"], None]
    m = intrinsic_metrics(np.eye(6), codes, None, paths, [2, 2], protocol=SMALL)
    assert m["taxonomy_alignment_l1"] == pytest.approx(2 / 4)
    # depth 2 groups: {0,1} tops x,x (1/1); {2}; {3}; {4,5} -> 5 unlabelled, no pair: 1/1
    assert m["taxonomy_alignment_top"] == pytest.approx([0.5, 1.0])
    # leaves: group 0 a, b, c (0 of 3); group 1 c, c (1 of 1); depth 2: {0,1} a, b (0 of 1)
    assert m["taxonomy_alignment_leaf"] == pytest.approx([1 / 4, 0.0])
    # all pairs of labelled products: tops x,x,y,y,y -> (1 + 3) / 10
    assert m["taxonomy_alignment_chance"] == pytest.approx(4 / 10)
    assert pair_agreement(np.array([0, 0]), np.array([-1, -1])) is None


def test_copurchase_sharing_hand_computed():
    codes = np.array([[0, 0, 0], [0, 0, 1], [0, 1, 0], [1, 0, 0]])
    # pairs share 2, 1 and 0 leading codewords; the re-buy (1 -> 1) is left out
    m = copurchase_sharing(codes, np.array([0, 0, 0, 1]), np.array([1, 2, 3, 1]), seed=0)
    assert m["n_copurchase_pairs"] == 3
    assert m["copurchase_share"] == pytest.approx([2 / 3, 1 / 3, 0.0])
    # chance pairs the same products at random: every share a fraction of the 3 pairs, never above 1
    assert len(m["copurchase_share_chance"]) == 3
    assert all(v * 3 == pytest.approx(round(v * 3)) for v in m["copurchase_share_chance"])
    # a catalog of one code: every pair shares everything, at chance too
    same = copurchase_sharing(np.zeros((4, 2), np.int64), np.array([0, 1]), np.array([2, 3]))
    assert same["copurchase_share"] == same["copurchase_share_chance"] == [1.0, 1.0]
    empty = copurchase_sharing(codes, np.array([2]), np.array([2]))
    assert empty == {"copurchase_share": None, "copurchase_share_chance": None, "n_copurchase_pairs": 0}


def test_ranks_and_spearman_match_definitions():
    np.testing.assert_array_equal(average_ranks(np.array([10, 20, 20, 30, 5])), [2, 3.5, 3.5, 5, 1])
    rng = np.random.default_rng(0)
    x = rng.normal(size=500)
    assert spearman(x, np.exp(x)) == pytest.approx(1.0)
    assert spearman(x, -x) == pytest.approx(-1.0)
    assert spearman(x, np.zeros(500)) is None
    y = rng.integers(0, 4, 500)  # ties: compare with Pearson on average ranks computed by hand
    rx, ry = average_ranks(x), average_ranks(y)
    assert spearman(x, y) == pytest.approx(np.corrcoef(rx, ry)[0, 1])


def test_pair_sample_is_fixed_and_correct():
    x = np.random.default_rng(0).normal(size=(300, 16)).astype(np.float32)
    a, b = sample_pairs(x, seed=3, protocol=SMALL), sample_pairs(x, seed=3, protocol=SMALL)
    np.testing.assert_array_equal(a.left, b.left)
    np.testing.assert_array_equal(a.right, b.right)
    assert a.left.size == 200 * 5 + 2000
    assert (a.left != a.right).all()
    unit = normalize(x)
    np.testing.assert_allclose(a.cosine, (unit[a.left] * unit[a.right]).sum(1), atol=1e-5)
    queries = np.arange(20)
    brute = np.argsort(-(unit[queries] @ unit.T), axis=1)[:, 1:6]
    np.testing.assert_array_equal(nearest_neighbours(unit, queries, 5), brute)
    c = sample_pairs(x, seed=4, protocol=SMALL)
    assert not np.array_equal(a.left, c.left)


def test_duplicates_never_pair_a_product_with_itself():
    x = np.repeat(np.eye(4, dtype=np.float32), 3, axis=0)  # triples of identical vectors
    nn = nearest_neighbours(x, np.arange(12), 2)
    assert (nn != np.arange(12)[:, None]).all()
    assert (nn // 3 == np.arange(12)[:, None] // 3).all()


def test_required_keys_json_and_tables():
    emb, codes = nested_world()
    paths = [["d%d" % c[0], "a%d" % c[1]] for c in codes]
    m = intrinsic_metrics(emb, codes, np.zeros(len(codes), int), paths, [4, 3, 3], 0.25, protocol=SMALL)
    for key in [
        "utilization",
        "perplexity",
        "collision_rate",
        "unique_fraction",
        "max_group",
        "spearman_similarity_depth",
        "share_level_at_cos90",
        "taxonomy_alignment_l1",
        "reconstruction_error",
        "compression_ratio",
    ]:
        assert key in m
    assert m["taxonomy_alignment_l1"] == 1.0
    assert m["compression_ratio"] == pytest.approx(len(codes) / (4 + 3 + 3 + 1))
    json.dumps(m)
    table = format_intrinsic(m)
    assert "spearman sim-depth" in table and "0.2500" in table
    side = compare_intrinsic({"lambda=0": m, "lambda=0.01": {**m, "reconstruction_error": None}})
    header = side.splitlines()[0]
    assert "lambda=0" in header and "lambda=0.01" in header
    assert "-" in side.splitlines()[-3]  # reconstruction error missing in the second run


def test_bad_inputs_raise():
    with pytest.raises(DataError, match="codes must be"):
        intrinsic_metrics(np.eye(3), np.zeros((3, 2), int), None, None, [2, 2, 2])
    with pytest.raises(DataError, match="do not match"):
        intrinsic_metrics(np.eye(4), np.zeros((3, 2), int), None, None, [2, 2])
    with pytest.raises(DataError, match="out of range"):
        intrinsic_metrics(np.eye(3), np.full((3, 2), 2), None, None, [2, 2])
    with pytest.raises(DataError, match="1 paths for 3 products"):
        intrinsic_metrics(np.eye(3), np.zeros((3, 2), int), None, [["a"]], [2, 2])
