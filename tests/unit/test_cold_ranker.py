"""Cold-start mixing by SID point (``index.cold``): token vectors from codebooks, query points from beams and
history, the nearest new products in the last slots, per retailer, with exclusions; and a run's retriever
builds its ranker from the run's codebook."""
from __future__ import annotations

import numpy as np
import pytest

from index.cold import ColdRanker, top_cold
from index.retailer_index import RetailerIndex
from semid.common import DataError

VOCAB = 12  # level 0: tokens 1-3, level 1: tokens 4-6, dedup: 7-8


def _ranker(history_weight: float = 0.0) -> ColdRanker:
    """Level 0 codewords point along x, y, -x; level 1 adds a small z, -z or nothing."""
    level0 = np.array([[1, 0, 0], [0, 1, 0], [-1, 0, 0]], np.float32)
    level1 = np.array([[0, 0, 0.3], [0, 0, -0.3], [0, 0, 0]], np.float32)
    return ColdRanker.from_codewords([level0, level1], [1, 4], VOCAB, history_weight)


def _index() -> RetailerIndex:
    """Warm products 10-12, new products 20-23 (popularity 0); retailer 1 stocks 10, 11, 20, 21 only."""
    ix = RetailerIndex(tokens_per_item=3, vocab_size=VOCAB, codebook_version="cb-c")
    rows = np.array([[1, 4, 7], [2, 4, 7], [3, 4, 7], [1, 5, 7], [2, 5, 7], [3, 5, 7], [1, 4, 8]])
    ix.add([10, 11, 12, 20, 21, 22, 23], rows, popularity=[5, 4, 3, 0, 0, 0, 0])
    ix.add([10, 11, 20, 21], retailer_ids=[1, 1, 1, 1])
    return ix


def test_token_vectors_sum_codewords_and_ignore_dedup_tokens():
    r = _ranker()
    assert r.token_vectors.shape == (VOCAB, 3) and not r.token_vectors[[0, 7, 8]].any()
    np.testing.assert_allclose(r.points(np.array([[1, 4, 7]])), [[1 / np.sqrt(1.09), 0, 0.3 / np.sqrt(1.09)]],
                               rtol=1e-6)
    with pytest.raises(DataError, match="overruns"):
        ColdRanker.from_codewords([np.zeros((3, 2)), np.zeros((3, 2))], [1, 10], VOCAB)
    with pytest.raises(DataError, match="history_weight"):
        ColdRanker(np.zeros((4, 2), np.float32), history_weight=1.5)


def test_query_point_weights_beams_by_probability_and_blends_history():
    r = _ranker()
    beams = np.array([[[1, 6, 7], [2, 6, 7]]])
    near_x = r.queries(beams, np.array([[np.log(0.9), np.log(0.1)]]))
    assert near_x[0, 0] > near_x[0, 1] > 0
    dead = r.queries(beams, np.array([[0.0, -np.inf]]))  # a dead beam has no weight
    np.testing.assert_allclose(dead, [[1, 0, 0]], atol=1e-6)
    blended = _ranker(history_weight=0.5).queries(beams, np.array([[0.0, -np.inf]]), np.array([[3, 6, 7]]))
    np.testing.assert_allclose(blended, [[0, 0, 0]], atol=1e-6)  # history exactly opposite: they cancel
    no_history = _ranker(history_weight=0.5).queries(beams, np.array([[0.0, -np.inf]]), np.array([[-1, -1, -1]]))
    np.testing.assert_allclose(no_history, dead, atol=1e-6)


def test_top_cold_orders_nearest_first_in_chunks():
    r = _ranker()
    cold = np.array([[1, 4, 7], [2, 4, 7], [3, 4, 7], [1, 5, 7]])
    q = r.points(np.array([[1, 4, 7], [2, 6, 7], [3, 6, 7]]))
    best = top_cold(r, q, cold, take=2, chunk=2)
    assert best[0].tolist() == [0, 3] and best[1, 0] == 1 and best[2, 0] == 2
    assert top_cold(r, q, cold, take=4).shape == (3, 4)


@pytest.mark.parametrize("take", [1, 2, 3, 6])
def test_top_cold_breaks_ties_by_the_lower_item_id_wherever_the_products_lie(take):
    """Products at one SID point (dedup tokens name no codeword) tie exactly: the lower id wins, both inside
    the chosen ``take`` and at its edge, whatever the rows' order."""
    r = _ranker()
    cold = np.array([[2, 4, 8], [1, 5, 7], [2, 4, 7], [1, 4, 7], [2, 4, 8], [1, 4, 8]])
    ids = np.array([50, 40, 30, 20, 10, 60])
    q = r.points(np.array([[2, 4, 7], [1, 4, 7]]))
    want = [[10, 30, 50, 20, 60, 40], [20, 60, 40, 10, 30, 50]]  # three tie at y + z, two at x + z
    for perm in (np.arange(6), np.arange(6)[::-1], np.array([3, 0, 5, 1, 4, 2])):
        best = top_cold(r, q, cold[perm], take, cold_ids=ids[perm], chunk=1)
        assert ids[perm][best].tolist() == [w[:take] for w in want], perm


