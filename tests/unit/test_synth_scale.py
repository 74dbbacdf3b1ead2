"""The generated catalog at scale (``genrec data synth --scale``) on a tiny size: the dataset contract, retailer
shares, determinism whatever the chunk size, vectors that cluster by the taxonomy, sessions with the
structure they promise, and clear errors."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pyarrow.parquet as pq
import pytest

from genrec.cli import main
from genrec.data.dataset import read_dataset
from genrec.data.synth.scale import write_scale_world
from genrec.data.synth.scale_catalog import leaf_centres, scale_taxonomy
from genrec.data.synth.scale_config import ScaleConfig
from semid.common import DataError
from semid.config import ConfigError
from semid.embeddings import read_embeddings

TINY = ScaleConfig(seed=3, products=2000, retailers=5, events=20_000, departments=4, aisles_per_department=3,
                   leaves_per_aisle=5, block=256)
FILES = ("items.parquet", "embeddings.parquet", "assortment.parquet", "events.parquet")


def _write(tmp_path_factory, cfg: ScaleConfig, chunk: int, name: str):
    out = tmp_path_factory.mktemp(name) / "world"
    meta = write_scale_world(cfg, out, chunk=chunk, show_progress=False)
    return out, meta


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The tiny world written a block (256 products) at a time."""
    return _write(tmp_path_factory, TINY, 256, "scale")


@pytest.fixture(scope="module")
def ds(world):
    return read_dataset(world[0])


def _leaf_index(ds, cfg: ScaleConfig) -> np.ndarray:
    """Each item's leaf number (leaf names are unique)."""
    tax = scale_taxonomy(cfg)
    names = tax.names.to_pylist()[tax.departments + tax.aisles:]
    number = {n: k for k, n in enumerate(names)}
    return np.array([number[p[-1]] for p in ds.items.column("category_path").to_pylist()])


def test_the_dataset_loader_takes_it(world, ds):
    out, meta = world
    ds.validate()
    ids = ds.items.column("item_id").to_numpy()
    assert np.array_equal(ids, np.arange(1, TINY.products + 1))
    assert ds.events.num_rows == TINY.events == meta["counts"]["events"]
    assert all(len(p) == 3 for p in ds.items.column("category_path").to_pylist())
    assert all(t and b in t for t, b in zip(ds.items.column("title").to_pylist(), ds.items.column("brand").to_pylist()))
    assert np.array_equal(np.unique(ds.assortment.column("retailer_id").to_numpy()), np.arange(TINY.retailers))
    assert json.loads((out / "meta.json").read_text()) == meta
    assert meta["taxonomy"]["leaves"] == TINY.leaves == 60
    emb_ids, vectors = read_embeddings(out / "embeddings.parquet")  # the run's embeddings format
    assert np.array_equal(emb_ids, ids) and vectors.shape == (TINY.products, TINY.dim)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_every_retailer_stocks_a_share_within_the_bounds_and_they_overlap(ds, world):
    r = ds.assortment.column("retailer_id").to_numpy()
    item = ds.assortment.column("item_id").to_numpy()
    share = np.bincount(r, minlength=TINY.retailers) / TINY.products
    assert ((share >= TINY.coverage_min) & (share <= TINY.coverage_max)).all(), share
    assert share.tolist() == [s / TINY.products for s in world[1]["retailers"]["stocked"]]
    assert np.unique(np.stack([r, item]), axis=1).shape[1] == r.size  # no pair twice
    carried_by = np.bincount(item, minlength=TINY.products + 1)[1:]
    assert (carried_by >= 2).mean() > 0.2  # overlapping assortments
    assert world[1]["counts"]["unstocked_items"] == int((carried_by == 0).sum())


def test_same_seed_same_files_whatever_the_chunk_size(world, tmp_path_factory):
    out, meta = world
    for chunk in (1000, 10**6):  # 4 blocks a chunk (1000 rounds up to 1024), and everything in one chunk
        again, again_meta = _write(tmp_path_factory, TINY, chunk, f"chunk{chunk}")
        assert again_meta == meta
        for name in FILES:
            assert pq.read_table(again / name).equals(pq.read_table(out / name)), (chunk, name)
    other, _ = _write(tmp_path_factory, replace(TINY, seed=4), 256, "seed4")
    for name in FILES:
        assert not pq.read_table(other / name).equals(pq.read_table(out / name)), name


