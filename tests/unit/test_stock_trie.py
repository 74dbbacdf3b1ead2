"""The index at catalog scale: stock held as a bit per (retailer, product) (``index.stock``) and decoding over
one catalog trie with a bit per (retailer, node) (``index.stock_trie``), checked against the pair forest
(``index.forest``) they stand in for, on generated catalogs: the same allowed tokens at every node, the same
beams, the same stock through updates and save/load."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from genrec.model.beam_search import constrained_beam_search
from index.retailer_index import RetailerIndex
from index.stock import StockBits
from index.stock_trie import StockTrie

VOCAB = 40

pytestmark = pytest.mark.usefixtures("one_thread")


def _catalog(n: int = 300, retailers: int = 4, seed: int = 0, share: float = 0.35) -> RetailerIndex:
    """Products with 3 codes + a dedup token (shared codes get dedup 1, 2, ...), retailers 10, 20, ... each
    stocking a random share, and retailer 99 that once stocked one product, since removed (an empty slot)."""
    rng = np.random.default_rng(seed)
    codes = np.stack([rng.integers(5, 9, n), rng.integers(9, 17, n), rng.integers(17, 25, n)], axis=1)
    order = np.lexsort(codes.T[::-1])
    codes = codes[order]
    first = np.r_[True, (codes[1:] != codes[:-1]).any(axis=1)]
    idx = np.arange(n)
    dedup = idx - np.maximum.accumulate(np.where(first, idx, 0))
    rows = np.column_stack([codes, 25 + dedup])
    ids = rng.permutation(np.arange(100, 100 + 3 * n))[:n]
    ix = RetailerIndex(tokens_per_item=4, vocab_size=VOCAB, codebook_version="cb")
    ix.add(ids, rows, popularity=rng.random(n))
    for r in range(retailers):
        ix.add(ids[rng.random(n) < share], retailer_ids=10 * (r + 1))
    ix.add(ids[:1], retailer_ids=99)
    ix.remove(ids[:1], retailer_id=99)
    return ix


def _model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    return LlamaForCausalLM(cfg).eval()


def _prefixes(rows: np.ndarray, length: int) -> np.ndarray:
    return np.unique(rows[:, :length], axis=0)


@pytest.mark.parametrize("pad_budget", [1 << 24, 0])  # padded child tables, and the CSR path
def test_every_node_allows_exactly_the_tokens_the_pair_forest_allows(pad_budget):
    ix = _catalog()
    forest = ix.stock_forest()
    trie = StockTrie.build(ix._rows, ix._stock, ix.retailers, VOCAB, pad_budget=pad_budget)
    catalog_rows = ix._rows
    slots = [None, *ix.retailers.tolist()]
    seen_disallowed = 0
    for slot, retailer in enumerate(slots):
        held = catalog_rows if retailer is None else ix.rows_of(ix.stocked(retailer))[0]
        for length in range(ix.tokens_per_item):
            # every prefix the catalog has, stocked here or not, plus one that exists nowhere
            prefixes = np.vstack([_prefixes(catalog_rows, length), np.full((1, length), 30)]) if length \
                else np.zeros((1, 0), np.int64)
            want_nodes = forest.trie.path(prefixes, np.full(len(prefixes), forest.slot_nodes[slot]), 1)[:, -1]
            got_nodes = trie.path(prefixes, trie.start(np.full(len(prefixes), slot)), 1)[:, -1]
            assert ((want_nodes >= 0) == (got_nodes >= 0)).all()
            want = forest.trie.disallowed_mask(1 + length, want_nodes, VOCAB)
            got = trie.disallowed_mask(1 + length, got_nodes, VOCAB)
            assert torch.equal(got, want), (slot, length)
            seen_disallowed += int((~want).sum())
            # what is allowed is exactly the next tokens of the rows this slot holds under the prefix
            for i, p in enumerate(prefixes):
                under = held[(held[:, :length] == p).all(axis=1)] if length else held
                assert set(torch.nonzero(~got[i]).flatten().tolist()) == set(under[:, length].tolist())
    assert seen_disallowed > 0
    # the empty slot (retailer 99) starts dead, as in the forest
    assert int(trie.start(np.array([slots.index(99)]))[0]) == -1 == int(forest.slot_nodes[slots.index(99)])


def test_beam_search_gives_the_same_beams_on_the_stock_trie_as_on_the_pair_forest():
    ix = _catalog()
    model = _model()
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(5, VOCAB, (12, 9), generator=gen)
    attn = torch.ones_like(ids)
    retailers = [None, 10, 20, 30, 40, 99, 10, 20, None, 40, 30, 20]
    exclude = [ix.rows_of(ix.stocked(r)[:3] if r is not None else ix.item_ids[:3])[0] for r in retailers]
    forest = ix.stock_forest()
    slots = ix.slots_for(retailers)
    start = ix.start_for(retailers)
    assert isinstance(start.trie, StockTrie)
    for width in (5, 40):
        want = constrained_beam_search(model, ids, attn, forest.trie, width, width, exclude=exclude,
                                       start=torch.from_numpy(forest.slot_nodes[slots]), start_depth=1)
        got = constrained_beam_search(model, ids, attn, start.trie, width, width, exclude=exclude,
                                      start=start.nodes, start_depth=start.depth)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    rows = got[0].numpy()
    for q, r in enumerate(retailers):  # every live beam is stocked there and not excluded
        live = rows[q][rows[q, :, 0] >= 0]
        held = {tuple(x) for x in ix.rows_of(ix.stocked(r) if r is not None else ix.item_ids)[0].tolist()}
        assert {tuple(x) for x in live.tolist()} <= held - {tuple(x) for x in exclude[q].tolist()}
        assert (r == 99) == (live.size == 0)


def test_decoded_items_name_the_stocked_most_popular_product():
    ix = RetailerIndex(tokens_per_item=3, vocab_size=VOCAB)
    rows = np.array([[5, 7, 1], [5, 7, 1], [5, 8, 1], [6, 1, 1]])  # 10 and 11 share a row
    ix.add([10, 11, 12, 13], rows, popularity=[1.0, 5.0, 2.0, 3.0])
    ix.add([10, 12, 13], retailer_ids=[1, 1, 2])
    decoded = np.array([[[5, 7, 1], [5, 8, 1], [6, 1, 1]], [[5, 7, 1], [-1, -1, -1], [9, 9, 9]]])
    assert ix.decoded_items(decoded, [None, 1]).tolist() == [[11, 12, 13], [10, -1, -1]]
    assert ix.decoded_items(decoded[:1], 2).tolist() == [[-1, -1, 13]]


def test_stock_bits_follow_adds_removals_and_a_growing_catalog_like_pairs():
    rng = np.random.default_rng(5)
    ix = RetailerIndex(tokens_per_item=2, vocab_size=VOCAB)
    want: set[tuple[int, int]] = set()
    catalog: dict[int, list[int]] = {}
    for step in range(6):  # new products land between old ones (ids interleave), stock comes and goes
        new = rng.choice(np.arange(1000), 40, replace=False)
        new = new[~np.isin(new, list(catalog))]
        rows = rng.integers(5, VOCAB, (new.size, 2))
        ix.add(new, rows)
        catalog.update({int(i): r.tolist() for i, r in zip(new, rows)})
        r = int(rng.integers(0, 4))
        pick = rng.choice(sorted(catalog), 15, replace=False)
        ix.add(pick, retailer_ids=r)
        want |= {(r, int(i)) for i in pick}
        gone = rng.choice(sorted(catalog), 3, replace=False)
        assert ix.remove(gone[:1], retailer_id=r) == int((r, int(gone[0])) in want)
        want.discard((r, int(gone[0])))
        ix.remove(gone[1:])  # out of the catalog with all their stock
        want = {(a, b) for a, b in want if b not in gone[1:]}
        for g in gone[1:]:
            catalog.pop(int(g))
    assert {tuple(p) for p in ix._stock_pairs().tolist()} == want
    for r in ix.retailers.tolist():
        assert ix.stocked(r).tolist() == sorted(b for a, b in want if a == r)
    assert ix._stock.n_pairs == len(want)


def test_save_and_load_keep_the_stock_and_the_file_format(tmp_path):
    import pyarrow.parquet as pq

    ix = _catalog(n=120)
    ix.save(tmp_path / "ix")
    table = pq.read_table(tmp_path / "ix" / "stock.parquet")
    assert table.column_names == ["retailer_id", "item_id"]
    pairs = np.stack([table.column(0).to_numpy(), table.column(1).to_numpy()], axis=1)
    assert (np.diff(pairs[:, 0]) >= 0).all() and len(pairs) == ix._stock.n_pairs
    back = RetailerIndex.load(tmp_path / "ix")
    assert back.retailers.tolist() == ix.retailers.tolist()  # 99 too, though it stocks nothing now
    for r in ix.retailers.tolist():
        assert back.stocked(r).tolist() == ix.stocked(r).tolist()


def test_load_reads_the_stock_a_chunk_at_a_time(tmp_path, monkeypatch):
    from index import persistence, retailer_index

    ix = _catalog(n=120)
    ix.save(tmp_path / "ix")
    sizes = []

    def small_chunks(path, batch_rows=1 << 23):
        for pairs in persistence.iter_stock(path, batch_rows=7):
            sizes.append(len(pairs))
            yield pairs

    monkeypatch.setattr(retailer_index, "iter_stock", small_chunks)
    back = RetailerIndex.load(tmp_path / "ix")
    assert max(sizes) <= 7 and sum(sizes) == ix._stock.n_pairs
    for r in ix.retailers.tolist():
        assert back.stocked(r).tolist() == ix.stocked(r).tolist()


def test_stock_trie_memory_does_not_grow_with_stock_pairs():
    """The trie is the catalog's; stock adds a bit per (slot, node): tripling each retailer's stock leaves
    the stock trie's size alone, while the pair forest grows with every pair."""
    sparse, dense = _catalog(n=400, share=0.1), _catalog(n=400, share=0.9)
    assert sparse.stock_trie().nbytes == dense.stock_trie().nbytes
    assert dense.stock_forest().trie.n_leaves > 3 * sparse.stock_forest().trie.n_leaves
    bits = StockBits(10)
    bits.add(np.array([3, 1, 3]), np.array([9, 0, 2]))
    assert bits.retailers.tolist() == [1, 3] and bits.bits.shape == (2, 2)
    assert bits.has(np.array([3, 3, 1, 2]), np.array([9, 8, 0, 0])).tolist() == [True, False, True, False]
