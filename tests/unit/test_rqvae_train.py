"""Training codebooks end to end: collapse prevention, determinism, the taxonomy term, save/load, warm
starts (a slice of the real Instacart catalog: ``tests/integration/test_instacart.py``)."""
import json

import numpy as np
import pytest
import torch

from semid.common import DataError
from semid.rqvae import RQVAE, RQVAEConfig
from semid.sids import assign_sids
from semid.store import CONFIG_FILE, HISTORY_FILE, load_codebook, read_sids, save_codebook
from semid.train import SemIDConfig, train_codebook

def grocery_world(n_dept=6, n_aisle=4, per=60, dim=48, seed=0):
    """Embeddings around aisle centres around department centres, with their [dept, aisle] paths."""
    rng = np.random.default_rng(seed)
    x, paths = [], []
    for d in range(n_dept):
        dept = rng.normal(size=dim)
        for a in range(n_aisle):
            aisle = dept + 0.7 * rng.normal(size=dim)
            x.append(aisle + 0.5 * rng.normal(size=(per, dim)))
            paths += [[f"d{d}", f"d{d}/a{a}"]] * per
    return np.concatenate(x).astype(np.float32), paths


def small_cfg(**kw):
    base = dict(codebook_sizes=[8, 16, 32], hidden_dims=[64], latent_dim=12, epochs=6, warmup_epochs=1,
                batch_size=128, progress=False, seed=0, threads=1)
    base.update(kw)
    return SemIDConfig(**base)


@pytest.fixture(scope="module")
def world():
    return grocery_world()


@pytest.fixture(scope="module")
def trained(world):
    x, paths = world
    return train_codebook(x, paths, small_cfg())


def test_training_logs_health_and_uses_every_level(world, trained):
    model, history = trained
    x, _ = world
    assert [h["phase"] for h in history] == ["warmup"] + ["rq"] * 6
    last = history[-1]
    for key in ("loss", "recon", "rq", "contrastive", "revived", "utilization", "perplexity", "seconds"):
        assert key in last
    assert last["contrastive"] > 0
    assert min(last["utilization"]) >= 0.9  # no collapse at any level
    codes = model.encode(x)
    assert codes.shape == (len(x), 3) and codes.dtype == np.int64
    assert all(len(np.unique(codes[:, l])) >= 0.9 * k for l, k in enumerate([8, 16, 32]))
    assert history[-1]["recon"] < history[1]["recon"]  # it learns


def test_dead_code_revival_prevents_collapse(world):
    """A codebook that starts collapsed (all codewords far from the data but one) recovers by revival."""
    x, paths = world
    cfg = small_cfg(epochs=3, warmup_epochs=0, contrastive_lambda=0.0)
    model, _ = train_codebook(x, paths, cfg)
    with torch.no_grad():
        for cb in model.net.quantizer.codebooks:
            cb.fill_(1e3)
            cb[0] = 0.0
    assert len(np.unique(model.encode(x)[:, 0])) == 1
    healed, history = train_codebook(x, paths, small_cfg(epochs=3, contrastive_lambda=0.0), init=model)
    assert sum(history[0]["revived"]) > 40
    assert min(history[-1]["utilization"]) >= 0.9
    no_revival, h2 = train_codebook(x, paths, small_cfg(epochs=3, contrastive_lambda=0.0, revive_dead=False), init=model)
    assert h2[-1]["utilization"][0] < 0.5  # without revival the collapse stays


def test_same_seed_same_codebook_other_seed_differs(world, trained):
    x, paths = world
    model, _ = trained
    again, _ = train_codebook(x, paths, small_cfg())
    assert again.codebook_version == model.codebook_version
    assert np.array_equal(again.encode(x), model.encode(x))
    other, _ = train_codebook(x, paths, small_cfg(seed=1))
    assert other.codebook_version != model.codebook_version


def test_training_restores_global_torch_state(world):
    x, paths = world
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    train_codebook(x, paths, small_cfg(epochs=1, threads=1))
    assert torch.equal(torch.rand(1), expected)