def test_vectors_cluster_by_leaf_aisle_and_department(world, ds):
    _, vectors = read_embeddings(world[0] / "embeddings.parquet")
    leaf = _leaf_index(ds, TINY)
    centres = leaf_centres(TINY)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    nearest = np.argmax(vectors @ centres.T, axis=1)
    assert (nearest == leaf).mean() > 0.9
    # closer within a leaf than within an aisle, within an aisle than within a department, than across
    rng = np.random.default_rng(0)
    a, b = rng.integers(TINY.products, size=(2, 20_000))
    cos = np.einsum("ij,ij->i", vectors[a], vectors[b])
    per_aisle, per_dept = TINY.leaves_per_aisle, TINY.leaves_per_aisle * TINY.aisles_per_department
    same = [leaf[a] // per == leaf[b] // per for per in (1, per_aisle, per_dept)]
    groups = [same[0], same[1] & ~same[0], same[2] & ~same[1], ~same[2]]
    means = [cos[g].mean() for g in groups]
    assert means == sorted(means, reverse=True), means


def test_sessions_buy_what_the_home_retailer_stocks_and_has_launched(ds):
    ev = {c: ds.events.column(c).to_numpy() for c in ds.events.column_names}
    stock = set(zip(ds.assortment.column("retailer_id").to_numpy().tolist(),
                    ds.assortment.column("item_id").to_numpy().tolist()))
    assert all(pair in stock for pair in zip(ev["retailer_id"].tolist(), ev["item_id"].tolist()))
    first_seen = ds.items.column("first_seen").to_numpy()
    assert (first_seen[ev["item_id"] - 1] <= ev["ts"]).all()
    assert (first_seen > 0).any()
    user_home = {}
    for u, r in zip(ev["user_id"].tolist(), ev["retailer_id"].tolist()):
        assert user_home.setdefault(u, r) == r  # one home retailer per shopper
    # positions count 1.. within every session, a product at most once per session
    sess = ev["session_id"]
    assert (np.diff(sess) >= 0).all()
    starts = np.searchsorted(sess, sess)
    assert np.array_equal(ev["position"], np.arange(sess.size) - starts + 1)
    assert np.unique(np.stack([sess, ev["item_id"]]), axis=1).shape[1] == sess.size


def test_sessions_have_tastes_rebuys_and_partner_products(ds):
    ev = {c: ds.events.column(c).to_numpy() for c in ds.events.column_names}
    leaf = _leaf_index(ds, TINY)[ev["item_id"] - 1]
    user = ev["user_id"]
    # taste: a shopper's six most bought leaves hold most of its purchases (of 60 leaves)
    top = []
    for u in np.unique(user)[:200]:
        counts = np.sort(np.bincount(leaf[user == u]))[::-1]
        top.append(counts[:TINY.taste_leaves].sum() / counts.sum())
    assert np.mean(top) > 0.75
    # rebuys: many purchases repeat a product the shopper bought in an earlier order
    key = user * (TINY.products + 1) + ev["item_id"]
    first_ts = {}
    for k, t in zip(key.tolist(), ev["ts"].tolist()):
        first_ts.setdefault(k, t)
    repeat = np.array([first_ts[k] < t for k, t in zip(key.tolist(), ev["ts"].tolist())])
    assert repeat.mean() > 0.3
    # partner products: the same (product, next product) pair recurs far more often than chance
    same_session = ev["session_id"][1:] == ev["session_id"][:-1]
    pairs = np.stack([ev["item_id"][:-1], ev["item_id"][1:]])[:, same_session]
    _, counts = np.unique(pairs, axis=1, return_counts=True)
    assert counts.max() >= 10 and (counts >= 3).sum() > 100


def test_bad_settings_fail_clearly(tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"scale\.products: must be >= 1"):
        ScaleConfig(products=0)
    with pytest.raises(ConfigError, match=r"scale\.coverage_min: must be <= coverage_max"):
        ScaleConfig(coverage_min=0.7, coverage_max=0.6)
    with pytest.raises(ConfigError, match=r"scale\.coverage_max: must lie in \[0, 1\]"):
        ScaleConfig(coverage_max=1.5)
    with pytest.raises(DataError, match="chunk must be a whole number"):
        write_scale_world(TINY, tmp_path / "x", chunk=0)
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "f").write_text("x")
    with pytest.raises(DataError, match="not empty"):
        write_scale_world(TINY, taken)
    out = str(tmp_path / "cli")
    capsys.readouterr()
    assert main(["data", "synth", "--scale", "--products", "-5", "--out", out]) == 2
    assert "scale.products: must be >= 1, got -5" in capsys.readouterr().err
    assert main(["data", "synth", "--products", "500", "--out", out]) == 2
    assert "--products describe a catalog at scale: add --scale" in capsys.readouterr().err
    assert main(["data", "synth", "--scale", "--items", "500", "--out", out]) == 2
    assert "--items describe the small world" in capsys.readouterr().err
    assert main(["data", "synth", "--scale", "--chunk", "0", "--out", out]) == 2
    assert "chunk must be a whole number of products >= 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "cli").exists()


def test_the_command_writes_a_world(tmp_path, capsys):
    out = tmp_path / "w"
    assert main(["data", "synth", "--scale", "--products", "600", "--retailers", "4", "--events", "3000",
                 "--dim", "16", "--out", str(out)]) == 0
    assert "600 items in 2,400 leaves, 4 retailers" in capsys.readouterr().out
    ds = read_dataset(out)
    ds.validate()
    assert ds.items.num_rows == 600 and ds.events.num_rows == 3000
    assert read_embeddings(out / "embeddings.parquet")[1].shape == (600, 16)
    assert json.loads((out / "meta.json").read_text())["config"]["retailers"] == 4
