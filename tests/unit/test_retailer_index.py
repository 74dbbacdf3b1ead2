"""The retailer-partitioned index: ranking within an SID, per-retailer tries that hold only what the retailer
stocks (also through beam search), updates that take effect without retraining, candidates with
nearest-prefix filling and exclusion, save/load (Instacart's real taxonomy as SIDs:
``tests/integration/test_instacart.py``)."""
from __future__ import annotations


import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from genrec.model.beam_search import constrained_beam_search
from index.retailer_index import RetailerIndex
from semid.common import DataError

VOCAB = 48


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models, one torch thread


def _index() -> RetailerIndex:
    """Six products; 10 and 14 share an SID; retailer 1 stocks 10, 12, 14; retailer 2 stocks 11, 13."""
    ix = RetailerIndex(tokens_per_item=3, vocab_size=VOCAB, codebook_version="cb-1")
    rows = np.array([[5, 7, 1], [5, 7, 2], [5, 8, 1], [6, 1, 1], [5, 7, 1], [6, 2, 1]])
    ix.add([10, 11, 12, 13, 14, 15], rows, popularity=[1, 2, 3, 4, 5, 0],
           sids=["5_7", "5_7_1", "5_8", "6_1", "5_7", "6_2"])
    ix.add([10, 12, 14, 11, 13], retailer_ids=[1, 1, 1, 2, 2])
    return ix


def _random_index(n: int = 200, retailers: int = 3, seed: int = 0) -> tuple[RetailerIndex, np.ndarray]:
    rng = np.random.default_rng(seed)
    rows = np.unique(np.stack([rng.integers(5, 13, 3 * n), rng.integers(13, 21, 3 * n),
                               rng.integers(21, 29, 3 * n), np.full(3 * n, 29)], axis=1), axis=0)[:n]
    ids = np.arange(1000, 1000 + len(rows))
    ix = RetailerIndex(vocab_size=VOCAB, codebook_version="cb-r")
    ix.add(ids, rows, popularity=rng.random(len(ids)))
    for r in range(retailers):
        ix.add(ids[rng.random(len(ids)) < 0.4], retailer_ids=r)
    return ix, rows


def _model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    return LlamaForCausalLM(cfg).eval()


def test_lookup_ranks_products_within_an_sid_by_popularity():
    ix = _index()
    got = ix.lookup(np.array([[5, 7, 1], [6, 1, 1], [9, 9, 9]]))
    assert [g.tolist() for g in got] == [[14, 10], [13], []]
    assert [g.tolist() for g in ix.lookup(["5_7", "6_2", "nope"])] == [[14, 10], [15], []]
    ix.add([10], popularity=[9])  # popularity update re-ranks
    assert ix.lookup(np.array([[5, 7, 1]]))[0].tolist() == [10, 14]


def test_retailer_partition_holds_only_its_stock():
    ix = _index()
    assert ix.retailers.tolist() == [1, 2]
    assert ix.stocked(1).tolist() == [10, 12, 14]
    assert ix.trie_for(1).n_leaves == 2 and ix.trie_for(2).n_leaves == 2 and ix.trie_for().n_leaves == 5
    assert ix.lookup(np.array([[5, 7, 1], [6, 1, 1]]), retailer_id=1)[1].tolist() == []
    assert ix.lookup(np.array([[5, 7, 1], [6, 1, 1]]), retailer_id=2)[0].tolist() == []
    with pytest.raises(DataError, match="unknown retailer 7"):
        ix.trie_for(7)


def test_without_stock_every_retailer_sees_everything():
    ix = RetailerIndex()
    ix.add([1, 2], np.array([[5, 6], [5, 7]]))
    assert ix.trie_for(42).n_leaves == 2 and ix.stocked(42).tolist() == [1, 2]


def test_beam_search_on_a_retailer_trie_returns_only_its_products():
    ix, _ = _random_index()
    model = _model()
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(5, VOCAB, (16, 10), generator=gen)
    attn = torch.ones_like(ids)
    for r in ix.retailers.tolist():
        rows, scores = constrained_beam_search(model, ids, attn, ix.trie_for(r), beam_width=6, num_return=6)
        cands = ix.candidates(rows, scores, k=10, retailer_id=r)
        stocked = set(ix.stocked(r).tolist())
        assert (cands.item_ids >= 0).all()
        assert set(cands.item_ids.ravel().tolist()) <= stocked
        assert cands.from_beam[:, :6].all()  # SIDs are unique here: 6 beams give 6 products


