"""Steps whose memory used to grow with the catalog (docs/scaling.md, "Memory"): the same results, and peak
memory (numpy's allocations, as tracemalloc sees them) bounded by a slice of the catalog rather than by all of
it. Each bound is well under what the catalog-sized version of the step allocated."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

MB = 1 << 20


def traced_peak(fn, *args, **kwargs):
    """(result, peak bytes numpy and Python allocated while ``fn`` ran, above what was live before)."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        out = fn(*args, **kwargs)
        return out, tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def test_cold_pool_ranked_in_slices_with_the_whole_pools_order():
    """top_cold over a pool of 300k new products: the lists of a full sort by (similarity, lower id), with
    the pool read in slices (it used to gather [M, levels, dim] codewords and M similarities per query, ~170 MB
    here)."""
    from index.cold import ColdRanker, _unit, top_cold

    rng = np.random.default_rng(0)
    ranker = ColdRanker(rng.standard_normal((64, 16)).astype(np.float32))
    rows = rng.integers(0, 12, (300_000, 4))  # few distinct points: many products tie
    ids = rng.permutation(10**7)[:300_000]
    queries = _unit(rng.standard_normal((32, 16)).astype(np.float32))
    best, peak = traced_peak(top_cold, ranker, queries, rows, 25, ids)
    assert peak < 64 * MB
    sims = queries @ ranker.points(rows).T
    want = np.lexsort((np.broadcast_to(ids, sims.shape), -sims), axis=1)[:, :25]
    np.testing.assert_array_equal(best, want)


def test_joined_vectors_made_without_catalog_sized_temporaries():
    """combine: the float32 concatenation of the scaled parts, allocated once (float64 products of both parts
    and their concatenation used to come first: about 4x the result)."""
    from semid.collab import combine
    from semid.embeddings import l2_normalize

    rng = np.random.default_rng(1)
    text = rng.standard_normal((200_000, 48)).astype(np.float32)
    collab = rng.standard_normal((200_000, 16)).astype(np.float32)
    joined, peak = traced_peak(combine, text, collab, 0.5)
    assert peak < joined.nbytes + 16 * MB
    want = np.concatenate([np.sqrt(0.5) * l2_normalize(text), np.sqrt(0.5) * collab], axis=1).astype(np.float32)
    np.testing.assert_array_equal(joined, want)


@pytest.mark.parametrize("rows", [50_000, 300_000])  # at once, and in slices (above STANDARDIZE_ROWS)
def test_standardizer_holds_one_working_copy(rows):
    """Standardizer.fit and transform hold one float32 working copy (their chained expressions used to hold
    three); transform's values are the expression's."""
    from semid.train import Standardizer

    rng = np.random.default_rng(2)
    x = rng.standard_normal((rows, 32)).astype(np.float32)
    std, fit_peak = traced_peak(Standardizer.fit, x, "global", True)
    out, peak = traced_peak(std.transform, x)
    assert fit_peak < 1.3 * x.nbytes and peak < 1.3 * x.nbytes
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    np.testing.assert_array_equal(out, ((unit - std.mean) / std.scale).astype(np.float32))
    np.testing.assert_allclose(std.mean, unit.mean(0), atol=1e-6)


def test_copurchase_vectors_of_a_mostly_unbought_catalog():
    """collab_vectors on 60k products of which 1k co-occur: the SVD runs on those (it used to draw and
    orthonormalise float64 blocks of 60k x 80, ~150 MB); the others' rows are zero, the rest unit length."""
    from semid.collab import collab_vectors

    rng = np.random.default_rng(3)
    catalog = np.arange(1, 60_001)
    items = rng.choice(catalog[:1000], 8_000)
    offsets = np.arange(0, 8_001, 8)
    vectors, peak = traced_peak(collab_vectors, offsets, items, catalog, 64, 3, 0)
    assert peak < vectors.nbytes + 24 * MB
    norms = np.linalg.norm(vectors, axis=1)
    bought = np.isin(catalog, items)
    assert (norms[~bought] == 0).all()
    np.testing.assert_allclose(norms[bought], 1.0, atol=1e-5)


