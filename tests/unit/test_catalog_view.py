"""The catalog view (``index.catalog_view``) gives the lists the pair forest (``index.forest``) gives, on
generated catalogs with several retailers, products sharing a token row, popularity ties, new and
established products, an emptied retailer and one with no stock at all: candidates (beam, fill, exclusions,
cold-start mixing by prefix and by SID point), the rank stage's sources and features, lookups and exclusion
keys, item for item and in the same order."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from genrec.rank import features
from genrec.rank.candidates import union
from genrec.rank.sources import again_source, beam_source, co_source, row_ranks
from index.candidates import banned_keys, rank_candidates
from index.catalog_view import CatalogView, stocked_ranges
from index.cold import ColdRanker
from index.retailer_index import RetailerIndex

VOCAB = 40


def _catalog(seed: int, n: int = 400, retailers: int = 4, share: float = 0.4) -> RetailerIndex:
    """Products with 3 codes + a dedup token, a few pairs of products on one token row, popularity from a
    few values (ties; 0 for about a fifth: new unless established), retailers 10, 20, ... each stocking a
    random share, retailer 99 emptied by a removal and retailer 7 known but never given stock."""
    rng = np.random.default_rng(seed)
    codes = np.stack([rng.integers(5, 8, n), rng.integers(9, 14, n), rng.integers(17, 22, n)], axis=1)
    codes = codes[np.lexsort(codes.T[::-1])]
    first = np.r_[True, (codes[1:] != codes[:-1]).any(axis=1)]
    idx = np.arange(n)
    dedup = idx - np.maximum.accumulate(np.where(first, idx, 0))
    rows = np.column_stack([codes, 25 + dedup])
    twins = rng.choice(np.flatnonzero(dedup > 0), size=6, replace=False)
    rows[twins] = rows[twins - 1]  # products sharing a whole token row
    ids = rng.permutation(np.arange(100, 100 + 3 * n))[:n]
    pop = rng.choice([0.0, 1.0, 2.0, 5.0, 9.0], size=n, p=[0.2, 0.3, 0.2, 0.2, 0.1])
    ix = RetailerIndex(tokens_per_item=4, vocab_size=VOCAB, codebook_version="cb")
    ix.add(ids, rows, popularity=pop, established=rng.random(n) < 0.3)
    for r in range(retailers):
        ix.add(ids[rng.random(n) < share], retailer_ids=10 * (r + 1))
    ix.add(ids[:1], retailer_ids=99)
    ix.remove(ids[:1], retailer_id=99)
    ix._retailers = np.union1d(ix._retailers, [7])  # a retailer the files list with no stock
    return ix


def _both(ix: RetailerIndex):
    return ix.stock_forest(), ix.catalog_view()


def _decoded(ix: RetailerIndex, rng: np.random.Generator, batch: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Beams [B, W, 4] and scores: catalog rows, rows off the catalog under a catalog prefix, dead beams."""
    rows = ix._rows[rng.integers(0, len(ix), (batch, width))]
    off = rng.random((batch, width)) < 0.25
    rows[off, 3] = rng.integers(25, 40, int(off.sum()))
    scores = -np.sort(rng.random((batch, width)) * 5, axis=1)
    dead = rng.random((batch, width)) < 0.1
    rows[dead] = -1
    scores[dead] = -np.inf
    return rows, scores