def test_lambda_zero_is_vanilla(world):
    x, paths = world
    _, h0 = train_codebook(x, paths, small_cfg(epochs=2, contrastive_lambda=0.0))
    _, h_none = train_codebook(x, None, small_cfg(epochs=2))
    assert all(h["contrastive"] == 0 for h in h0 + h_none)
    assert h0[-1]["recon"] == pytest.approx(h_none[-1]["recon"])  # taxonomy unused either way


def test_taxonomy_term_raises_level1_alignment():
    """With departments only weakly visible in the embeddings, the taxonomy term makes level-1 codes
    agree with departments more often than vanilla training does."""
    x, paths = grocery_world(n_dept=4, n_aisle=4, per=50, dim=32, seed=3)
    rng = np.random.default_rng(0)
    x = x + 2.0 * rng.normal(size=x.shape).astype(np.float32)  # drown most of the structure
    dept = np.array([int(p[0][1:]) for p in paths])

    def alignment(lam):
        model, _ = train_codebook(x, paths, small_cfg(codebook_sizes=[4, 8], epochs=10, contrastive_lambda=lam))
        c1 = model.encode(x)[:, 0]
        same = c1[:, None] == c1[None, :]
        off = ~np.eye(len(x), dtype=bool)
        return (dept[:, None] == dept[None, :])[same & off].mean()

    assert alignment(1.0) > alignment(0.0) + 0.05