def test_updates_take_effect_without_retraining():
    ix, rows = _random_index()
    model = _model()
    ids = torch.randint(5, VOCAB, (4, 10), generator=torch.Generator().manual_seed(2))
    attn = torch.ones_like(ids)
    before, _ = constrained_beam_search(model, ids, attn, ix.trie_for(0), beam_width=4, num_return=1)
    top = before[:, 0].numpy()
    winners = np.unique(np.concatenate([g for g in ix.lookup(top, retailer_id=0)]))
    assert ix.remove(winners, retailer_id=0) == winners.size  # out of stock at retailer 0 only
    after, _ = constrained_beam_search(model, ids, attn, ix.trie_for(0), beam_width=4, num_return=1)
    assert not (after[:, None, 0, :] == torch.as_tensor(top)[None]).all(-1).any()
    assert set(winners.tolist()) <= set(ix.item_ids.tolist())  # still in the catalog
    # a new product (its cold-start SID) becomes decodable at once; here it is the only one stocked
    ix.add([5], np.array([[12, 20, 28, 30]]), retailer_ids=9)
    rows9, _ = constrained_beam_search(model, ids, attn, ix.trie_for(9), beam_width=2, num_return=1)
    assert (rows9[:, 0] == torch.tensor([12, 20, 28, 30])).all()
    assert ix.remove([5]) == 1 and ix.trie_for(9).n_leaves == 0


def test_candidates_rank_fill_and_exclude():
    ix = _index()
    decoded = np.array([[[5, 7, 1], [6, 1, 1]], [[-1, -1, -1], [5, 7, 2]]])
    scores = np.array([[-1.0, -2.0], [-np.inf, -0.5]])
    c = ix.candidates(decoded, scores, k=5, exclude_items=[[13], None])
    # query 0: the SID 5_7_1 holds 14 then 10 (popularity); 13 excluded; fill: 11 shares "5 7", then "5": 12
    assert c.item_ids[0].tolist() == [14, 10, 11, 12, 15]
    assert c.from_beam[0].tolist() == [True, True, False, False, False]
    assert c.scores[0, :2].tolist() == [-1.0, -1.0]
    assert (np.diff(c.scores[0]) <= 0).all() and c.scores[0, 2] < -1.0
    assert c.sids[0, 0] == "5_7" and c.sids[0, 2] == "5_7_1"
    # query 1: a dead beam is skipped
    assert c.item_ids[1].tolist()[:3] == [11, 14, 10] and c.from_beam[1].tolist()[:1] == [True]


def test_candidates_pad_when_the_retailer_has_fewer_than_k():
    ix = _index()
    c = ix.candidates(np.array([[[5, 7, 1]]]), np.array([[-0.3]]), k=5, retailer_id=1)
    assert c.item_ids[0].tolist() == [14, 10, 12, -1, -1]
    assert np.isneginf(c.scores[0, 3:]).all() and c.sids[0, 4] == ""


def test_candidates_of_invalid_unconstrained_rows_fill_by_prefix():
    ix = _index()
    c = ix.candidates(np.array([[[6, 2, 9]]]), np.array([[-0.1]]), k=2)
    assert c.item_ids[0].tolist() == [15, 13] and not c.from_beam.any()


def test_cold_share_gives_last_slots_to_new_products_under_decoded_prefixes():
    """Product 15 has no training interactions (popularity 0): the decoder never generates its SID, but a
    beam under its prefix [6] opens the last slot to it (TIGER's cold-start mixing)."""
    ix = _index()
    beams, scores = np.array([[[6, 1, 1], [5, 7, 1]]]), np.array([[-0.1, -0.5]])
    plain = ix.candidates(beams, scores, k=3)
    assert plain.item_ids[0].tolist() == [13, 14, 10]
    mixed = ix.candidates(beams, scores, k=3, cold_share=0.3)
    assert mixed.item_ids[0].tolist() == [13, 14, 15] and mixed.sids[0, 2] == "6_2"
    assert mixed.scores[0, 2] < mixed.scores[0, 1] and not mixed.from_beam[0, 2]
    assert ix.candidates(beams, scores, k=3, cold_share=0.3, exclude_items=[[15]]).item_ids[0].tolist() == [13, 14, 10]
    assert ix.candidates(beams, scores, k=3, retailer_id=1, cold_share=0.3).item_ids[0].tolist() == \
        ix.candidates(beams, scores, k=3, retailer_id=1).item_ids[0].tolist()  # retailer 1 does not stock 15
    listed = ix.candidates(np.array([[[6, 2, 1], [5, 7, 1]]]), scores, k=3, cold_share=0.3)
    assert listed.item_ids[0].tolist() == [15, 14, 10]  # decoded already: no second copy, nothing displaced
    with pytest.raises(DataError, match="cold_share must lie in"):
        ix.candidates(beams, scores, k=3, cold_share=1.0)