def test_catalog_vectors_read_from_the_file_once(tmp_path):
    """A catalog with a column of vectors: build_semids reads the column a batch at a time (the same array as
    from the whole table), the run's items.parquet keeps every column, and what training and evaluation read
    of the dataset leaves the vectors out."""
    from genrec.data.dataset import read_dataset, read_events
    from semid.catalog import copy_items, read_items
    from semid.embeddings import EmbeddingConfig, column_vectors, embed_catalog, embed_items

    rng = np.random.default_rng(4)
    n = 10_000
    vec = rng.standard_normal((n, 24)).astype(np.float32)
    items = pa.table({"item_id": np.arange(1, n + 1), "title": [f"t{i}" for i in range(n)],
                      "text": [f"x{i}" for i in range(n)], "vec": pa.array(list(vec), pa.list_(pa.float32()))})
    data = tmp_path / "data"
    data.mkdir()
    pq.write_table(items, data / "items.parquet", row_group_size=3_000)
    events = pa.table({"user_id": [1, 1], "session_id": [1, 2], "ts": [1, 2], "item_id": [1, 2],
                       "position": pa.array([1, 1], pa.int32())})
    pq.write_table(events, data / "events.parquet")
    cfg = EmbeddingConfig(provider="column", column="vec")
    whole = read_items(data)
    np.testing.assert_array_equal(embed_catalog(read_items(data, extras=False), data / "items.parquet", cfg),
                                  embed_items(whole, cfg))
    copy_items(data, tmp_path / "copy.parquet", batch=4_000)
    assert read_items(tmp_path / "copy.parquet").equals(whole)
    np.testing.assert_array_equal(column_vectors(read_items(tmp_path / "copy.parquet"), "vec"), vec)
    assert "vec" not in read_dataset(data, item_extras=False).items.column_names
    assert "vec" in read_dataset(data).items.column_names
    assert read_events(data).equals(read_dataset(data).events)


def test_large_catalog_trains_on_standardised_slices(monkeypatch):
    """Above STANDARDIZE_ROWS the RQ-VAE reads StandardRows: each row, slice and batch is the standardised
    copy's, the means match to round-off; training on them runs and is deterministic."""
    import torch

    import semid.train as T
    from semid.codebook_config import SemIDConfig

    rng = np.random.default_rng(5)
    x = rng.standard_normal((3_000, 24)).astype(np.float32)
    std = T.Standardizer.fit(x, "global", True)
    whole = torch.from_numpy(std.transform(x))
    rows = T.StandardRows(x, std)
    idx = rng.permutation(3_000)[:700]
    assert torch.equal(rows[idx], whole[idx]) and torch.equal(rows[torch.from_numpy(idx)], whole[idx])
    assert torch.equal(torch.cat(list(rows.split(512))), whole)
    np.testing.assert_array_equal(rows.numpy()[idx], whole.numpy()[idx])
    torch.testing.assert_close(rows.mean(0), whole.mean(0), atol=1e-6, rtol=0)
    monkeypatch.setattr(T, "STANDARDIZE_ROWS", 1_000)
    monkeypatch.setattr(T, "SLICE_ROWS", 300)
    sliced = T.Standardizer.fit(x, "global", True)
    np.testing.assert_allclose(sliced.mean, std.mean, atol=1e-6)
    np.testing.assert_allclose(sliced.scale, std.scale, rtol=1e-5)
    cfg = SemIDConfig(codebook_sizes=[16, 16], hidden_dims=[32], latent_dim=16, epochs=2, batch_size=256,
                      kmeans_iters=3, progress=False)
    paths = [["a", f"b{i % 7}"] for i in range(3_000)]
    codes = [T.train_codebook(x, paths, cfg)[0].encode(x) for _ in range(2)]
    assert codes[0].shape == (3_000, 2) and np.array_equal(codes[0], codes[1])
    assert len(np.unique(codes[0][:, 0])) > 8  # the first level is used, not collapsed
    half = x.astype(np.float16)  # a large catalog's storage (half_storage): read as is, the same codes
    with monkeypatch.context() as m:
        m.setattr(np, "asarray", _no_float32_copy_of(half, np.asarray))
        from_half = T.train_codebook(half, paths, cfg)[0]
    assert np.array_equal(from_half.encode(half), T.train_codebook(half.astype(np.float32), paths, cfg)[0].encode(half))


def _no_float32_copy_of(array: np.ndarray, asarray):
    """np.asarray that refuses to make a float32 copy of all of ``array``."""
    def guarded(a, *args, **kwargs):
        out = asarray(a, *args, **kwargs)
        if a is array and out.dtype == np.float32:
            raise AssertionError("a float32 copy of the whole catalog")
        return out
    return guarded


