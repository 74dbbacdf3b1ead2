"""Taxonomy-graded contrastive term: pair labels from the tree, level weights, the loss and its gradients."""
import numpy as np
import pytest
import torch

from semid.contrastive import (
    NEGATIVE,
    NEUTRAL,
    SAME_LEAF,
    SIBLING,
    calibrate,
    encode_paths,
    graded_infonce,
    leaf_ids,
    level_weights,
    pair_labels,
    pair_targets,
    parent_ids,
    taxonomy_contrastive_loss,
)


@pytest.fixture(autouse=True)
def single_thread():
    """Tiny tensors: one thread avoids thread-pool stalls on a shared, busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

PATHS = [
    ["dairy", "milk"],  # 0
    ["dairy", "milk"],  # 1 same leaf as 0
    ["dairy", "cheese"],  # 2 sibling of 0
    ["snacks", "chips"],  # 3 no shared ancestor with 0
    None,  # 4 unknown
]


def test_encode_paths_nodes_and_ids():
    nodes = encode_paths(PATHS, 5)
    assert nodes.shape == (5, 2)
    assert nodes[0, 0] == nodes[2, 0] != nodes[3, 0]
    assert nodes[0, 1] == nodes[1, 1] != nodes[2, 1]
    assert (nodes[4] == -1).all()
    assert leaf_ids(nodes)[4] == -1 and parent_ids(nodes)[0] == nodes[0, 0]


def test_encode_paths_drops_a_root_shared_by_all():
    nodes = encode_paths([["Beauty", "Skin", "Face"], ["Beauty", "Skin", "Body"], ["Beauty", "Hair"]], 3)
    assert nodes.shape == (3, 2)  # "Beauty" says nothing
    labels = pair_labels(nodes)
    assert labels[0, 1] == SIBLING and labels[0, 2] == NEGATIVE


def test_graded_labels():
    labels = pair_labels(encode_paths(PATHS, 5))
    assert labels[0, 1] == SAME_LEAF
    assert labels[0, 2] == SIBLING
    assert labels[0, 3] == NEGATIVE
    assert labels[0, 4] == NEUTRAL and labels[4, 4] == NEUTRAL
    assert np.all(np.diag(labels) == NEUTRAL)
    assert np.array_equal(labels, labels.T)


def test_cousins_in_a_deep_tree_are_neutral():
    paths = [["a", "b", "c"], ["a", "d", "e"], ["a", "b", "f"], ["x", "y", "z"]]
    labels = pair_labels(encode_paths(paths, 4))
    assert labels[0, 1] == NEUTRAL  # share "a" but not the parent
    assert labels[0, 2] == SIBLING and labels[0, 3] == NEGATIVE


def test_level_weights_coarse_heavier():
    w = level_weights(4)
    assert w == [1.0, 0.5, 0.25, 0.125]
    assert all(a > b for a, b in zip(level_weights(3, 0.3), level_weights(3, 0.3)[1:]))


def test_infonce_prefers_positives_close():
    labels = torch.from_numpy(pair_labels(encode_paths(PATHS[:4], 4)))
    close = torch.tensor([[0.0, 0.0], [0.1, 0.0], [0.5, 0.0], [5.0, 5.0]])
    far = torch.tensor([[0.0, 0.0], [5.0, 5.0], [4.0, 5.0], [0.1, 0.0]])
    assert graded_infonce(close, pair_targets(labels), 0.5, 10.0) < graded_infonce(far, pair_targets(labels), 0.5, 10.0)


def test_infonce_zero_without_positives_or_negatives():
    labels = torch.from_numpy(pair_labels(encode_paths([["a", "b"], ["c", "d"]], 2)))
    assert graded_infonce(torch.randn(2, 3), pair_targets(labels), 0.1, 1.0).item() == 0.0


def test_loss_gradients_reach_residuals_and_codebooks():
    g = torch.Generator().manual_seed(0)
    residuals = [torch.randn(5, 4, generator=g, requires_grad=True) for _ in range(2)]
    codebooks = [torch.randn(6, 4, generator=g, requires_grad=True) for _ in range(2)]
    labels = torch.from_numpy(pair_labels(encode_paths(PATHS, 5)))
    scales = calibrate(residuals, codebooks)
    assert all(v > 0 for v in scales.assign + scales.pair)
    loss = taxonomy_contrastive_loss(residuals, codebooks, labels, level_weights(2), scales)
    loss.backward()
    assert loss.item() > 0
    assert residuals[0].grad.abs().sum() > 0 and codebooks[0].grad.abs().sum() > 0


def test_minimising_the_loss_groups_products_by_category():
    """Optimising only the contrastive term on random latents makes same-category products pick the same
    level-1 codeword more often than different-category ones."""
    g = torch.Generator().manual_seed(0)
    paths = [[f"d{i % 4}", f"a{i % 8}"] for i in range(64)]
    labels = torch.from_numpy(pair_labels(encode_paths(paths, 64)))
    z = torch.randn(64, 8, generator=g, requires_grad=True)
    codebook = torch.randn(8, 8, generator=g, requires_grad=True)
    opt = torch.optim.Adam([z, codebook], lr=0.05)
    scales = calibrate([z], [codebook])
    for _ in range(150):
        loss = taxonomy_contrastive_loss([z], [codebook], labels, [1.0], scales, temperature=0.2)
        opt.zero_grad()
        loss.backward()
        opt.step()
    code = torch.cdist(z, codebook).argmin(1).numpy()
    dept = np.array([i % 4 for i in range(64)])
    same = code[:, None] == code[None, :]
    same_dept = dept[:, None] == dept[None, :]
    off = ~np.eye(64, dtype=bool)
    assert same[same_dept & off].mean() > 0.6
    assert same[~same_dept].mean() < 0.1