@pytest.mark.parametrize("every", [1, 3])
def test_taxonomy_term_runs_on_every_nth_step(world, monkeypatch, every):
    """The taxonomy batch is drawn (and its term computed) on steps 0, n, 2n, ... of each epoch only."""
    from semid import sampler as sampler_module

    x, paths = world
    calls = []
    original = sampler_module.HierarchicalSampler.batch
    monkeypatch.setattr(sampler_module.HierarchicalSampler, "batch", lambda self: calls.append(1) or original(self))
    _, history = train_codebook(x, paths, small_cfg(epochs=2, contrastive_every=every))
    steps = -(-len(x) // 128)
    assert len(calls) == 2 * -(-steps // every)
    assert all(h["contrastive"] > 0 for h in history if h["phase"] == "rq")  # a mean where computed
    with pytest.raises(ValueError, match="contrastive_every"):
        train_codebook(x, paths, small_cfg(contrastive_every=0))


@pytest.mark.parametrize("sample, seen", [(0, 1440), (500, 500), (5000, 1440), (10, 32)])
def test_codebooks_are_seeded_on_a_sample_of_a_large_catalog(world, monkeypatch, sample, seen):
    """``kmeans_sample`` caps the products k-means initialises the codebooks on (never below the largest
    codebook); 0, the default, seeds on every product, as before."""
    from semid.quantizer import ResidualQuantizer

    x, paths = world
    sizes = []
    original = ResidualQuantizer.init_kmeans
    monkeypatch.setattr(ResidualQuantizer, "init_kmeans", lambda self, z, *a: sizes.append(len(z)) or original(self, z, *a))
    model, _ = train_codebook(x, paths, small_cfg(epochs=1, warmup_epochs=0, kmeans_sample=sample))
    assert sizes == [seen] and len(x) == 1440
    assert model.encode(x).shape == (len(x), 3)


def test_rqkmeans_method(world):
    x, paths = world
    model, history = train_codebook(x, paths, small_cfg(method="rqkmeans"))
    assert len(history) == 1 and min(history[0]["utilization"]) >= 0.9
    assert 0 < history[0]["reconstruction_error"] < 1
    assert model.encode(x).shape == (len(x), 3)


def test_save_load_round_trip(tmp_path, world, trained):
    x, _ = world
    model, history = trained
    codes = model.encode(x)
    sids = assign_sids(np.arange(len(x)) + 100, codes, model.codebook_version)
    version = save_codebook(tmp_path, model, sids, history, {"max_group": 1})
    assert version == model.codebook_version
    loaded = load_codebook(tmp_path)
    assert loaded.codebook_version == version
    assert np.array_equal(loaded.encode(x), codes)
    assert loaded.reconstruction_error(x) == pytest.approx(model.reconstruction_error(x))
    assert read_sids(tmp_path, version).equals(sids)
    assert json.loads((tmp_path / HISTORY_FILE).read_text())["codebook_version"] == version
    assert not list(tmp_path.glob("*.pkl")) and not list(tmp_path.glob("*.pt"))
    with pytest.raises(DataError, match="expected"):
        read_sids(tmp_path, "other")


def test_load_detects_mixed_run_folder(tmp_path, world, trained):
    x, paths = world
    model, _ = trained
    save_codebook(tmp_path, model)
    other, _ = train_codebook(x, paths, small_cfg(seed=5, epochs=1))
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    save_codebook(tmp_path, other)
    (tmp_path / CONFIG_FILE).write_text(json.dumps(config))  # config of one, weights of the other
    with pytest.raises(DataError, match="different codebooks"):
        load_codebook(tmp_path)


def test_rqkmeans_save_load(tmp_path, world):
    x, paths = world
    model, _ = train_codebook(x, paths, small_cfg(method="rqkmeans"))
    save_codebook(tmp_path, model)
    assert np.array_equal(load_codebook(tmp_path).encode(x), model.encode(x))


def test_warm_start_keeps_most_codes(world, trained):
    x, paths = world
    model, _ = trained
    grown = np.concatenate([x, x[:100] + 0.05])
    again, _ = train_codebook(grown, paths + paths[:100], small_cfg(epochs=1, lr=1e-4, seed=7), init=model)
    kept = (again.encode(x) == model.encode(x)).all(1).mean()
    assert kept > 0.8


def test_bad_inputs():
    with pytest.raises(ValueError, match="NaN"):
        train_codebook(np.full((100, 4), np.nan, np.float32), None, small_cfg())
    with pytest.raises(ValueError, match="cannot fill"):
        train_codebook(np.ones((10, 4), np.float32), None, small_cfg())
    with pytest.raises(ValueError, match="category paths"):
        train_codebook(np.ones((100, 4), np.float32), [["a"]], small_cfg())


def test_rqvae_shapes():
    net = RQVAE(RQVAEConfig(input_dim=20, hidden_dims=[16], latent_dim=4, codebook_sizes=[4, 4]))
    out = net(torch.randn(10, 20))
    assert out.reconstruction.shape == (10, 20) and out.codes.shape == (10, 2)
    assert net.encode(torch.randn(7, 20)).shape == (7, 2)


def test_taxonomy_term_on_its_own_smaller_batch(world, monkeypatch):
    """``contrastive_batch_size`` sizes the taxonomy term's hierarchical batch while reconstruction keeps
    ``batch_size``; 0 (the default) is ``batch_size``, the codebook trained before the setting existed."""
    from semid import sampler as sampler_module
    from semid import train as train_module

    x, paths = world
    tax, recon = [], []
    original_batch, original_uniform = sampler_module.HierarchicalSampler.batch, train_module._uniform_batches
    monkeypatch.setattr(sampler_module.HierarchicalSampler, "batch",
                        lambda self: (lambda b: tax.append(len(b)) or b)(original_batch(self)))
    monkeypatch.setattr(train_module, "_uniform_batches",
                        lambda n, size, rng: (lambda bs: recon.extend(len(b) for b in bs) or bs)(original_uniform(n, size, rng)))
    small, _ = train_codebook(x, paths, small_cfg(epochs=2, contrastive_batch_size=48))
    assert tax and set(tax) == {48} and max(recon) == 128
    tax.clear()
    default, _ = train_codebook(x, paths, small_cfg(epochs=2))
    assert set(tax) == {128}
    same, _ = train_codebook(x, paths, small_cfg(epochs=2, contrastive_batch_size=128))
    assert same.codebook_version == default.codebook_version != small.codebook_version
    with pytest.raises(ValueError, match="contrastive_batch_size"):
        small_cfg(contrastive_batch_size=-1)