def test_point_mixing_gives_last_slot_to_the_nearest_new_product_the_retailer_stocks():
    ix, r = _index(), _ranker()
    beams, scores = np.array([[[2, 4, 7], [1, 4, 7]]]), np.array([[-0.1, -2.0]])  # mostly "y"
    mixed = ix.candidates(beams, scores, k=3, cold_share=0.3, cold_ranker=r)
    assert mixed.item_ids[0].tolist()[:2] == [11, 10] and mixed.item_ids[0, 2] == 21  # 21 = [2, 5]: "y"
    assert not mixed.from_beam[0, 2] and mixed.scores[0, 2] < mixed.scores[0, 1]
    skip = ix.candidates(beams, scores, k=3, cold_share=0.3, cold_ranker=r, exclude_items=[[21]])
    assert skip.item_ids[0, 2] == 23  # the next nearest: 23 = [1, 4] along x, its z on the query's side
    # the history's latest item pulls the point towards -x: product 22, which retailer 1 does not stock
    pulled = _ranker(history_weight=0.9)
    last = np.array([[3, 4, 7]])
    assert ix.candidates(beams, scores, k=3, cold_share=0.3, cold_ranker=pulled, last_rows=last).item_ids[0, 2] == 22
    assert ix.candidates(beams, scores, k=3, retailer_id=1, cold_share=0.3, cold_ranker=pulled,
                         last_rows=last).item_ids[0, 2] == 21  # 20 = [1, 5] points away from -x
    two = ix.candidates(np.repeat(beams, 2, 0), np.repeat(scores, 2, 0), k=3, retailer_id=[None, 1],
                        cold_share=0.3, cold_ranker=pulled, last_rows=np.array([[3, 4, 7], [3, 4, 7]]))
    assert two.item_ids[0, 2] == 22 and two.item_ids[1, 2] == 21


def test_a_runs_open_slot_goes_to_the_new_product_nearest_the_history(tiny_run):
    """A run's retriever builds its ranker from the run's codebook; in its lists of 5 (one slot open to new
    products) the first four slots are the decoder's, as without mixing, and the last goes to the new product
    whose SID point lies nearest the query's. With the query's point all history (``history_weight`` 1), a
    new product bought last gets the slot itself (or the lower id of two at its point: the tiny run has one
    such pair); with the history excluded, the new product nearest it does, unless the listed product lies
    nearer still."""
    import dataclasses

    from genrec.retriever import Retriever

    root, _ = tiny_run
    r = Retriever.from_run(root / "run")
    codes = r.tokenizer.level_range(0)
    assert r.cold_ranker.token_vectors[codes[0]:codes[1]].any()
    assert not r.cold_ranker.token_vectors[: codes[0]].any()  # special tokens name no codeword
    assert r.cold_share == 0.2
    r.cold_ranker = dataclasses.replace(r.cold_ranker, history_weight=1.0)
    plain = Retriever.from_run(root / "run", cold_share=0.0)
    forest = r.index.stock_forest()
    new = np.unique(forest.item_ids[forest.cold_positions])
    points = r.cold_ranker.points(r.index.rows_of(new)[0])
    checked = 0
    for h, point in zip(new.tolist(), points):
        for exclude in (False, True):
            listed = plain.retrieve_arrays([[h]], k=5, exclude_history=exclude).item_ids[0].tolist()
            got = r.retrieve_arrays([[h]], k=5, exclude_history=exclude)
            assert got.item_ids[0, :4].tolist() == listed[:4]
            # the oracle: new products by nearness to the history's point, ties to the lower id
            near = points @ point
            ranked = [int(new[i]) for i in np.lexsort((new, -near)) if new[i] not in listed[:4]
                      and not (exclude and new[i] == h)]
            if not exclude:  # nearest: the product itself, or a lower id at its point (the same codewords)
                assert ranked[0] == h or (ranked[0] < h and near[new == ranked[0]][0] == near[new == h][0])
            listed_near = r.cold_ranker.points(r.index.rows_of([listed[4]])[0])[0] @ point
            best = ranked[0]
            if near[new == best][0] > listed_near:
                assert got.item_ids[0, 4] == best and not got.from_beam[0, 4], (h, exclude, got.item_ids)
                checked += 1
            else:
                assert got.item_ids[0, 4] == listed[4]
    assert checked >= new.size  # every new product took the open slot after itself at least


