"""Collaborative item vectors (semid.collab) and their use in a run's Semantic IDs: shapes, determinism,
no leak of validation / test targets, cold products, the config keys, and a run built with them."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from genrec.data.copurchase import collab_embeddings, training_sequences
from genrec.data.sequences import Examples, SequenceConfig
from genrec.run.config import RunConfig, load_run_config
from genrec.run.layout import EMBEDDINGS_FILE, TEXT_EMBEDDINGS_FILE
from genrec.run.semids import assign_new_items, build_semids, embed_new_items, evaluate_semids, heldout_pairs
from semid.collab import combine, cooccurrence
from semid.common import DataError
from semid.config import ConfigError, from_dict
from semid.embeddings import EmbeddingConfig, embed_items, l2_normalize, read_embeddings

LOO = SequenceConfig(split="leave_one_out")


def events_table(histories: list[list[int]], basket: int = 1) -> pa.Table:
    """Events of one shopper per history, items in order, ``basket`` items per session."""
    user = np.concatenate([np.full(len(h), u, np.int64) for u, h in enumerate(histories)])
    pos = np.concatenate([np.arange(len(h)) for h in histories])
    return pa.table({
        "user_id": pa.array(user),
        "session_id": pa.array(user * 1000 + pos // basket),
        "ts": pa.array((pos // basket).astype(np.int64)),
        "item_id": pa.array(np.concatenate([np.asarray(h, np.int64) for h in histories])),
        "position": pa.array((pos % basket).astype(np.int32)),
    })


def clustered_histories(n_groups: int = 4, per_group: int = 10, users: int = 120, length: int = 8,
                        seed: int = 0) -> list[list[int]]:
    """Each shopper buys only from one group of products: item g * per_group + k belongs to group g."""
    rng = np.random.default_rng(seed)
    groups = rng.integers(0, n_groups, users)
    return [(g * per_group + rng.integers(0, per_group, length)).tolist() for g in groups]


def test_shapes_unit_rows_and_float32():
    hist = clustered_histories()
    ids = np.arange(40, dtype=np.int64)[::-1]  # any catalog order
    vecs = collab_embeddings(events_table(hist), ids, LOO, dim=8, window=3, seed=0)
    assert vecs.shape == (40, 8) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)


def test_deterministic_for_a_seed():
    events, ids = events_table(clustered_histories()), np.arange(40)
    a = collab_embeddings(events, ids, LOO, dim=8, window=3, seed=5)
    b = collab_embeddings(events, ids, LOO, dim=8, window=3, seed=5)
    np.testing.assert_array_equal(a, b)


def test_copurchased_items_are_neighbours():
    vecs = collab_embeddings(events_table(clustered_histories()), np.arange(40), LOO, dim=8, window=3, seed=0)
    cos = vecs @ vecs.T
    group = np.arange(40) // 10
    same = (group[:, None] == group[None, :]) & ~np.eye(40, dtype=bool)
    assert cos[same].mean() > 0.8
    assert cos[group[:, None] != group[None, :]].mean() < 0.2


def test_dim_beyond_catalog_pads_with_zero_columns():
    vecs = collab_embeddings(events_table([[1, 2, 3, 1, 2, 3]]), np.array([1, 2, 3]), LOO, dim=6, window=1, seed=0)
    assert vecs.shape == (3, 6)
    assert not vecs[:, 3:].any()


def test_items_without_interactions_get_zero_vectors():
    hist = clustered_histories()
    ids = np.arange(50)  # 40..49 are never bought
    vecs = collab_embeddings(events_table(hist), ids, LOO, dim=8, window=3, seed=0)
    assert not vecs[40:].any()
    assert np.all(np.linalg.norm(vecs[:40], axis=1) > 0.99)


def test_training_sequences_hold_out_validation_and_test_targets():
    hist = [[1, 2, 3, 4, 5], [6, 7, 8], [9, 10]]
    seqs = training_sequences(events_table(hist), LOO)
    got = [seqs.history(i).tolist() for i in range(len(seqs))]
    assert got == [[1, 2, 3]]  # [6] and [9] alone train nothing: no pair, no training window


def test_held_out_targets_never_contribute():
    """Changing every shopper's validation and test items changes no vector, and items bought only as
    held-out targets have zero vectors."""
    rng = np.random.default_rng(1)
    hist = clustered_histories(users=80, length=6)
    ids = np.arange(200)
    swapped = [h[:-2] + rng.integers(100, 200, 2).tolist() for h in hist]
    a = collab_embeddings(events_table(hist), ids, LOO, dim=8, window=5, seed=0)
    b = collab_embeddings(events_table(swapped), ids, LOO, dim=8, window=5, seed=0)
    np.testing.assert_array_equal(a, b)
    assert not b[100:].any()


def test_held_out_baskets_never_contribute():
    """last_basket split: the last two baskets of each shopper are held out as a whole."""
    rng = np.random.default_rng(2)
    hist = clustered_histories(users=80, length=9)
    swapped = [h[:-6] + rng.integers(100, 200, 6).tolist() for h in hist]
    cfg = SequenceConfig(split="last_basket")
    ids = np.arange(200)
    a = collab_embeddings(events_table(hist, basket=3), ids, cfg, dim=8, window=3, seed=0)
    b = collab_embeddings(events_table(swapped, basket=3), ids, cfg, dim=8, window=3, seed=0)
    np.testing.assert_array_equal(a, b)
    assert not b[100:].any() and a[:40].any()


def test_cooccurrence_counts_pairs_within_the_window_both_ways():
    # shopper 0 bought 10, 11, 12, 10; shopper 1 bought 12, 13
    seqs = Examples(np.array([0, 1]), np.array([0, 4, 6]), np.array([10, 11, 12, 10, 12, 13]),
                    np.zeros(3, np.int64), np.zeros(0, np.int64), np.full(2, -1))
    catalog = np.array([10, 11, 12, 13])
    expected = np.array([
        [0, 2, 2, 0],  # 10-11 adjacent and (11 .. 10) two apart; 10-12 (12, 10) adjacent and (10 .. 12) two apart
        [2, 0, 1, 0],  # 11-13 never in one shopper's sequence
        [2, 1, 0, 1],
        [0, 0, 1, 0],
    ])
    counts = lambda window: cooccurrence(seqs.history_offsets, seqs.history_items, catalog, window).toarray()  # noqa: E731
    np.testing.assert_array_equal(counts(2), expected)
    adjacent = counts(1)
    assert adjacent[0, 1] == 1 and adjacent[0, 2] == 1
    assert not np.diag(counts(3)).any()  # 10 .. 10 is no pair


def test_unknown_event_item_is_a_data_error():
    with pytest.raises(DataError, match="not in the catalog"):
        collab_embeddings(events_table([[1, 4, 2, 3, 3]]), np.array([1, 2, 3]), LOO, dim=4, window=1, seed=0)


def test_bad_dim_or_window_is_a_data_error():
    events = events_table([[1, 2, 3, 4]])
    with pytest.raises(DataError, match="dim"):
        collab_embeddings(events, np.arange(1, 5), LOO, dim=0, window=1, seed=0)
    with pytest.raises(DataError, match="window"):
        collab_embeddings(events, np.arange(1, 5), LOO, dim=4, window=0, seed=0)


def test_combine_gives_the_collab_part_its_share_of_squared_norm():
    rng = np.random.default_rng(0)
    text = rng.normal(size=(5, 6)) * 3.0
    collab = l2_normalize(rng.normal(size=(5, 4)))
    collab[4] = 0.0  # a product nobody bought
    out = combine(text, collab, 0.3)
    assert out.shape == (5, 10) and out.dtype == np.float32
    np.testing.assert_allclose(np.sum(out[:4, 6:] ** 2, axis=1), 0.3, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(out[:4], axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(out[4, :6], np.sqrt(0.7) * l2_normalize(text[4:5])[0], rtol=1e-5)
    assert not out[4, 6:].any()
    with pytest.raises(DataError, match="collab_weight"):
        combine(text, collab, 1.0)


def test_config_keys_load_from_yaml_and_are_checked(tmp_path: Path):
    path = tmp_path / "run.yaml"
    path.write_text("embedding:\n  collab_weight: 0.5\n  collab_dim: 32\n  collab_window: 4\n")
    cfg = load_run_config(path)
    assert (cfg.embedding.collab_weight, cfg.embedding.collab_dim, cfg.embedding.collab_window) == (0.5, 32, 4)
    assert EmbeddingConfig().collab_weight == 0.0
    for bad in ({"collab_weight": 1.0}, {"collab_weight": -0.1}, {"collab_dim": 0}, {"collab_window": 0}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            from_dict(RunConfig, {"embedding": bad})


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> tuple[Path, RunConfig]:
    """A small synthetic dataset with precomputed vectors and a config that trains a codebook in seconds."""
    from genrec.run.tiny import tiny_config, tiny_world

    root = tmp_path_factory.mktemp("collab")
    tiny_world(seed=4, items=200, users=120, retailers=1).write(root / "data")
    cfg = tiny_config("collab")
    cfg.semid.epochs = 2
    return root, cfg


def test_collab_weight_zero_keeps_the_text_embeddings(world):
    root, cfg = world
    build_semids(root / "data", cfg, root / "plain")
    ids, vecs = read_embeddings(root / "plain" / EMBEDDINGS_FILE)
    items = pq.read_table(root / "data" / "items.parquet")
    np.testing.assert_array_equal(ids, items.column("item_id").to_numpy())
    np.testing.assert_array_equal(vecs, embed_items(items, cfg.embedding))
    assert not (root / "plain" / TEXT_EMBEDDINGS_FILE).exists()


def test_run_with_collab_trains_and_assigns_cold_start_sids(world):
    root, base = world
    from genrec.run.build import train_run
    from semid.store import load_codebook, read_sids

    cfg = copy.deepcopy(base)
    cfg.embedding.collab_weight, cfg.embedding.collab_dim = 0.4, 8
    cfg.decoder.d_model, cfg.decoder.n_layers, cfg.decoder.n_heads, cfg.decoder.d_ff = 32, 1, 2, 64
    cfg.train.epochs, cfg.train.eval_examples, cfg.train.progress, cfg.train.warmup_steps = 1, 40, False, 5
    result = train_run(root / "data", cfg, root / "collab")  # SIDs, tokenizer, index, decoder
    assert result.epochs_completed == 1 and result.steps > 0 and (root / "collab" / "decoder" / "model").is_dir()
    ids, vecs = read_embeddings(root / "collab" / EMBEDDINGS_FILE)
    _, text = read_embeddings(root / "collab" / TEXT_EMBEDDINGS_FILE)
    assert vecs.shape == (ids.size, 24) and load_codebook(root / "collab").input_dim == 24
    np.testing.assert_allclose(vecs[:, :16], np.sqrt(0.6) * l2_normalize(text), rtol=1e-5, atol=1e-6)
    warm = np.any(vecs[:, 16:] != 0, axis=1)
    assert warm.mean() > 0.5
    np.testing.assert_allclose(np.sum(vecs[warm, 16:] ** 2, axis=1), 0.4, rtol=1e-4)
    assert read_sids(root / "collab").num_rows == ids.size

    new = pa.table({"item_id": pa.array([10_001, 10_002], pa.int64()), "title": ["a", "b"], "text": ["a", "b"],
                    "category_path": pa.array([["x"], ["y"]], pa.list_(pa.string())),
                    "vec": pa.array([np.ones(16), np.arange(16.0)], pa.list_(pa.float32()))})
    pq.write_table(new, root / "new_items.parquet")
    assigned = assign_new_items(root / "collab", root / "new_items.parquet")  # config read from the run
    assert sorted(assigned.column("item_id").to_pylist()) == [10_001, 10_002]
    new_vecs = embed_new_items(new, cfg)
    assert new_vecs.shape == (2, 24) and not new_vecs[:, 16:].any()  # no run to borrow from: text only
    borrowed = embed_new_items(new, cfg, root / "collab")  # the run's text neighbours lend their co-purchases
    np.testing.assert_allclose(np.sum(borrowed[:, 16:] ** 2, axis=1), 0.4, rtol=1e-4)
    np.testing.assert_allclose(borrowed[:, :16], new_vecs[:, :16])


def test_heldout_pairs_are_each_validation_target_after_the_last_history_item(world):
    _, cfg = world
    loo = copy.deepcopy(cfg)
    loo.sequence.split = "leave_one_out"  # validation: the second-last item after the ones before it
    left, right = heldout_pairs(events_table([[1, 2, 3, 4, 5], [7, 8, 9], [6, 6]]), loo)
    assert (left.tolist(), right.tolist()) == ([3, 7], [4, 8])  # [6, 6] has no history before its target
    baskets = copy.deepcopy(cfg)
    baskets.sequence.split = "last_basket"  # validation: the second-last basket after the baskets before it
    left, right = heldout_pairs(events_table([[1, 2, 3, 4, 5, 6]], basket=2), baskets)
    assert (left.tolist(), right.tolist()) == ([2, 2], [3, 4])


def test_semid_eval_measures_copurchase_sharing(world, tmp_path, caplog):
    root, base = world
    shares = {}
    for weight in (0.0, 0.9):
        cfg = copy.deepcopy(base)
        cfg.embedding.collab_weight, cfg.embedding.collab_dim = weight, 8
        build_semids(root / "data", cfg, tmp_path / f"w{weight}")
        m = evaluate_semids(tmp_path / f"w{weight}")
        assert m["n_copurchase_pairs"] > 500 and len(m["copurchase_share"]) == len(m["copurchase_share_chance"]) == 3
        shares[weight] = m["copurchase_share"]
    # co-purchase vectors put what is bought next under the prefix of what was bought before
    assert shares[0.9][0] > shares[0.0][0]
    moved = tmp_path / "w0.9"
    (moved / "dataset.json").write_text('{"path": "%s"}' % (tmp_path / "gone"))
    assert "copurchase_share" not in evaluate_semids(moved)  # its dataset is gone: left out, with a warning
    assert "dataset" in caplog.text and "gone" in caplog.text
    assert evaluate_semids(moved, data=root / "data")["copurchase_share"] == shares[0.9]


def test_products_without_co_purchases_borrow_their_text_neighbours_vectors():
    from semid.collab import fill_missing, impute_from_text

    text = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9], [1, 0.05]], np.float32)
    collab = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1], [0, 0, 0]], np.float32)
    filled = fill_missing(text, collab, neighbours=2)
    np.testing.assert_allclose(filled[:4], collab[:4])
    np.testing.assert_allclose(filled[4], [2 ** -0.5, 2 ** -0.5, 0], atol=1e-6)  # mean of rows 0 and 1
    assert not fill_missing(text, collab, neighbours=0)[4].any()
    near_c = impute_from_text(np.array([[0, 1]], np.float32), text[:4], collab[:4], neighbours=2)
    np.testing.assert_allclose(near_c, [[0, 0, 1]], atol=1e-6)


def test_refresh_script_migrates_a_run_built_without_imputation(world, tmp_path, load_script):
    """scripts/refresh_uncovered_sids.py: in a copy of a collaborative run whose products without
    co-purchases had a zero part, those products get a borrowed part and new SIDs; nothing else changes."""
    from genrec.run.build import train_run
    from genrec.retriever import Retriever
    from semid.store import read_sids

    root, base = world
    cfg = copy.deepcopy(base)
    cfg.embedding.collab_weight, cfg.embedding.collab_dim, cfg.embedding.collab_impute = 0.4, 8, 0
    cfg.decoder.d_model, cfg.decoder.n_layers, cfg.decoder.n_heads, cfg.decoder.d_ff = 32, 1, 2, 64
    cfg.train.epochs, cfg.train.eval_examples, cfg.train.progress, cfg.train.warmup_steps = 1, 40, False, 5
    train_run(root / "data", cfg, tmp_path / "old")
    ids, old_vecs = read_embeddings(tmp_path / "old" / EMBEDDINGS_FILE)
    bare = ~np.any(old_vecs[:, 16:] != 0, axis=1)
    assert 0 < bare.sum() < ids.size

    script = load_script("scripts/refresh_uncovered_sids.py")
    assert script.refresh(tmp_path / "old", tmp_path / "new") == bare.sum()

    _, new_vecs = read_embeddings(tmp_path / "new" / EMBEDDINGS_FILE)
    np.testing.assert_allclose(np.sum(new_vecs[:, 16:] ** 2, axis=1), 0.4, rtol=1e-4)
    np.testing.assert_array_equal(new_vecs[~bare], old_vecs[~bare])
    old, new = (dict(zip(*read_sids(tmp_path / r).select(["item_id", "sid"]).to_pydict().values()))
                for r in ("old", "new"))
    assert all(old[i] == new[i] for i in ids[~bare].tolist())
    retriever = Retriever.from_run(tmp_path / "new", beam_width=4)
    out = retriever.retrieve_arrays([ids[:3]], None, k=5)
    assert (out.item_ids >= 0).all()
    with pytest.raises(SystemExit, match="exists"):
        script.refresh(tmp_path / "old", tmp_path / "new")
