"""Data preparation out of core on DuckDB (genrec.data.outofcore) against the in-memory path on generated data:
the training sequences, the directed pair counts and the co-occurrence count matrix must be identical, for
both splits, shoppers of one, two and three units, ties in the event order and events listed out of order;
the SID stage's collaborative vectors must be identical whichever engine counted."""
from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from genrec.data import outofcore as ooc
from genrec.data.copurchase import (collab_embeddings, collab_embeddings_from_dataset, pair_counts,
                                    training_sequences)
from genrec.data.dataset import read_events
from genrec.data.sequences import SequenceConfig
from genrec.data.synth.scale import write_scale_world
from genrec.data.synth.scale_config import ScaleConfig
from semid.collab import cooccurrence
from semid.common import DataError
from semid.config import ConfigError

WORLD = ScaleConfig(seed=5, products=3000, retailers=4, events=30_000, departments=4, aisles_per_department=3,
                    leaves_per_aisle=5, block=256)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A generated world (baskets of several items: last_basket) with its catalog in file order."""
    out = tmp_path_factory.mktemp("ooc") / "world"
    write_scale_world(WORLD, out, show_progress=False)
    catalog = pq.read_table(out / "items.parquet", columns=["item_id"]).column("item_id").to_numpy()
    return out, catalog


def _edge_events() -> pa.Table:
    """Shoppers of one, two, three and four baskets, a repeat purchase, ties in (ts, session, position) resolved
    by file order, rows listed out of order, one-item baskets for one shopper."""
    rows = [  # user, session, ts, item, position
        (1, 10, 1, 5, 0),  # one basket: all training
        (1, 10, 1, 6, 1),
        (2, 21, 2, 7, 0), (2, 20, 1, 5, 0), (2, 20, 1, 8, 1),  # two baskets: the last held out
        (3, 30, 1, 5, 0), (3, 30, 1, 5, 1), (3, 31, 2, 9, 0), (3, 32, 3, 6, 0),  # three: two held out
        (4, 40, 1, 8, 0), (4, 40, 1, 9, 0), (4, 40, 1, 7, 0),  # a tie in position: file order decides
        (4, 41, 2, 6, 0), (4, 42, 3, 5, 0), (4, 43, 4, 7, 0),
        (5, 50, 1, 9, 0), (5, 51, 2, 8, 0), (5, 52, 3, 7, 0), (5, 53, 4, 6, 0), (5, 54, 5, 5, 0),
    ]
    cols = list(zip(*rows))
    return pa.table({"user_id": pa.array(cols[0], pa.int64()), "session_id": pa.array(cols[1], pa.int64()),
                     "ts": pa.array(cols[2], pa.int64()), "item_id": pa.array(cols[3], pa.int64()),
                     "position": pa.array(cols[4], pa.int32())})


def _same_csr(a, b) -> None:
    a, b = a.tocsr(), b.tocsr()
    assert a.shape == b.shape
    for name in ("indptr", "indices", "data"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name


def _steps(tmp_path, events_path, split: str, window: int):
    """The DuckDB steps on one connection: (resolved split, sequences table, pairs table, connection)."""
    con = ooc.connect(tmp_path / "db.duckdb", "256MB", 2)
    split = ooc.number_sessions(con, events_path, split)
    ooc.training_rows(con, split, window)
    ooc.write_sequences(con, tmp_path / "seq.parquet")
    ooc.write_pair_counts(con, tmp_path / "pairs.parquet", window)
    return split, pq.read_table(tmp_path / "seq.parquet"), pq.read_table(tmp_path / "pairs.parquet"), con


def _check_against_memory(tmp_path, events_path, catalog, split, window):
    events = pq.read_table(events_path)
    resolved, seq_table, pairs_table, con = _steps(tmp_path, events_path, split, window)
    memory = training_sequences(events, SequenceConfig(split=split))
    # sequences: every shopper, every item, in order
    got = {u: items for u, items in zip(seq_table.column("user_id").to_pylist(), seq_table.column("items").to_pylist())}
    want = {int(memory.user_ids[i]): memory.history(i).tolist() for i in range(len(memory))}
    assert got == want
    # directed pair counts per distance, in item ids
    sorted_catalog = np.unique(catalog)
    want_pairs = {}
    for d, m in enumerate(pair_counts(memory, sorted_catalog, window), start=1):
        m = m.tocoo()
        for a, b, n in zip(sorted_catalog[m.row], sorted_catalog[m.col], m.data):
            want_pairs[(d, int(a), int(b))] = int(n)
    got_pairs = {(d, a, b): n for d, a, b, n in zip(*(pairs_table.column(k).to_pylist() for k in ("d", "a", "b", "n")))}
    assert got_pairs == want_pairs
    # the co-occurrence matrix, array for array
    _same_csr(ooc.cooccurrence_counts(con, catalog, window),
              cooccurrence(memory.history_offsets, memory.history_items, catalog, window))
    con.close()
    return resolved


@pytest.mark.parametrize("window", [1, 3])
def test_generated_world_equals_the_in_memory_path(world, tmp_path, window):
    folder, catalog = world
    assert _check_against_memory(tmp_path, folder / "events.parquet", catalog, "auto", window) == "last_basket"


@pytest.mark.parametrize("split", ["last_basket", "leave_one_out"])
def test_edge_cases_equal_the_in_memory_path(tmp_path, split):
    path = tmp_path / "events.parquet"
    pq.write_table(_edge_events(), path)
    catalog = np.array([9, 5, 7, 6, 8, 4], np.int64)  # any order; 4 is never bought
    _check_against_memory(tmp_path, path, catalog, split, 2)


def test_auto_resolves_to_leave_one_out_for_one_item_sessions(tmp_path):
    ev = _edge_events()
    ev = ev.set_column(1, "session_id", pa.array(np.arange(ev.num_rows, dtype=np.int64)))
    ev = ev.set_column(2, "ts", pa.array(np.arange(ev.num_rows, dtype=np.int64)))
    path = tmp_path / "events.parquet"
    pq.write_table(ev, path)
    assert _check_against_memory(tmp_path, path, np.arange(4, 10), "auto", 3) == "leave_one_out"


def test_copurchase_counts_and_collab_vectors_match_memory(world, tmp_path):
    folder, catalog = world
    events = read_events(folder)
    seqs = training_sequences(events, SequenceConfig())
    want = cooccurrence(seqs.history_offsets, seqs.history_items, catalog, 3)
    _same_csr(ooc.copurchase_counts(folder / "events.parquet", catalog, "auto", 3, temp_dir=tmp_path), want)
    memory_cfg = SequenceConfig(counts_engine="memory")
    duck_cfg = SequenceConfig(counts_engine="duckdb", counts_memory_limit="128MB")
    vectors, info = collab_embeddings_from_dataset(folder, catalog, duck_cfg, 16, 3, seed=0)
    assert info == {"engine": "duckdb", "events": WORLD.events}
    same, info = collab_embeddings_from_dataset(folder, catalog, memory_cfg, 16, 3, seed=0)
    assert info["engine"] == "memory"
    assert np.array_equal(vectors, same)
    assert np.array_equal(vectors, collab_embeddings(events, catalog, SequenceConfig(), 16, 3, seed=0))
    # a catalog mostly never bought (a large catalog, few events): the two engines still give the same vectors
    sparse = np.r_[catalog, catalog.max() + 1 + np.arange(5 * catalog.size)]
    vectors, _ = collab_embeddings_from_dataset(folder, sparse, duck_cfg, 16, 3, seed=0)
    assert np.array_equal(vectors, collab_embeddings(events, sparse, SequenceConfig(), 16, 3, seed=0))


def test_engine_choice_and_config():
    assert ooc.resolve_engine("auto", ooc.OUT_OF_CORE_EVENTS - 1) == "memory"
    assert ooc.resolve_engine("auto", ooc.OUT_OF_CORE_EVENTS) == "duckdb"
    assert ooc.resolve_engine("memory", 10**10) == "memory"
    assert SequenceConfig().counts_engine == "auto"
    with pytest.raises(ConfigError):
        SequenceConfig(counts_engine="spark")
    with pytest.raises(DataError):
        ooc.resolve_engine("spark", 1)


def test_unknown_items_and_missing_columns_are_data_errors(world, tmp_path):
    folder, catalog = world
    ids, counts = np.unique(read_events(folder).column("item_id").to_numpy(), return_counts=True)
    popular = ids[counts.argmax()]  # surely in some training sequence
    with pytest.raises(DataError, match="not in the catalog"):
        ooc.copurchase_counts(folder / "events.parquet", catalog[catalog != popular], "auto", 3, temp_dir=tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    pq.write_table(read_events(folder).drop(["position"]), bad / "events.parquet")
    cfg = dataclasses.replace(SequenceConfig(), counts_engine="duckdb")
    with pytest.raises(DataError, match="position"):
        collab_embeddings_from_dataset(bad, catalog, cfg, 8, 3, seed=0)