def test_an_open_slot_keeps_its_listed_product_when_no_new_one_lies_nearer():
    ix, r = _index(), _ranker()
    beams, scores = np.array([[[2, 4, 7]]]), np.array([[-0.1]])
    plain = ix.candidates(beams, scores, k=2)
    assert plain.item_ids[0].tolist() == [11, 21]  # 21 fills under the shared first codeword
    mixed = ix.candidates(beams, scores, k=2, cold_share=0.5, cold_ranker=r)
    assert mixed.item_ids[0].tolist() == [11, 21]  # no other new product is nearer "y" than 21
    far = ix.candidates(beams, scores, k=2, cold_share=0.5, cold_ranker=r, exclude_items=[[21]])
    assert far.item_ids[0, 1] != 21 and far.item_ids[0, 0] == 11


def test_nearest_of_keeps_listed_on_ties_and_never_keeps_an_empty_slot():
    from index.candidates import _nearest_of

    kept, chosen = _nearest_of(np.array([0.9, 0.2]), np.array([0.5, 0.1]))
    assert kept.tolist() == [0] and chosen.tolist() == [0]
    kept, chosen = _nearest_of(np.array([0.5, 0.4]), np.array([0.4]))
    assert kept.tolist() == [0, 1] and chosen.tolist() == []  # a tie goes to the listed product
    kept, chosen = _nearest_of(np.array([-np.inf, -np.inf]), np.array([0.3]))
    assert kept.tolist() == [] and chosen.tolist() == [0]


def test_cold_start_section_of_the_run_config_sets_the_retrievers_share(tiny_run, tmp_path):
    import copy
    import shutil

    from genrec.retriever import Retriever
    from genrec.run.config import load_run_config
    from semid.config import ConfigError, save_yaml

    root, shared_cfg = tiny_run
    cfg = copy.deepcopy(shared_cfg)  # the fixture's config serves other tests too
    assert Retriever.from_run(root / "run").cold_share == cfg.cold_start.share == 0.2
    run = tmp_path / "run"
    shutil.copytree(root / "run", run)
    cfg.cold_start.share, cfg.cold_start.history_weight = 0.0, 0.5
    save_yaml(cfg, run / "config.yaml")
    r = Retriever.from_run(run)
    assert r.cold_share == 0.0 and r.cold_ranker.history_weight == 0.5
    assert Retriever.from_run(run, cold_share=0.1).cold_share == 0.1  # an explicit share wins
    (tmp_path / "bad.yaml").write_text("cold_start:\n  share: 1.5\n")
    with pytest.raises(ConfigError, match="cold_start.share"):
        load_run_config(tmp_path / "bad.yaml")


def test_established_products_stay_out_of_the_cold_pool_and_the_flag_survives_a_save(tmp_path):
    """A product listed before the log began with no interactions is unpopular, not new: never mixed in."""
    ix, r = _index(), _ranker()
    beams, scores = np.array([[[2, 4, 7], [1, 4, 7]]]), np.array([[-0.1, -2.0]])
    assert ix.candidates(beams, scores, k=3, cold_share=0.3, cold_ranker=r).item_ids[0, 2] == 21
    ix.add([21], established=True)
    assert ix.candidates(beams, scores, k=3, cold_share=0.3, cold_ranker=r).item_ids[0, 2] != 21
    ix.save(tmp_path / "ix")
    again = RetailerIndex.load(tmp_path / "ix")
    assert again.candidates(beams, scores, k=3, cold_share=0.3, cold_ranker=r).item_ids[0, 2] != 21
    ix.add([20, 22, 23], established=True)  # nothing new left: the list is as without mixing
    np.testing.assert_array_equal(ix.candidates(beams, scores, k=3, cold_share=0.3, cold_ranker=r).item_ids,
                                  ix.candidates(beams, scores, k=3).item_ids)
    with pytest.raises(DataError, match="established"):
        ix.add([20, 21], established=[True])


def test_an_index_saved_before_the_established_column_loads_with_every_product_unestablished(tmp_path):
    import pyarrow.parquet as pq

    ix = _index()
    ix.add([20], established=True)
    ix.save(tmp_path / "ix")
    items = pq.read_table(tmp_path / "ix" / "items.parquet")
    pq.write_table(items.drop_columns(["established"]), tmp_path / "ix" / "items.parquet")
    beams, scores = np.array([[[1, 4, 7]]]), np.array([[-0.1]])
    old = RetailerIndex.load(tmp_path / "ix").candidates(beams, scores, k=3, cold_share=0.3, cold_ranker=_ranker())
    assert old.item_ids[0, 2] == 20  # nearest to "x", new again without the flag
