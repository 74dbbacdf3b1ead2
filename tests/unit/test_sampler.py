"""Hierarchical batch sampler: composition (one parent's leaves, several products per leaf, the rest
unrelated), batch count, seeding."""
import numpy as np

from semid.contrastive import encode_paths, leaf_ids, parent_ids
from semid.sampler import HierarchicalSampler, SamplerConfig


def catalog(n_parents=6, leaves=5, per_leaf=40):
    paths = [[f"p{p}", f"p{p}/l{l}"] for p in range(n_parents) for l in range(leaves) for _ in range(per_leaf)]
    return encode_paths(paths, len(paths))


def test_batch_composition():
    nodes = catalog()
    parent, leaf = parent_ids(nodes), leaf_ids(nodes)
    sampler = HierarchicalSampler(nodes, SamplerConfig(batch_size=64, parent_share=0.5, per_leaf=8), seed=0)
    for _ in range(20):
        batch = sampler.batch()
        assert len(batch) == 64 and len(np.unique(batch)) == 64
        half = batch[:32]
        assert len(np.unique(parent[half])) == 1  # the first half comes from one parent
        _, per = np.unique(leaf[half], return_counts=True)
        assert per.min() >= 8  # several products per leaf
        assert len(per) >= 2  # from more than one of its leaves: sibling pairs exist
        assert not np.isin(parent[batch[32:]], parent[half]).any()  # the rest is from elsewhere


def test_epoch_length_and_seeding():
    nodes = catalog()
    cfg = SamplerConfig(batch_size=100)
    a = [b.copy() for b in HierarchicalSampler(nodes, cfg, seed=3)]
    b = [b.copy() for b in HierarchicalSampler(nodes, cfg, seed=3)]
    c = [b.copy() for b in HierarchicalSampler(nodes, cfg, seed=4)]
    assert len(a) == 12  # ceil(1200 / 100)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_parents_are_drawn_in_proportion_to_size():
    paths = [["big", f"big/l{i % 10}"] for i in range(900)] + [["small", "small/l0"]] * 100
    nodes = encode_paths(paths, 1000)
    parent = parent_ids(nodes)
    sampler = HierarchicalSampler(nodes, SamplerConfig(batch_size=40), seed=0)
    big = parent[np.flatnonzero(np.array([p[0] == "big" for p in paths]))[0]]
    firsts = [parent[sampler.batch()[0]] for _ in range(300)]
    share = np.mean(np.array(firsts) == big)
    assert 0.8 < share < 0.97


def test_without_taxonomy_batches_are_uniform():
    nodes = encode_paths(None, 300)
    batches = list(HierarchicalSampler(nodes, SamplerConfig(batch_size=64), seed=0))
    assert len(batches) == 5
    assert all(len(np.unique(b)) == len(b) == 64 for b in batches)


def test_products_without_a_path_fill_the_rest():
    paths = [["a", "a/x"]] * 50 + [["b", "b/y"]] * 50 + [None] * 100
    nodes = encode_paths(paths, 200)
    sampler = HierarchicalSampler(nodes, SamplerConfig(batch_size=40, per_leaf=5), seed=1)
    batch = sampler.batch()
    assert len(batch) == 40 and len(np.unique(batch)) == 40
    assert (leaf_ids(nodes)[batch[:20]] >= 0).all()


def test_hard_negatives_come_from_look_alike_unrelated_products():
    nodes = catalog(n_parents=4, leaves=2, per_leaf=100)  # 800 products, parents of 200
    parent = parent_ids(nodes)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16)) * 5
    x = centres[np.repeat(np.arange(4), 200)] + rng.normal(size=(800, 16))
    look_alikes = np.array([250, 251, 252, 253, 254, 450, 451, 452, 453, 454])  # outside parent 0, moved next to it
    x[look_alikes] = centres[0] + rng.normal(size=(10, 16))
    cfg = SamplerConfig(batch_size=80, parent_share=0.5, per_leaf=8, hard_share=0.25, hard_pool=10 / 600)
    sampler = HierarchicalSampler(nodes, cfg, seed=0, embeddings=x)
    seen = 0
    for _ in range(40):
        batch = sampler.batch()
        assert len(np.unique(batch)) == len(batch) == 80
        if parent[batch[0]] == parent[0]:
            rest = batch[40:]
            assert not np.isin(parent[rest], parent[0]).any()
            assert np.isin(look_alikes, rest).sum() == 10  # 25% of 40 = 10 hard negatives: exactly those
            seen += 1
    assert seen > 3
