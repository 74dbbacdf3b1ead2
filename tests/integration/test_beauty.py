"""The real Amazon Beauty data in ../shared/data/amazon-beauty (the ``shared_data`` fixture): the importer
reproduces the S3-Rec / P5 / TIGER sequences exactly, the leave-one-out split and the dataset statistics have
the published counts, and the baselines reach their bars: most-popular exactly, item-kNN (slow) at least the
published figure."""
from __future__ import annotations

import gzip
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from genrec.cli import main
from genrec.data.importers.amazon import import_amazon
from genrec.data.sequences import SequenceConfig, build_histories, make_splits
from genrec.data.stats import dataset_stats, format_stats
from genrec.evaluation.harness import evaluate

USERS, ITEMS, EVENTS = 22_363, 12_101, 198_502


# --- the importer -------------------------------------------------------------------------------------------

def test_real_beauty_counts(beauty_import):
    ds, out, seconds = beauty_import
    print(f"beauty import: {seconds:.2f} s")
    user = ds.events.column("user_id").to_numpy()
    assert np.unique(user).size == USERS
    assert ds.items.num_rows == ITEMS
    assert ds.events.num_rows == EVENTS
    assert np.unique(ds.events.column("item_id").to_numpy()).size == ITEMS
    assert ds.items.column("item_id").to_pylist() == list(range(1, ITEMS + 1))


def test_real_beauty_sequences_match_s3rec(beauty_import, shared_data: Path):
    """Every user's sequence, in order, equals the S3-Rec integer file (ids from the P5 datamaps); one session a
    user, ts = position = 0..n-1."""
    ds, _, _ = beauty_import
    with gzip.open(shared_data / "amazon-beauty" / "s3rec_Beauty.txt.gz", "rt") as f:
        expected = {int(p[0]): [int(x) for x in p[1:]] for p in (line.split() for line in f if line.strip())}
    e = ds.events.sort_by([("user_id", "ascending"), ("ts", "ascending")])
    column = lambda name: e.column(name).to_numpy()  # noqa: E731
    assert (column("session_id") == column("user_id")).all() and (column("ts") == column("position")).all()
    got: dict[int, list[int]] = {}
    for user, item in zip(e.column("user_id").to_pylist(), e.column("item_id").to_pylist()):
        got.setdefault(user, []).append(item)
    assert got == expected
    assert got[100] == [1093, 1094, 1095, 1096, 521, 1097, 1015, 1098, 1099, 20, 523, 900, 1100]


def test_real_beauty_items(beauty_import):
    ds, _, _ = beauty_import
    items = {i["item_id"]: i for i in ds.items.slice(0, 30).to_pylist()}
    assert items[1]["brand"] == "OPI" and items[1]["category_path"] == ["Makeup", "Nails", "Nail Polish"]
    assert items[1]["title"] == "nail lacquer simmer and shimmer"
    assert items[3]["brand"] is None  # "Unknown" in the data
    assert items[4]["brand"] is None and items[4]["category_path"] == ["Makeup", "Face", "Concealers & Neutralizers"]
    assert items[22]["brand"] == "L'Oreal Paris"
    assert set(ds.meta["choices"]["top_level_categories"]) == {
        "Skin Care", "Hair Care", "Makeup", "Tools & Accessories", "Bath & Body", "Fragrance"}
    roots = {p[0] for p in ds.items.column("category_path").to_pylist()}
    assert roots == set(ds.meta["choices"]["top_level_categories"])
    assert ds.meta["counts"]["brands"] == 436 and ds.meta["counts"]["empty_phrases"] == 1


def test_real_beauty_without_datamaps_or_attributes(beauty_import, shared_data: Path, tmp_path: Path):
    """With only the two required files, first-appearance ids equal the P5 ids; no brands, no paths."""
    ds, _, _ = beauty_import
    src = tmp_path / "src"
    src.mkdir()
    for name in ("gram_user_sequence_asin.txt.gz", "idgenrec_item_textual_id.txt.gz"):
        shutil.copy(shared_data / "amazon-beauty" / name, src / name)
    bare = import_amazon(src, tmp_path / "out")
    assert bare.events.equals(ds.events)
    assert bare.items.column("item_id").equals(ds.items.column("item_id"))
    assert bare.items.column("brand").null_count == ITEMS


def test_real_beauty_cli(shared_data: Path, tmp_path: Path, capsys):
    start = time.perf_counter()
    argv = ["data", "import", "amazon", "--src", str(shared_data / "amazon-beauty"), "--out", str(tmp_path / "b")]
    assert main(argv) == 0
    print(f"beauty CLI import: {time.perf_counter() - start:.2f} s")
    assert "12,101 items, 198,502 events" in capsys.readouterr().out
    assert {p.name for p in (tmp_path / "b").iterdir()} == {"items.parquet", "events.parquet", "meta.json"}


# --- the split and the statistics ---------------------------------------------------------------------------

def test_leave_one_out_counts(beauty_import):
    ds = beauty_import[0]
    s = make_splits(build_histories(ds.events), max_items=20, cfg=SequenceConfig(split="auto"))
    assert len(s.test) == len(s.validation) == USERS
    assert s.train.target_items.size == EVENTS - 3 * USERS  # every train item but each user's first
    assert np.diff(s.test.history_offsets).max() == 20


def test_real_stats(beauty_import):
    am = dataset_stats(beauty_import[1])
    assert (am["counts"]["users"], am["counts"]["items"], am["counts"]["events"]) == (USERS, ITEMS, EVENTS)
    assert am["counts"]["sessions"] == USERS
    assert am["distributions"]["events_per_user"]["min"] == 5  # 5-core
    assert am["distributions"]["interactions_per_item"]["min"] == 5
    assert am["never_interacted_share"] == 0.0
    assert am["counts"]["categories_per_level"][0] == 6
    assert "Skin Care" in format_stats(am)


# --- the baselines' bars ------------------------------------------------------------------------------------

def test_popular_on_real_beauty(beauty_import):
    _, out, _ = beauty_import
    result = evaluate(out, None, ["popular"], seed=0)
    m = result["models"]["popular"]
    assert result["protocol"]["test_examples"] == USERS and result["protocol"]["catalog_items"] == ITEMS
    # popularity is weak on Beauty leave-one-out: the same 10 products for everyone hit 258 of 22,363 test
    # items (ties in popularity go to the lower id, so the figures are exact)
    assert m["recall@10"] == pytest.approx(258 / 22363, abs=1e-12)
    assert m["recall@5"] == pytest.approx(167 / 22363, abs=1e-12)
    assert m["ndcg@10"] == pytest.approx(0.0054561, abs=1e-7)


@pytest.mark.slow
def test_itemknn_reaches_its_bar_on_real_beauty(beauty_import):
    _, out, _ = beauty_import
    result = evaluate(out, None, ["itemknn"], seed=0)
    m = result["models"]["itemknn"]
    assert m["recall@10"] >= 0.082 and m["ndcg@10"] >= 0.050, m
