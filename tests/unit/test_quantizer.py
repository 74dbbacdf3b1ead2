"""Residual quantizer: k-means init, straight-through gradients, dead-code revival, health statistics."""
import numpy as np
import pytest
import torch

from semid.quantizer import ResidualQuantizer, code_stats, kmeans, nearest
from semid.rqkmeans import RQKMeans


@pytest.fixture(autouse=True)
def single_thread():
    """Tiny tensors: one thread avoids thread-pool stalls on a shared, busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def clustered(n_clusters=8, per=50, dim=8, spread=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_clusters, dim, generator=g) * 3
    x = centres.repeat_interleave(per, 0) + spread * torch.randn(n_clusters * per, dim, generator=g)
    return x, centres


def test_kmeans_finds_separated_clusters():
    x, centres = clustered()
    found = kmeans(x, 8, iters=20, generator=torch.Generator().manual_seed(1))
    # every true centre has a found centroid right next to it
    d = torch.cdist(centres, found).min(1).values
    assert d.max() < 0.1
    assert torch.bincount(nearest(x, found), minlength=8).min() == 50


def test_kmeans_rejects_too_few_points():
    with pytest.raises(ValueError, match="at least k"):
        kmeans(torch.randn(3, 2), 5)


def test_init_forward_shapes_and_straight_through():
    x, _ = clustered()
    q = ResidualQuantizer(8, [8, 4, 4], beta=0.25)
    q.init_kmeans(x, generator=torch.Generator().manual_seed(0))
    z = x.clone().requires_grad_(True)
    out = q(z)
    assert out.codes.shape == (400, 3) and out.quantized.shape == (400, 8)
    assert len(out.residuals) == 3 and out.loss.item() >= 0
    assert torch.equal(out.codes, q.encode(x))
    assert torch.allclose(q.decode(out.codes), out.quantized, atol=1e-5)
    out.quantized.sum().backward()
    assert torch.allclose(z.grad, torch.ones_like(z))  # straight-through: identity gradient
    # k-means init on 8 tight clusters uses every level-1 codeword
    assert code_stats(out.codes.numpy(), [8, 4, 4])[0]["utilization"] == 1.0


def test_residual_levels_reduce_error():
    x, _ = clustered(spread=0.5)
    q = ResidualQuantizer(8, [8, 8, 8])
    q.init_kmeans(x, generator=torch.Generator().manual_seed(0))
    errors = []
    for levels in range(1, 4):
        codes = q.encode(x)[:, :levels]
        approx = sum(q.codebooks[l][codes[:, l]] for l in range(levels))
        errors.append(((x - approx) ** 2).sum(1).mean().item())
    assert errors[0] > errors[1] > errors[2]


def test_dead_codes_are_revived():
    x, _ = clustered()
    q = ResidualQuantizer(8, [8, 4])
    with torch.no_grad():  # collapse: one codeword sits on the data, the rest far away
        q.codebooks[0].copy_(torch.full((8, 8), 1000.0))
        q.codebooks[0][0] = x.mean(0)
    q.train()
    out = q(x)
    assert out.codes[:, 0].unique().numel() == 1
    revived = q.revive_dead(x, torch.Generator().manual_seed(0))
    assert revived[0] == 7
    assert q.usage(0).sum() == 0  # counters restart after a revival
    assert q.encode(x)[:, 0].unique().numel() >= 6  # revived codewords sit on live data and get used


def test_no_revival_when_all_codes_used():
    x, _ = clustered()
    q = ResidualQuantizer(8, [8])
    q.init_kmeans(x, generator=torch.Generator().manual_seed(0))
    q.train()
    q(x)
    assert q.revive_dead(x) == [0]


def test_code_stats_utilisation_and_perplexity():
    codes = np.array([[0, 0], [1, 0], [2, 0], [3, 0]])
    s = code_stats(codes, [4, 8])
    assert s[0]["utilization"] == 1.0 and s[0]["perplexity"] == pytest.approx(4.0)
    assert s[1]["utilization"] == 1 / 8 and s[1]["perplexity"] == pytest.approx(1.0)


def test_rqkmeans_fit_encode_decode():
    x, _ = clustered(spread=0.3)
    rq = RQKMeans([8, 4], iters=10, seed=0).fit(x.numpy())
    codes = rq.encode(x.numpy())
    assert codes.shape == (400, 2) and codes.dtype == np.int64
    assert len(np.unique(codes[:, 0])) == 8
    err = ((x.numpy() - rq.decode(codes)) ** 2).sum(1).mean()
    assert err < ((x.numpy() - x.numpy().mean(0)) ** 2).sum(1).mean() * 0.1
    again = RQKMeans([8, 4], iters=10, seed=0).fit(x.numpy())
    assert np.array_equal(again.encode(x.numpy()), codes)  # seeded
