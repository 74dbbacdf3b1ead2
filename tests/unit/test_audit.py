"""Catalog audit: planted mislabels come out on top, with their neighbourhood's label and examples."""
from __future__ import annotations


import numpy as np
import pytest

from semid.audit import AUDIT_SCHEMA, audit_catalog, deepest_support
from semid.common import DataError

def clustered_catalog(sizes=(20, 20, 12), seed=0):
    """Clusters of products with their own level-1 code, varied deeper codes, and one aisle per cluster."""
    rng = np.random.default_rng(seed)
    cluster = np.repeat(np.arange(len(sizes)), sizes)
    n = cluster.size
    codes = np.column_stack([cluster, rng.integers(0, 4, n), rng.integers(0, 4, n)])
    paths = [["food", f"aisle{c}"] for c in cluster]
    titles = [f"product {i} of cluster {c}" for i, c in enumerate(cluster)]
    return np.arange(n) + 1000, titles, paths, codes, cluster


def test_planted_mislabel_has_the_highest_confidence():
    ids, titles, paths, codes, cluster = clustered_catalog()
    paths[7] = ["food", "aisle1"]  # a cluster-0 product filed under aisle1
    paths[45] = ["drinks", "aisle0"]  # a cluster-2 product (smaller cluster) filed under aisle0
    table = audit_catalog(ids, titles, paths, codes, min_support=5)
    assert table.schema == AUDIT_SCHEMA
    rows = table.to_pylist()
    assert [r["item_id"] for r in rows] == [1007, 1045]  # nothing else is flagged, larger support first
    top = rows[0]
    assert top["label"] == "food > aisle1" and top["majority_label"] == "food > aisle0"
    assert top["n_neighbours"] == 19 and top["depth"] == 1
    assert top["confidence"] == pytest.approx((19 - 0) / 19 * 19 / (19 + 5))
    assert len(top["example_neighbours"]) == 5
    assert all("of cluster 0" in t for t in top["example_neighbours"])
    assert top["sid"] == "_".join(str(c) for c in codes[7])
    assert rows[1]["majority_label"] == "food > aisle2"
    assert rows[1]["confidence"] < top["confidence"]


def test_consistent_catalog_flags_nothing_and_top_limits():
    ids, titles, paths, codes, _ = clustered_catalog()
    assert audit_catalog(ids, titles, paths, codes).num_rows == 0
    for i in (3, 25, 47):
        paths[i] = ["food", "elsewhere"]
    assert audit_catalog(ids, titles, paths, codes).num_rows == 3
    assert audit_catalog(ids, titles, paths, codes, top=2).num_rows == 2


def test_deepest_well_populated_prefix():
    codes = np.array([[0, 0]] * 6 + [[0, 1]] * 2 + [[1, 0]] * 2)
    depth, _ = deepest_support(codes, np.ones(10, bool), min_support=3)
    np.testing.assert_array_equal(depth, [2] * 6 + [1] * 2 + [0] * 2)
    # unlabelled products (3..5) do not count as support: 0..2 see only 2 labelled others at depth 2
    labelled = np.array([True] * 3 + [False] * 3 + [True] * 4)
    depth, _ = deepest_support(codes, labelled, min_support=3)
    np.testing.assert_array_equal(depth[:8], [1, 1, 1, 2, 2, 2, 1, 1])


def test_depth_refines_the_neighbourhood():
    # level-1 code 0 holds aisles x (deeper code 0) and y (deeper code 1); one y product sits among the x's
    codes = np.array([[0, 0]] * 10 + [[0, 1]] * 10)
    paths = [["d", "x"]] * 9 + [["d", "y"]] + [["d", "y"]] * 10
    rows = audit_catalog(np.arange(20), [f"t{i}" for i in range(20)], paths, codes, min_support=5).to_pylist()
    assert [r["item_id"] for r in rows] == [9]
    assert rows[0]["depth"] == 2 and rows[0]["majority_label"] == "d > x" and rows[0]["n_neighbours"] == 9


def test_unlabelled_leaves_neither_vote_nor_get_flagged():
    ids, titles, paths, codes, _ = clustered_catalog()
    for i in range(10):
        paths[i] = ["missing", "missing"]  # half of cluster 0 has no real label
    paths[15] = ["food", "aisle2"]
    codes[:20, 1:] = 0  # cluster 0 shares its full code: only the label decides who are neighbours
    plain = audit_catalog(ids, titles, paths, codes, min_support=5)
    assert any("missing > missing" in (r["label"], r["majority_label"]) for r in plain.to_pylist())
    rows = audit_catalog(ids, titles, paths, codes, min_support=5, unlabelled=["missing"]).to_pylist()
    assert [r["item_id"] for r in rows] == [1015]
    assert rows[0]["n_neighbours"] == 9 and rows[0]["majority_label"] == "food > aisle0"
    assert all(int(t.split()[1]) >= 10 for t in rows[0]["example_neighbours"])


def test_embeddings_weight_votes_and_order_examples():
    ids, titles, paths, codes, cluster = clustered_catalog()
    paths[7] = ["food", "aisle1"]
    rng = np.random.default_rng(1)
    emb = np.eye(3)[cluster] * 3 + rng.normal(scale=0.3, size=(len(ids), 3))
    emb[3] = emb[7] + 0.01  # product 3 is the nearest neighbour of product 7
    rows = audit_catalog(ids, titles, paths, codes, embeddings=emb, min_support=5).to_pylist()
    assert rows[0]["item_id"] == 1007
    assert rows[0]["example_neighbours"][0] == titles[3]
    assert rows[0]["confidence"] == pytest.approx(19 / 24)  # no neighbour carries its label: margin share 1


def test_custom_sids_and_bad_inputs():
    ids, titles, paths, codes, _ = clustered_catalog()
    paths[7] = ["food", "aisle1"]
    sids = [f"sid{i}" for i in range(len(ids))]
    assert audit_catalog(ids, titles, paths, codes, sids=sids).column("sid").to_pylist() == ["sid7"]
    with pytest.raises(DataError, match="line up"):
        audit_catalog(ids[:-1], titles, paths, codes)
    with pytest.raises(DataError, match="min_support"):
        audit_catalog(ids, titles, paths, codes, min_support=0)
    with pytest.raises(DataError, match="embeddings"):
        audit_catalog(ids, titles, paths, codes, embeddings=np.ones((3, 2)))