def test_category_paths_from_arrow_number_the_nodes_as_python_lists():
    """encode_paths on a list<string> column (what build_semids passes, no Python list per product): the same
    node ids as on Python lists, with empty and missing paths, a shared root, repeated names at several depths."""
    from semid.contrastive import encode_paths

    rng = np.random.default_rng(6)
    for trial in range(12):
        n = int(rng.integers(1, 2_000))
        words = [f"w{i}" for i in range(int(rng.integers(1, 12)))]
        paths = [None if r < 0.05 else [] if r < 0.1 else
                 [words[int(rng.integers(len(words)))] for _ in range(int(rng.integers(1, 5)))]
                 for r in rng.random(n)]
        if trial % 3 == 0:
            paths = [None if p is None else ["root", *p] for p in paths]
        column = pa.array(paths, pa.list_(pa.string()))
        want = encode_paths(paths, n)
        np.testing.assert_array_equal(encode_paths(column, n), want)
        np.testing.assert_array_equal(encode_paths(pa.chunked_array([column[: n // 2], column[n // 2:]]), n), want)


def test_a_large_catalogs_unit_vectors_are_kept_in_half_precision(tmp_path, monkeypatch):
    """Above HALF_ROWS products the catalog's unit-length vectors (the column read, the joined text and
    co-purchase ones) are float16, half the memory; the embeddings files still hold float32, and the codebook
    trains on them without a float32 copy of the catalog."""
    import semid.embeddings as emb
    from semid.collab import combine, combine_file
    from semid.embeddings import EmbeddingConfig, embed_catalog, read_embeddings, write_embeddings
    from semid.catalog import read_items

    monkeypatch.setattr(emb, "HALF_ROWS", 1_000)
    rng = np.random.default_rng(6)
    n = 3_000
    vec = rng.standard_normal((n, 24)).astype(np.float32)
    items = pa.table({"item_id": np.arange(1, n + 1), "title": [f"t{i}" for i in range(n)],
                      "text": [f"x{i}" for i in range(n)], "vec": pa.array(list(vec), pa.list_(pa.float32()))})
    pq.write_table(items, tmp_path / "items.parquet", row_group_size=700)
    unit = vec / np.linalg.norm(vec, axis=1, keepdims=True)
    text = embed_catalog(read_items(tmp_path, extras=False), tmp_path / "items.parquet",
                         EmbeddingConfig(provider="column", column="vec"))
    assert text.dtype == np.float16
    np.testing.assert_allclose(text, unit, atol=1e-3)
    raw = embed_catalog(read_items(tmp_path, extras=False), tmp_path / "items.parquet",
                        EmbeddingConfig(provider="column", column="vec", normalize=False))
    assert raw.dtype == np.float32  # not unit length: any range, so float32
    ids = np.arange(1, n + 1)
    write_embeddings(ids, text, tmp_path / "text.parquet")
    got_ids, got = read_embeddings(tmp_path / "text.parquet")
    assert got.dtype == np.float32 and (got_ids == ids).all()
    np.testing.assert_array_equal(got, text.astype(np.float32))
    collab = rng.standard_normal((n, 8)).astype(np.float32)
    collab /= np.linalg.norm(collab, axis=1, keepdims=True)
    joined = combine_file(tmp_path / "text.parquet", ids, collab, 0.5)
    assert joined.dtype == np.float16
    np.testing.assert_allclose(joined, combine(got, collab, 0.5), atol=1e-3)


def test_readers_that_need_few_item_columns_read_only_those(tmp_path):
    """Training's index and evaluation read the catalog's ids and facets, not its titles and texts (at 500k
    products those are most of the catalog table held through the decoder's training); such a dataset is
    never written back, and a column outside the contract is refused."""
    from genrec.data.dataset import read_dataset
    from semid.catalog import read_items
    from semid.common import DataError

    n = 50
    items = pa.table({"item_id": np.arange(1, n + 1), "title": [f"t{i}" for i in range(n)],
                      "text": [f"x{i}" for i in range(n)], "first_seen": pa.array([None] * n, pa.int64())})
    pq.write_table(items, tmp_path / "items.parquet")
    events = pa.table({"user_id": [1, 1], "session_id": [1, 2], "ts": [1, 2], "item_id": [1, 2],
                       "position": pa.array([1, 1], pa.int32())})
    pq.write_table(events, tmp_path / "events.parquet")
    ds = read_dataset(tmp_path, item_columns=("item_id", "first_seen"))
    assert ds.items.column_names == ["item_id", "first_seen"]
    assert read_dataset(tmp_path).items.column_names[:3] == ["item_id", "title", "text"]
    with pytest.raises(DataError, match="cannot be written"):
        ds.write(tmp_path / "copy")
    with pytest.raises(ValueError, match="not items.parquet columns"):
        read_items(tmp_path, columns=("item_id", "vector"))
