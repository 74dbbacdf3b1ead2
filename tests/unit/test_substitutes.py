"""Substitutes read off the SIDs: the ranking (shared prefix depth, then cosine, then row), the run-level
lookup within a retailer's stock, and ``genrec semid substitutes``."""
from __future__ import annotations

import numpy as np
import pytest

from genrec.cli import main as cli
from index.retailer_index import RetailerIndex
from semid.common import DataError
from semid.substitutes import Substitutes, rank_substitutes


def test_rank_by_shared_levels_then_cosine():
    codes = np.array([[1, 2, 3, 4],   # the item
                      [1, 2, 3, 9],   # level 3, low cosine
                      [1, 2, 7, 7],   # level 2, high cosine
                      [1, 2, 3, 5],   # level 3, high cosine
                      [5, 5, 5, 5],   # level 0, identical vector
                      [1, 2, 3, 4]])  # level 4 (a collision)
    angle = np.array([0.0, 1.2, 0.1, 0.3, 0.0, 1.5])
    unit = np.stack([np.cos(angle), np.sin(angle)], axis=1)
    rows, depth, cosine = rank_substitutes(codes, unit, 0, k=10)
    assert rows.tolist() == [5, 3, 1, 2, 4] and depth.tolist() == [4, 3, 3, 2, 0]
    assert np.allclose(cosine, np.cos(angle[rows]))
    allowed = np.array([True, True, True, False, True, False])
    assert rank_substitutes(codes, unit, 0, allowed, k=2)[0].tolist() == [1, 2]  # only stocked rows, k of them


def test_run_substitutes_within_stock(tiny_run, capsys):
    run = tiny_run[0] / "run"
    subs = Substitutes.from_run(run)
    index = RetailerIndex.load(run / "index")
    stocked = index.stocked(1)
    item = int(stocked[0])
    ranked = subs.for_item(item, k=8, stocked=stocked)
    assert len(ranked) == 8 and all(r["item_id"] in set(stocked.tolist()) - {item} for r in ranked)
    keys = [(-r["shared_levels"], -r["cosine"]) for r in ranked]
    assert keys == sorted(keys)
    assert ranked[0]["shared_levels"] >= 1
    with pytest.raises(DataError):
        subs.for_item(10**9)
    assert cli(["semid", "substitutes", "--run", str(run), "--item", str(item), "--k", "3", "--retailer-id", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(str(subs.sids[subs.row_of(item)]))
    assert [line.split()[0] for line in lines[2:]] == ["1.", "2.", "3."]
    assert ranked[0]["title"] in lines[2]
    assert cli(["semid", "substitutes", "--run", str(run), "--item", str(item), "--retailer-id", "99"]) == 2


def test_category_share(tiny_run, capsys):
    subs = Substitutes.from_run(tiny_run[0] / "run")
    share = subs.category_share(k=5, sample=100)
    assert share["items"] == 100 and 0 < share["same_category_share"] <= 1
    # planted vectors: a product's leaf is where its nearest neighbours are, well above chance
    chance = max(np.unique(subs.categories, return_counts=True)[1]) / len(subs.categories)
    assert share["nearest_by_embedding_share"] > 3 * chance
    assert cli(["semid", "substitutes", "--run", str(tiny_run[0] / "run"), "--category-share", "--sample", "50"]) == 0
    assert "50 sampled products" in capsys.readouterr().out


def test_top_k_selection_matches_a_full_sort():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 3, size=(500, 3))
    unit = rng.normal(size=(500, 4))
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    unit[10] = unit[11] = unit[12]  # exact cosine ties
    codes[10] = codes[11] = codes[12]
    for row in (0, 10, 250):
        others = np.setdiff1d(np.arange(500), [row])
        depth = np.cumprod(codes[others] == codes[row], axis=1).sum(axis=1)
        cos = unit[others] @ unit[row]
        full = others[np.lexsort((others, -cos, -depth))]
        for k in (1, 5, 37, 499, 600):
            assert rank_substitutes(codes, unit, row, k=k)[0].tolist() == full[:k].tolist()