def test_save_load_round_trip(tmp_path):
    ix, rows = _random_index()
    ix.remove(ix.stocked(1)[:5], retailer_id=1)
    ix.save(tmp_path / "index")
    back = RetailerIndex.load(tmp_path / "index", codebook_version="cb-r")
    assert back.codebook_version == "cb-r" and back.tokens_per_item == 4 and back.vocab_size == VOCAB
    assert np.array_equal(back.item_ids, ix.item_ids)
    for r in [None, *ix.retailers.tolist()]:
        assert np.array_equal(back.stocked(r), ix.stocked(r))
        assert torch.equal(back.trie_for(r).leaf_rows, ix.trie_for(r).leaf_rows)
        a, b = ix.lookup(rows[:50], retailer_id=r), back.lookup(rows[:50], retailer_id=r)
        assert all(np.array_equal(x, y) for x, y in zip(a, b))
    with pytest.raises(DataError, match="codebook version 'cb-r', not 'other'"):
        RetailerIndex.load(tmp_path / "index", codebook_version="other")


def test_load_errors(tmp_path):
    with pytest.raises(DataError, match="index metadata not found"):
        RetailerIndex.load(tmp_path)
    (tmp_path / "index.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        RetailerIndex.load(tmp_path)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda ix: ix.add([99]), "token_rows are required"),
        (lambda ix: ix.add([1], np.array([[5, 7]])), "rows have 2 tokens"),
        (lambda ix: ix.add([1], np.array([[5, 7, 99]])), "outside the vocabulary"),
        (lambda ix: ix.add([1, 1], np.array([[5, 7, 1], [5, 7, 2]])), "two different token rows"),
        (lambda ix: ix.add([10, 11], retailer_ids=[1, 2, 3]), "one value per item"),
        (lambda ix: ix.add([77], retailer_ids=1), "token_rows are required"),
        (lambda ix: ix.lookup(np.array([[5, 7]])), "expected token rows"),
        (lambda ix: ix.candidates(np.zeros((1, 2, 3)), np.zeros((1, 3)), k=2), "expected decoded rows"),
        (lambda ix: ix.candidates(np.zeros((1, 2, 3)), np.zeros((1, 2)), k=0), "k must be >= 1"),
    ],
)
def test_bad_input(call, message):
    with pytest.raises(DataError, match=message):
        call(_index())


# ----- one search for a batch of mixed retailers, through the trie forest -------------------------------------