def _same(a, b) -> None:
    for name in ("item_ids", "scores", "sids", "from_beam", "sources"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_candidate_lists_equal_the_pair_forests(seed):
    ix = _catalog(seed)
    forest, view = _both(ix)
    assert view.cold_positions.size and view.cold_positions.size < len(ix)
    rng = np.random.default_rng(100 + seed)
    ranker = ColdRanker(rng.normal(size=(VOCAB, 6)).astype(np.float32))
    choices = np.array([None, 10, 20, 30, 40, 99, 7], dtype=object)
    checked = 0
    for _ in range(6):
        batch, width = 12, int(rng.integers(1, 6))
        rows, scores = _decoded(ix, rng, batch, width)
        slots = ix.slots_for(rng.choice(choices, batch).tolist())
        exclude = [rng.choice(ix.item_ids, int(rng.integers(0, 30))) if rng.random() < 0.7 else None
                   for _ in range(batch)]
        last = ix._rows[rng.integers(0, len(ix), batch)]
        last[rng.random(batch) < 0.3] = -1
        for k in (1, 4, 25):  # 25: most lists run short of the beam and fill from prefixes
            for share, cold in ((0.0, None), (0.3, None), (0.3, ranker), (0.5, ranker)):
                want = rank_candidates(forest, rows, scores, slots, k, exclude, share, cold, last)
                got = rank_candidates(view, rows, scores, slots, k, exclude, share, cold, last)
                _same(got, want)
                checked += int((got.sources == 8).sum())
        np.testing.assert_array_equal(view.item_ids[banned_keys(view, slots, exclude, batch) % len(ix)],
                                      forest.item_ids[banned_keys(forest, slots, exclude, batch) % forest.item_ids.size])
    assert checked > 20  # new products did take open slots


@pytest.mark.parametrize("seed", [0, 3])
def test_rank_stage_sources_and_features_equal_the_pair_forests(seed):
    ix = _catalog(seed)
    forest, view = _both(ix)
    rng = np.random.default_rng(seed)
    batch, width = 16, 6
    rows, scores = _decoded(ix, rng, batch, width)
    levels = np.cumsum(-rng.random((batch, width, 4)), axis=2)
    slots = ix.slots_for(rng.choice(np.array([None, 10, 20, 30, 40, 99], dtype=object), batch).tolist())
    histories = [rng.choice(ix.item_ids, int(rng.integers(0, 15))) for _ in range(batch)]
    reach_items = np.sort(rng.choice(ix.item_ids, 150, replace=False))
    reach = sp.random(batch, reach_items.size, density=0.2, format="csr", random_state=seed)
    ranks = row_ranks(reach)
    sets = []
    for lists in (forest, view):
        parts = [(*beam_source(lists, rows, slots)[:2], 1), (*again_source(lists, histories, slots, 5), 2),
                 (*co_source(lists, reach, ranks, reach_items, slots, 20), 4)]
        cs = union(parts, lists.item_ids, batch, lists.item_ids.size)
        ctx = features.QueryContext(histories, rows, levels, reach, reach_items, ranks)
        sets.append(features.compute(cs, ctx, lists))
    want, got = sets
    assert len(got) > 3 * batch and got.names == want.names
    for name in ("query", "item_ids", "sources", "features"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
    beams = [beam_source(lists, rows, slots) for lists in (forest, view)]
    np.testing.assert_array_equal(forest.item_ids[beams[0][1]], view.item_ids[beams[1][1]])
    np.testing.assert_array_equal(beams[0][2], beams[1][2])


def test_lookups_equal_the_pair_forests():
    ix = _catalog(4)
    forest, view = _both(ix)
    keys = np.concatenate([ix._rows, ix._rows[:20] + np.array([0, 0, 0, 9])])
    for retailer in (None, 10, 20, 99, 7):
        slots = ix.slots_for([retailer] * keys.shape[0])
        lo, hi = forest.leaf_items(forest.leaves(keys, slots))
        want = [forest.item_ids[a:b] for a, b in zip(lo.tolist(), hi.tolist())]
        got = ix.lookup(keys, retailer)
        assert [g.tolist() for g in got] == [w.tolist() for w in want]
    sids = list(ix._sids[:10]) + ["nope"]
    assert [g.tolist() for g in ix.lookup(sids, 20)] == [g.tolist() for g in ix.lookup(ix.rows_of(
        ix._ids[:10])[0], 20)] + [[]]


def test_view_positions_and_stock_agree_with_the_index():
    """Each slot's products in the view's order are the forest's slot range, and ``stocked`` is the stock."""
    ix = _catalog(5)
    forest, view = _both(ix)
    assert isinstance(view, CatalogView)
    for slot, retailer in enumerate([None, *ix.retailers.tolist()]):
        lo, hi = forest.slot_items(slot)
        mine = np.flatnonzero(view.stocked(slot, np.arange(len(ix))))
        np.testing.assert_array_equal(view.item_ids[mine], forest.item_ids[lo:hi])
        np.testing.assert_array_equal(np.sort(view.item_ids[mine]), ix.stocked(retailer) if slot else ix.item_ids)
        np.testing.assert_array_equal(view.item_ids[view.cold_of(slot)], forest.item_ids[forest.cold_of(slot)])
    owner, pos = stocked_ranges(view, np.array([0, 5]), np.array([3, 5]), np.array([0, 1]))
    assert owner.tolist() == [0, 0, 0] and pos.tolist() == [0, 1, 2]


def test_updates_drop_the_view():
    ix = _catalog(6)
    view = ix.catalog_view()
    assert ix.catalog_view() is view
    ix.remove(ix.item_ids[:3], retailer_id=10)
    assert ix.catalog_view() is not view