def _prompts(batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(5, VOCAB, (batch, 10), generator=torch.Generator().manual_seed(seed))
    return ids, torch.ones_like(ids)


def _mixed_search(ix: RetailerIndex, model, ids, attn, retailers: list, width: int = 6):
    start = ix.start_for(retailers)
    return constrained_beam_search(model, ids, attn, start.trie, beam_width=width, num_return=width,
                                   start=start.nodes, start_depth=start.depth)


def test_a_mixed_retailer_batch_equals_each_retailer_decoded_alone():
    ix, rows = _random_index(retailers=4, seed=3)
    ix.remove(ix.stocked(3), retailer_id=3)  # a retailer that stocks nothing any more
    model = _model()
    ids, attn = _prompts(14, seed=4)
    retailers = [None, 0, 1, 2, 3, 0, 1, 2, None, 0, 1, 2, 0, 1]
    rng = np.random.default_rng(5)
    exclude = [ix.item_ids[rng.integers(0, len(ix), 30)] if b % 2 else None for b in range(14)]
    rows, scores = _mixed_search(ix, model, ids, attn, retailers)
    mixed = ix.candidates(rows, scores, k=10, retailer_id=retailers, exclude_items=exclude)
    for r in [None, 0, 1, 2, 3]:
        q = [b for b, x in enumerate(retailers) if x == r]
        alone_rows, alone_scores = constrained_beam_search(model, ids[q], attn[q], ix.trie_for(r), beam_width=6,
                                                           num_return=6)
        assert torch.equal(rows[q], alone_rows) and torch.allclose(scores[q], alone_scores, atol=1e-5)
        alone = ix.candidates(alone_rows, alone_scores, k=10, retailer_id=r, exclude_items=[exclude[b] for b in q])
        for name in ("item_ids", "sids", "from_beam"):
            assert np.array_equal(getattr(mixed, name)[q], getattr(alone, name)), (r, name)
        assert np.allclose(mixed.scores[q], alone.scores)
        live = torch.isfinite(scores[q])
        assert ix.trie_for(r).contains(rows[q][live]).all()  # every decoded SID is stocked: invalid rate 0
        assert set(mixed.item_ids[q].ravel().tolist()) - {-1} <= set(ix.stocked(r).tolist())
        for b in q:
            if exclude[b] is not None:
                assert not set(mixed.item_ids[b].tolist()) & set(exclude[b].tolist())
    assert torch.isinf(scores[4]).all() and (mixed.item_ids[4] == -1).all()  # retailer 3: nothing to give
    assert (mixed.item_ids[[0, 1, 2, 3]] >= 0).all()


def test_the_forest_follows_stock_and_catalog_updates():
    ix, _ = _random_index(seed=6)
    model = _model()
    ids, attn = _prompts(4, seed=7)
    retailers = [0, 1, 0, 1]
    before, _ = _mixed_search(ix, model, ids, attn, retailers, width=4)
    top0 = before[[0, 2], 0].numpy()
    winners = np.unique(np.concatenate(ix.lookup(top0, retailer_id=0)))
    ix.remove(winners, retailer_id=0)  # out of stock at retailer 0 only
    after, _ = _mixed_search(ix, model, ids, attn, retailers, width=4)
    assert not (after[[0, 2]][:, :, None, :] == torch.as_tensor(top0)[None, None]).all(-1).any()
    assert torch.equal(after[[1, 3]], before[[1, 3]])  # retailer 1 untouched
    ix.add([5], np.array([[12, 20, 28, 30]]), retailer_ids=9)  # a new product at a new retailer
    rows, _ = _mixed_search(ix, model, ids, attn, [9, 0, 9, 1], width=2)
    assert (rows[[0, 2], 0] == torch.tensor([12, 20, 28, 30])).all() and (rows[[0, 2], 1] == -1).all()
    c = ix.candidates(rows, torch.zeros(4, 2), k=3, retailer_id=[9, 0, 9, 1])
    assert c.item_ids[0].tolist() == [5, -1, -1] and 5 not in c.item_ids[[1, 3]]
    assert ix.remove([5]) == 1
    rows, _ = _mixed_search(ix, model, ids, attn, [9, 0, 9, 1], width=2)
    assert (rows[[0, 2]] == -1).all()


def test_more_retailers_than_tokens_in_one_batch():
    ix, _ = _random_index(retailers=70, seed=8)  # 70 slots + the catalog: more than the 48 token ids
    model = _model()
    ids, attn = _prompts(8, seed=9)
    retailers = [0, 69, None, 35, 12, 69, 1, 2]
    rows, scores = _mixed_search(ix, model, ids, attn, retailers, width=3)
    for b, r in enumerate(retailers):
        assert ix.trie_for(r).contains(rows[b]).all()


def test_per_query_retailers_in_lookup_and_candidates_and_their_errors():
    ix = _index()
    got = ix.lookup(np.array([[5, 7, 1], [5, 7, 1], [6, 1, 1]]), retailer_id=[1, 2, None])
    assert [g.tolist() for g in got] == [[14, 10], [], [13]]
    decoded = np.array([[[5, 7, 1]], [[5, 7, 1]]])
    c = ix.candidates(decoded, np.array([[-0.3], [-0.3]]), k=3, retailer_id=[1, 2])
    assert c.item_ids[0].tolist() == [14, 10, 12] and c.item_ids[1].tolist() == [11, 13, -1]
    with pytest.raises(DataError, match="unknown retailer 7"):
        ix.start_for([1, 7])
    with pytest.raises(DataError, match="3 retailer ids for 2 queries"):
        ix.candidates(decoded, np.array([[-0.3], [-0.3]]), k=3, retailer_id=[1, 2, 1])
    with pytest.raises(DataError, match="one retailer id per query"):
        ix.start_for(1)
